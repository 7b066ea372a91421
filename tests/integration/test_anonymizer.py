"""ingest-anonymizer against the real broker and Redis: nothing personal leaves, nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from bulwark.bus.client import kafka_client_config
from bulwark.bus.reader import read_topic
from bulwark.crypto import FieldCipher, load_ring
from bulwark.crypto.keys import RING_DLQ, RING_FIELD
from bulwark.crypto.subjects import SubjectCipher, SubjectForgottenError, SubjectKeyStore
from bulwark.events import Envelope
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import PERSONAL_FIELDS, ReferenceGenerator
from bulwark.testing.services import ServiceProcess, collect, distinct
from bulwark.testing.stack import TestStack, topic_env

pytestmark = pytest.mark.integration
SERVICE = "ingest-anonymizer"
MODULE = "services.ingest_anonymizer"


class Anon:
    """One test's anonymizer wiring: private topics and Redis prefix."""

    def __init__(self, stack: TestStack, logs: Path, **env: str) -> None:
        self.stack = stack
        self.logs = logs
        self.topics = stack.topics(partitions=4)
        self.prefix = "a" + uuid.uuid4().hex[:8]
        self.env = {**stack.env(), **topic_env(self.topics), "BULWARK_REDIS_PREFIX": self.prefix,
                    "BULWARK_BUS_GROUP_ID": stack.group("anon"), **env}
        self.settings = stack.settings(redis_prefix=self.prefix, **self.topics)
        self.producer = KafkaProducer(**kafka_client_config(self.settings, client_id="test-producer"))

    def service(self, **env: str) -> ServiceProcess:
        return ServiceProcess(MODULE, SERVICE, {**self.env, **env}, self.logs)

    def send(self, events: list[Envelope]) -> None:
        for e in events:
            self.producer.send(self.settings.topics.events_raw, e.encode(), key=e.key)
        self.producer.flush()

    def send_raw(self, values: list[bytes]) -> None:
        for v in values:
            self.producer.send(self.settings.topics.events_raw, v, key=b"k")
        self.producer.flush()

    def clean(self, n: int, timeout_s: float = 90) -> list[Envelope]:
        return collect(self.settings, self.settings.topics.events_clean,
                       until=lambda ev: len(distinct(ev)) >= n, timeout_s=timeout_s)

    def raw_bytes(self, topic: str) -> bytes:
        return b"".join((r.value or b"") + (r.key or b"") + b"".join(v for _, v in r.headers)
                        for r, _ in read_topic(self.settings, topic, idle_ms=500))


def personal_values(events: list[Envelope]) -> set[str]:
    """Every personal value of the input events, in the forms that would identify someone."""
    values = set()
    for e in events:
        for field in PERSONAL_FIELDS:
            v = e.payload.get(field)
            if not isinstance(v, str) or field == "note":
                continue
            values.add(v)
            digits = "".join(ch for ch in v if ch.isdigit())
            if field in ("phone", "card_number", "national_id") and len(digits) >= 8:
                values.add(digits)
    return values


@pytest.fixture
def anon(stack: TestStack, logs_dir: Path) -> Anon:
    return Anon(stack, logs_dir)


def test_anonymizer_publishes_clean_events_with_no_personal_value_in_clear(anon: Anon) -> None:
    events = list(ReferenceGenerator(seed=21).events(300))
    anon.send(events)
    svc = anon.service().start()
    try:
        clean = list(distinct(anon.clean(300)).values())
        assert len(clean) == 300
        wire = anon.raw_bytes(anon.settings.topics.events_clean)
        leaks = [v for v in personal_values(events) if v.encode() in wire]
        assert leaks == []
        by_tx = {e.payload["transaction_id"]: e for e in clean}
        cipher = SubjectCipher(SubjectKeyStore(make_redis(anon.settings), RedisKeys(anon.prefix),
                                               load_ring(RING_FIELD, anon.stack.keys_dir), cache_size=0))
        for raw in events[:50]:
            out = by_tx[raw.payload["transaction_id"]]
            p = out.payload
            assert out.subject == p["customer_id"] and p["customer_id"].startswith("tok_")
            assert p["card_number"][-4:] == raw.payload["card_number"][-4:] and "*" in p["card_number"]
            assert p["birth_date"] == raw.payload["birth_date"][:4]
            assert p["ip_address"].endswith(("/24", "/48"))
            assert p["amount"] == raw.payload["amount"] and p.get("is_fraud") == raw.payload.get("is_fraud")
            # An authorized holder of the field key reads the encrypted fields back exactly.
            for field in ("name", "email", "national_id"):
                assert cipher.decrypt(out.subject, out.type, field, p[field]).decode() == raw.payload[field]
        # The same customer always gets the same token (joins and per-customer features still work).
        by_customer: dict[str, set[str]] = {}
        for raw in events:
            by_customer.setdefault(raw.payload["customer_id"], set()).add(by_tx[raw.payload["transaction_id"]].subject)
        assert all(len(tokens) == 1 for tokens in by_customer.values())
    finally:
        svc.terminate()
    log = svc.log_path.read_text(errors="replace")
    assert [v for v in personal_values(events) if v in log] == []


def test_anonymizer_bad_input_goes_to_dlq_with_reason_and_keeps_running(stack: TestStack, logs_dir: Path) -> None:
    anon = Anon(stack, logs_dir, BULWARK_MAX_EVENT_BYTES="4096")
    gen = ReferenceGenerator(seed=5)
    base = gen.event()
    secret = base.payload["email"]

    def variant(**changes: object) -> bytes:
        doc = orjson.loads(gen.event().encode())
        doc["payload"]["email"] = secret
        for path, value in changes.items():
            target = doc
            *parents, leaf = path.split("__")
            for p in parents:
                target = target[p]
            if value is None:
                target.pop(leaf)
            else:
                target[leaf] = value
        return orjson.dumps(doc)

    cases = {
        "NOT_JSON": f"not json {secret}".encode(),
        "NOT_UTF8": b"\xc3\x28 " + secret.encode(),
        "UNSUPPORTED_SCHEMA_VERSION": variant(schema_version=2),
        "SCHEMA_VIOLATION": variant(payload__amount=None),  # a required field missing
        "WRONG_TYPE": variant(payload__hour_of_day="noon"),
        "PAYLOAD_TOO_LARGE": variant(payload__note="x" * 5000),
        "UNKNOWN_EVENT_TYPE": variant(type="loyalty.signup"),
    }
    anon.send_raw(list(cases.values()))
    svc = anon.service().start()
    try:
        dead = collect(anon.settings, anon.settings.topics.events_dlq,
                       until=lambda ev: len(distinct(ev)) >= len(cases), timeout_s=60)
        letters = sorted(distinct(dead).values(), key=lambda d: d.payload["source"]["offset"])
        reasons = [d.payload["reason"] for d in letters]
        expected = [r if r != "WRONG_TYPE" else "SCHEMA_VIOLATION" for r in cases]
        assert sorted(reasons) == sorted(expected)
        # The DLQ is not a leak: no personal value, raw bytes sealed; the dlq key recovers them.
        dlq_wire = anon.raw_bytes(anon.settings.topics.events_dlq)
        assert secret.encode() not in dlq_wire
        from bulwark.bus.dlq import open_dead_letter

        cipher = FieldCipher(load_ring(RING_DLQ, stack.keys_dir))
        originals = {open_dead_letter(d.payload, cipher)[1] for d in letters}
        assert originals == set(cases.values())
        for d in letters:
            assert d.payload["service"] == SERVICE and d.payload["message"]
        # Still running, and a good event still goes through.
        anon.send([base])
        clean = anon.clean(1, timeout_s=30)
        assert [e.payload["transaction_id"] for e in clean] == [base.payload["transaction_id"]]
        assert svc.alive
    finally:
        svc.terminate()


def _outcome_ids(anon: Anon) -> tuple[set[str], set[str]]:
    """Source event ids seen in clean (by transaction id) and in the DLQ."""
    clean = {e.payload["transaction_id"] for _, e in read_topic(anon.settings, anon.settings.topics.events_clean)
             if e is not None}
    dead = {e.payload["event_id"] for _, e in read_topic(anon.settings, anon.settings.topics.events_dlq)
            if e is not None}
    return clean, dead


def test_anonymizer_killed_mid_stream_loses_nothing_and_duplicates_nothing_visible(anon: Anon) -> None:
    events = list(ReferenceGenerator(seed=8).events(3000))
    poison = [Envelope(type="payment.transaction", payload={"transaction_id": "bad"}, source="t", id=f"bad-{i}")
              for i in range(20)]
    anon.send(events[:1500] + poison + events[1500:])
    svc = anon.service(BULWARK_FAULT_DELAY_MS="1").start()
    while svc.alive and len(collect(anon.settings, anon.settings.topics.events_clean, until=lambda ev: True,
                                    timeout_s=1, idle_ms=200)) < 500:
        time.sleep(0.2)
    svc.kill()
    svc2 = anon.service().start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            clean, dead = _outcome_ids(anon)
            if len(clean) + len(dead) >= 3020:
                break
            time.sleep(1)
        clean, dead = _outcome_ids(anon)
        assert clean == {e.payload["transaction_id"] for e in events}
        assert dead == {p.id for p in poison}
        # Distinct event ids match the input count exactly (a de-duplicating consumer's view).
        clean_ids = distinct([e for _, e in read_topic(anon.settings, anon.settings.topics.events_clean) if e])
        assert len(clean_ids) == 3000
    finally:
        svc2.terminate()


@pytest.mark.slow
def test_anonymizer_two_instances_split_partitions_and_together_lose_and_double_nothing(anon: Anon) -> None:
    events = list(ReferenceGenerator(seed=9).events(2000))
    a = anon.service().start()
    b = anon.service().start()
    try:
        anon.send(events)
        clean = anon.clean(2000, timeout_s=120)
        assert {e.payload["transaction_id"] for e in clean} == {e.payload["transaction_id"] for e in events}
        assert len(distinct(clean)) == 2000
        handled = [int(make_redis(anon.settings).hget(RedisKeys(anon.prefix).heartbeat(SERVICE, s.instance),
                                                       "handled") or 0) for s in (a, b)]
        assert all(h > 0 for h in handled), f"both instances must take partitions: {handled}"
    finally:
        a.terminate()
        b.terminate()


def _cli(anon: Anon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **anon.env, "BULWARK_ACTOR": "test-operator"}
    return subprocess.run([sys.executable, "-m", "bulwark.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_reveal_is_audited_and_forget_makes_the_subject_undecryptable(anon: Anon) -> None:
    events = list(ReferenceGenerator(seed=33, customers=20).events(60))
    anon.send(events)
    svc = anon.service().start()
    try:
        clean = list(distinct(anon.clean(60)).values())
    finally:
        svc.terminate()
    target = clean[0]
    raw = next(e for e in events if e.payload["transaction_id"] == target.payload["transaction_id"])
    out = _cli(anon, "reveal", target.id, "email", "--reason", "chargeback dispute 4711", "--json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["value"] == raw.payload["email"]
    missing = _cli(anon, "reveal", target.id, "email")
    assert missing.returncode != 0 and "--reason" in missing.stderr

    forgot = _cli(anon, "forget", raw.payload["customer_id"], "--reason", "erasure request ER-1")
    assert forgot.returncode == 0, forgot.stderr
    again = _cli(anon, "reveal", target.id, "email", "--reason", "after erasure")
    assert again.returncode == 2 and "forgotten" in again.stderr
    # Every event of that subject, not just this one, is now unreadable; other subjects are not affected.
    store = SubjectKeyStore(make_redis(anon.settings), RedisKeys(anon.prefix), load_ring(RING_FIELD, anon.stack.keys_dir),
                            cache_size=0)
    cipher = SubjectCipher(store)
    for e in clean:
        if e.subject == target.subject:
            with pytest.raises(SubjectForgottenError):
                cipher.decrypt(e.subject, e.type, "name", e.payload["name"])
        else:
            assert cipher.decrypt(e.subject, e.type, "name", e.payload["name"])
    assert store.is_forgotten(target.subject)
    audit = [e.payload for _, e in read_topic(anon.settings, anon.settings.topics.audit) if e]
    # Audit records are keyed by target, so order holds per target only.
    assert sorted((a["action"], a["outcome"]) for a in audit) == [("forget", "allowed"), ("reveal", "allowed"),
                                                                  ("reveal", "failed")]
    assert all(a["actor"] == "test-operator" and a["reason"] for a in audit)
    assert raw.payload["email"] not in orjson.dumps(audit).decode()


def test_field_key_rotation_keeps_old_data_readable(anon: Anon, tmp_path: Path) -> None:
    import shutil

    from bulwark.crypto.keyset import rotate

    keys = tmp_path / "keys"
    shutil.copytree(anon.stack.keys_dir, keys)
    first = list(ReferenceGenerator(seed=41, customers=10).events(20))
    anon.send(first)
    svc = anon.service(BULWARK_KEYS_DIR=str(keys)).start()
    anon.clean(20)
    svc.terminate()
    new_kid = rotate(keys, "field")
    store = SubjectKeyStore(make_redis(anon.settings), RedisKeys(anon.prefix), load_ring(RING_FIELD, keys), cache_size=0)
    moved = store.rewrap_all()
    assert moved == len({e.payload["customer_id"] for e in first})
    stored = [make_redis(anon.settings).get(k) for k in make_redis(anon.settings).scan_iter(
        match=RedisKeys(anon.prefix).subject_key("*"))]
    assert stored and all(v.startswith(new_kid.encode() + b":") for v in stored)
    cipher = SubjectCipher(store)
    for _, e in read_topic(anon.settings, anon.settings.topics.events_clean):
        raw = next(r for r in first if r.payload["transaction_id"] == e.payload["transaction_id"])
        assert cipher.decrypt(e.subject, e.type, "email", e.payload["email"]).decode() == raw.payload["email"]
