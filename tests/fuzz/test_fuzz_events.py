"""Fuzzing the event path: strict decoding and the consumer loop's decode -> dead-letter path.

Any bytes decode to a valid envelope or a `DecodeError` (never another exception, never a hang); a DLQ
record can be built for every failure; and through a real broker, fuzzed records end in the DLQ while the
clean topic receives only what the anonymizer made from valid events.
"""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaProducer

from bulwark.bus.client import kafka_client_config
from bulwark.bus.dlq import SourceRecord, build_dead_letter
from bulwark.bus.loop import BusSettings, ConsumerLoop
from bulwark.bus.reader import read_topic
from bulwark.crypto import FieldCipher, KeyRing, Pseudonymizer, load_ring
from bulwark.crypto.keys import RING_DLQ, RING_FIELD, RING_PSEUDONYM
from bulwark.crypto.subjects import SubjectCipher, SubjectKeyStore
from bulwark.events import DecodeError, Envelope, EventTypeRegistry, decode
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.testing.stack import TestStack
from services.ingest_anonymizer.handler import AnonymizerHandler
from services.ingest_anonymizer.policy import DEFAULT_POLICY, load_policy
from tests.fuzz.conftest import budget

REGISTRY = EventTypeRegistry.default()
MAX_BYTES = 64 * 1024
VALID = [e.to_dict() for e in ReferenceGenerator(seed=31).events(20)]
CIPHER = FieldCipher(KeyRing.generate("dlq"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event with a few fields dropped, replaced or added, at any depth, re-encoded (or cut)."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        target, path = doc, []
        while isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target)))
            if not isinstance(target[key], dict):
                break
            path.append(key)
            target = target[key]
        if not isinstance(target, dict) or not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            del target[key]
        elif action == "replace":
            target[key] = draw(json_values)
        else:
            target[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    body = json.dumps(doc).encode()  # stdlib: big integers and all, as any producer may send
    if draw(st.integers(0, 9)) == 0:
        body = body[:draw(st.integers(0, len(body)))]  # truncated on the wire
    return body


def _check(value: bytes | None) -> Envelope | None:
    try:
        env = decode(value, REGISTRY, max_bytes=MAX_BYTES)
    except DecodeError as exc:
        assert exc.reason.value and exc.stage
        # Every failure becomes a DLQ record, sealed, with no payload text in a header.
        src = SourceRecord("events.raw", 0, 7, 0, None, value)
        record, headers = build_dead_letter(src, exc, stage=exc.stage, service="fuzz", cipher=CIPHER,
                                            exception="DecodeError", event_id=exc.event_id, event_type=exc.event_type)
        assert record.type and all(isinstance(v, bytes) for _, v in headers)
        if value:
            text = value.decode("utf-8", "replace")
            assert not any(len(text) > 12 and text in v.decode("utf-8", "replace") for _, v in headers)
        return None
    assert isinstance(env, Envelope) and env.type and env.id
    return env


@budget(400)
@given(st.binary(max_size=2048) | st.none())
def test_decode_any_bytes_gives_an_envelope_or_a_decode_error(value: bytes | None) -> None:
    _check(value)


@budget(400)
@given(mutated_events())
def test_decode_mutated_valid_events_never_raises_anything_else(value: bytes) -> None:
    env = _check(value)
    if env is not None:  # what decodes is valid against its schema: encoding it again decodes the same
        assert decode(env.encode(), REGISTRY, max_bytes=MAX_BYTES).payload == env.payload


@budget(200)
@given(st.text(max_size=300).map(str.encode) | json_values.map(lambda v: json.dumps(v).encode()))
def test_decode_any_json_document_gives_an_envelope_or_a_decode_error(value: bytes) -> None:
    _check(value)


def test_decode_size_limit_comes_before_parsing() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"[" * (MAX_BYTES + 1), REGISTRY, max_bytes=MAX_BYTES)
    assert info.value.reason.value == "PAYLOAD_TOO_LARGE"


def _records(n_fuzz: int) -> st.SearchStrategy[list[bytes | None]]:
    return st.lists(st.binary(max_size=200) | mutated_events() | st.none(), min_size=n_fuzz, max_size=n_fuzz)


@pytest.mark.integration
@budget(2)
@given(fuzzed=_records(30))
def test_consumer_loop_fuzzed_records_reach_the_dlq_and_nothing_else_reaches_clean(stack: TestStack,
                                                                                   fuzzed: list) -> None:
    topics = stack.topics(partitions=1)
    prefix = "fz" + uuid.uuid4().hex[:8]
    settings = stack.settings(redis_prefix=prefix, **topics)
    client = make_redis(settings)
    handler = AnonymizerHandler(settings, load_policy(DEFAULT_POLICY, REGISTRY), REGISTRY,
                                Pseudonymizer(load_ring(RING_PSEUDONYM, stack.keys_dir)),
                                SubjectCipher(SubjectKeyStore(client, RedisKeys(prefix),
                                                              load_ring(RING_FIELD, stack.keys_dir))))
    valid = list(ReferenceGenerator(seed=32).events(5))
    values = [e.encode() for e in valid] + list(fuzzed)
    producer = KafkaProducer(**kafka_client_config(settings, client_id="fuzz"))
    for v in values:
        producer.send(settings.topics.events_raw, v, key=b"fuzz")  # a key: a None value is a tombstone
    producer.flush()
    producer.close()
    loop = ConsumerLoop(handler, settings, client, registry=REGISTRY,
                        dlq_cipher=FieldCipher(load_ring(RING_DLQ, stack.keys_dir)),
                        bus=BusSettings(group_id="fuzz-" + uuid.uuid4().hex[:8], poll_timeout_ms=100))
    loop._consumer.subscribe(list(handler.topics))
    done, deadline = 0, time.monotonic() + 60
    try:
        while done < len(values) and time.monotonic() < deadline:
            done += loop.run_once()  # any exception out of here is a failure of the loop
    finally:
        loop.close()
    assert done == len(values), f"the loop finished {done} of {len(values)} records within 60 s"
    decodable = sum(1 for v in values if _decodes(v))
    clean = [e for _, e in read_topic(settings, settings.topics.events_clean, idle_ms=300, validate=True,
                                      registry=REGISTRY)]
    dlq = list(read_topic(settings, settings.topics.events_dlq, idle_ms=300))
    assert all(e is not None and e.type == "payment.transaction.clean" for e in clean)
    assert 5 <= len(clean) <= decodable  # the valid events, and at most the fuzzed ones that are valid too
    assert len(clean) + len(dlq) == len(values)  # every record: one clean event or one dead letter


def _decodes(value: bytes | None) -> bool:
    try:
        decode(value, REGISTRY, max_bytes=MAX_BYTES)
        return True
    except DecodeError:
        return False
