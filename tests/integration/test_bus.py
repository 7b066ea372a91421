"""The consumer loop against the real broker and Redis: commit after ack, dead letters, crashes, SIGTERM."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import orjson
import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer
from opentelemetry.sdk.trace import TracerProvider

from bulwark import topics as t
from bulwark.bus.client import kafka_client_config
from bulwark.bus.loop import BusSettings, ConsumerLoop
from bulwark.bus.dlq import open_dead_letter
from bulwark.crypto import FieldCipher, load_ring
from bulwark.crypto.keys import RING_DLQ
from bulwark.events import Envelope, EventTypeRegistry, derived_id
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from bulwark.testing.services import ServiceProcess, collect, distinct
from bulwark.testing.stack import TestStack
from bulwark.tracing import inject_headers

pytestmark = pytest.mark.integration


class Echo:
    """One test's echo service wiring: its topics, Redis prefix, group, and helpers."""

    def __init__(self, stack: TestStack, logs: Path, **extra_env: str) -> None:
        self.stack = stack
        self.logs = logs
        self.topic_in = stack.topic("echo-in")
        self.topic_out = stack.topic("echo-out")
        self.dlq = stack.topic("echo-dlq")
        self.prefix = "t" + uuid.uuid4().hex[:8]
        self.group = stack.group("echo")
        self.env = {**stack.env(), "BULWARK_ECHO_IN": self.topic_in, "BULWARK_ECHO_OUT": self.topic_out,
                    "BULWARK_TOPIC_EVENTS_DLQ": self.dlq, "BULWARK_REDIS_PREFIX": self.prefix,
                    "BULWARK_BUS_GROUP_ID": self.group, **extra_env}
        self.settings: CommonSettings = stack.settings(redis_prefix=self.prefix, topic_events_dlq=self.dlq)
        self.redis = make_redis(self.settings)
        self.keys = RedisKeys(self.prefix)
        self.producer = KafkaProducer(**kafka_client_config(self.settings, client_id="test"))

    def service(self, **env: str) -> ServiceProcess:
        return ServiceProcess("tests.integration.echo_service", "echo", {**self.env, **env}, self.logs)

    def send(self, events: list[Envelope]) -> None:
        for e in events:
            headers = inject_headers([(t.H_ENVELOPE_VERSION, b"1")])
            self.producer.send(self.topic_in, e.encode(), key=e.key, headers=headers)
        self.producer.flush()

    def send_raw(self, values: list[bytes]) -> None:
        for v in values:
            self.producer.send(self.topic_in, v, key=b"raw")
        self.producer.flush()

    def effects(self) -> list[str]:
        return [x.decode() for x in self.redis.lrange(self.keys.counter("echo", "effects"), 0, -1)]

    def committed(self) -> int:
        admin = KafkaAdminClient(**kafka_client_config(self.settings, client_id="test-admin"))
        try:
            offsets = admin.list_group_offsets(self.group)[self.group]
        finally:
            admin.close()
        return sum(o.offset for tp, o in offsets.items() if tp.topic == self.topic_in and o.offset > 0)

    def wait_effects(self, n: int, timeout_s: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            eff = self.effects()
            if len(set(eff)) >= n:
                return eff
            time.sleep(0.1)
        return self.effects()


def echo_events(n: int, **payload: object) -> list[Envelope]:
    return [Envelope(type="test.echo", payload={"n": i, **payload}, source="test", subject=f"s{i % 7}")
            for i in range(n)]


@pytest.fixture
def echo(stack: TestStack, logs_dir: Path) -> Iterator[Echo]:
    yield Echo(stack, logs_dir)


def test_bus_events_round_trip_with_trace_context_then_commit(echo: Echo) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    events = echo_events(40)
    with tracer.start_as_current_span("producer") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        echo.send(events)
    svc = echo.service().start()
    try:
        out = collect(echo.settings, echo.topic_out, until=lambda ev: len(distinct(ev)) >= 40, timeout_s=60)
        assert set(distinct(out)) == {derived_id(e.id, "echo", "0") for e in events}
        # Trace context travelled: each output's traceparent is in the producer's trace.
        from bulwark.bus.reader import read_topic

        parents = [dict(r.headers).get("traceparent", b"").decode() for r, _ in read_topic(echo.settings, echo.topic_out)]
        assert parents and all(p.split("-")[1] == trace_id for p in parents)
        deadline = time.monotonic() + 10
        while echo.committed() < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert echo.committed() == 40
        assert sorted(echo.effects()) == sorted(e.id for e in events)
    finally:
        assert svc.terminate() == 0


def test_bus_malformed_records_go_to_dlq_with_reason_and_service_keeps_running(stack: TestStack, logs_dir: Path) -> None:
    echo = Echo(stack, logs_dir, BULWARK_MAX_EVENT_BYTES="2048")
    good = Envelope(type="test.echo", payload={"n": 1}, source="test")
    wrong_version = Envelope(type="test.echo", payload={"n": 2}, source="test", schema_version=9)
    unknown_type = Envelope(type="test.nope", payload={"n": 3}, source="test")
    missing_field = Envelope(type="test.echo", payload={"x": 1}, source="test")
    wrong_type = Envelope(type="test.echo", payload={"n": "four"}, source="test")
    poison = Envelope(type="test.echo", payload={"n": 5, "poison": True}, source="test")
    secret = b"alice@example.com"
    oversize = Envelope(type="test.echo", payload={"n": 6, "pad": "x" * 4000}, source="test").encode()
    echo.send_raw([b"not json at all " + secret, b"\xff\xfe\xfd" + secret, oversize,
                   orjson.dumps({"id": "only-id", "note": secret.decode()})])
    echo.send([wrong_version, unknown_type, missing_field, wrong_type, poison])
    svc = echo.service().start()
    try:
        expected = {
            "NOT_JSON": "decode", "NOT_UTF8": "decode", "PAYLOAD_TOO_LARGE": "size", "SCHEMA_VIOLATION": None,
            "UNSUPPORTED_SCHEMA_VERSION": "schema", "UNKNOWN_EVENT_TYPE": "schema", "POLICY_VIOLATION": "handle",
        }
        dead = collect(echo.settings, echo.dlq, until=lambda ev: len(distinct(ev)) >= 9, timeout_s=60)
        letters = list(distinct(dead).values())
        assert len(letters) == 9
        reasons = [d.payload["reason"] for d in letters]
        assert set(reasons) == set(expected)
        assert reasons.count("SCHEMA_VIOLATION") == 3  # envelope missing fields, payload field missing, wrong type
        for d in letters:
            p = d.payload
            if expected[p["reason"]]:
                assert p["stage"] == expected[p["reason"]], p
            assert p["service"] == "echo" and p["source"]["topic"] == echo.topic_in
            # The DLQ is not a leak: the original bytes are sealed; the message names fields, not values.
            assert b"alice" not in orjson.dumps(p)
        by_reason = {d.payload["reason"]: d.payload for d in letters}
        assert "payload" in by_reason["SCHEMA_VIOLATION"]["message"] or "envelope" in by_reason["SCHEMA_VIOLATION"]["message"]
        assert "2048" in by_reason["PAYLOAD_TOO_LARGE"]["message"]
        # With the dlq key, an operator recovers the original bytes exactly.
        cipher = FieldCipher(load_ring(RING_DLQ, stack.keys_dir))
        _, value = open_dead_letter(by_reason["NOT_JSON"], cipher)
        assert value == b"not json at all " + secret
        # Headers carry reason and origin, never payload text.
        from bulwark.bus.reader import read_topic

        for rec, _ in read_topic(echo.settings, echo.dlq):
            headers = dict(rec.headers)
            assert headers[t.H_DLQ_REASON].decode() in expected
            assert all(b"alice" not in v for v in headers.values())
        # Still running: a good event afterwards is handled.
        echo.send([good])
        out = collect(echo.settings, echo.topic_out, until=lambda ev: len(ev) >= 1, timeout_s=30)
        assert [e.payload["n"] for e in out] == [1]
        assert svc.alive
    finally:
        svc.terminate()


@pytest.mark.parametrize("crash_at", ["before_commit", "after_ack"])
def test_bus_killed_before_commit_then_restarted_has_single_visible_effect(echo: Echo, crash_at: str) -> None:
    events = echo_events(200)
    echo.send(events)
    svc = echo.service(BULWARK_FAULT_CRASH_AT=crash_at).start(wait=False)
    assert svc.wait_exit(90) == -9  # killed by the injected fault, mid-stream, before committing
    assert echo.committed() < 200
    svc2 = echo.service().start()
    try:
        out = collect(echo.settings, echo.topic_out, until=lambda ev: len(distinct(ev)) >= 200, timeout_s=90)
        assert set(distinct(out)) == {derived_id(e.id, "echo", "0") for e in events}
        effects = echo.effects()
        if crash_at == "before_commit":
            # Marked done before the kill: redelivery is skipped by the idempotence key, effects stay single.
            assert sorted(effects) == sorted(e.id for e in events)
        else:
            # Killed before marking: the batch is handled again and its outputs re-sent with the same ids,
            # so a consumer de-duplicating by id sees each exactly once.
            assert set(effects) == {e.id for e in events}
            assert len(out) >= 200
    finally:
        svc2.terminate()


def test_bus_infrastructure_failure_is_retried_not_skipped(echo: Echo) -> None:
    events = echo_events(30, fail_first=True)
    echo.send(events)
    svc = echo.service().start()
    try:
        effects = echo.wait_effects(30)
        assert sorted(effects) == sorted(e.id for e in events)
        out = collect(echo.settings, echo.topic_out, until=lambda ev: len(distinct(ev)) >= 30)
        assert len(distinct(out)) == 30
        time.sleep(1)
        from bulwark.bus.reader import read_topic

        assert list(read_topic(echo.settings, echo.dlq, idle_ms=300)) == []
    finally:
        svc.terminate()


def test_bus_sigterm_finishes_event_in_hand_commits_and_resumes(stack: TestStack, logs_dir: Path) -> None:
    echo = Echo(stack, logs_dir, BULWARK_FAULT_DELAY_MS="5")
    events = echo_events(600)
    echo.send(events)
    svc = echo.service().start()
    while len(echo.effects()) < 50:
        time.sleep(0.05)
    assert svc.terminate() == 0
    handled = len(echo.effects())
    assert 0 < handled < 600
    assert echo.committed() == handled  # everything handled was committed; nothing beyond
    svc2 = echo.service(BULWARK_FAULT_DELAY_MS="0").start()
    try:
        effects = echo.wait_effects(600)
        assert sorted(effects) == sorted(e.id for e in events)
    finally:
        svc2.terminate()


@pytest.mark.slow
def test_bus_survives_broker_restart_without_loss(echo: Echo) -> None:
    events = echo_events(300)
    echo.send(events[:150])
    svc = echo.service().start()
    try:
        echo.wait_effects(150)
        echo.stack.kafka.restart()
        echo.producer = KafkaProducer(**kafka_client_config(echo.settings, client_id="test"))
        echo.send(events[150:])
        effects = echo.wait_effects(300, timeout_s=120)
        assert set(effects) == {e.id for e in events}
        out = collect(echo.settings, echo.topic_out, until=lambda ev: len(distinct(ev)) >= 300, timeout_s=60)
        assert len(distinct(out)) == 300
        assert svc.alive
    finally:
        svc.terminate()


def test_bus_heartbeat_shows_instance_running(echo: Echo) -> None:
    svc = echo.service().start()
    try:
        key = echo.keys.heartbeat("echo", svc.instance)
        hb = echo.redis.hgetall(key)
        assert hb[b"status"] == b"running" and hb[b"service"] == b"echo"
        assert echo.redis.pttl(key) > 0
        # Once events flow, the heartbeat carries how long they stayed in the instance.
        echo.send(echo_events(30))
        echo.wait_effects(30)
        deadline = time.monotonic() + 10
        while float(echo.redis.hget(key, "dwell_p99_ms") or 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        p50, p99 = (float(v) for v in echo.redis.hmget(key, "dwell_p50_ms", "dwell_p99_ms"))
        assert 0 < p50 <= p99 < 10_000
    finally:
        svc.terminate()
    # A graceful stop removes the heartbeat: stopped, not crashed.
    assert not echo.redis.exists(echo.keys.heartbeat("echo", svc.instance))


class _Ticker:
    """A handler with periodic work (as the updater's rollouts), counting how often it runs."""

    name = "ticker"
    event_types = None

    def __init__(self, topic: str) -> None:
        self.topics = [topic]
        self.ticks = 0

    def handle(self, event, ctx):  # noqa: ANN001, ANN201
        return []

    def tick(self) -> list:
        self.ticks += 1
        return []


def test_bus_runs_handler_ticks_at_their_interval_not_at_every_poll(stack: TestStack) -> None:
    # Polls return every 10 ms on an idle topic (the poll timeout is short for latency); the handler's
    # periodic work, which reads Redis, must not run at that pace.
    handler = _Ticker(stack.topic("tick-in"))
    settings = stack.settings(redis_prefix="tk" + uuid.uuid4().hex[:8])
    loop = ConsumerLoop(handler, settings, make_redis(settings), registry=EventTypeRegistry.default(),
                        dlq_cipher=FieldCipher(load_ring(RING_DLQ, stack.keys_dir)),
                        bus=BusSettings(group_id=stack.group("tick"), poll_timeout_ms=10,
                                        tick_interval_ms=200))
    loop._consumer.subscribe(handler.topics)
    polls, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < 3.0:
            loop.run_once()
            polls += 1
    finally:
        loop.close()
    elapsed = time.monotonic() - started
    assert handler.ticks <= elapsed / 0.2 + 1  # at most one per interval, the first at once
    assert handler.ticks >= 5 and polls >= 3 * handler.ticks


class _RedisOutage:
    """A handler whose own Redis calls meet an outage, as a restarted Redis gives: the first two ticks find it
    still loading its data, and the first attempt at every event finds the connection refused."""

    name = "outage"
    event_types = None

    def __init__(self, topic: str) -> None:
        self.topics = [topic]
        self.refused: set[str] = set()
        self.handled: list[str] = []
        self.ticks = 0

    def handle(self, event, ctx):  # noqa: ANN001, ANN201
        if event.id not in self.refused:
            self.refused.add(event.id)
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.handled.append(event.id)
        return []

    def tick(self) -> list:
        self.ticks += 1
        if self.ticks <= 2:
            raise redis.BusyLoadingError("Redis is loading the dataset in memory")
        return []


def test_bus_redis_outage_inside_a_handler_is_retried_never_dead_lettered_nor_fatal(echo: Echo) -> None:
    # The updater once died on a Redis restart: a raw Redis call in its periodic work raised through the loop.
    # The loop treats a handler's Redis outage as a dependency's, as it does an `UnavailableError`.
    from bulwark.bus.reader import read_topic
    from tests.integration.echo_service import registry as echo_registry

    events = echo_events(12)
    echo.send(events)
    handler = _RedisOutage(echo.topic_in)
    loop = ConsumerLoop(handler, echo.settings, echo.redis, registry=echo_registry(),
                        dlq_cipher=FieldCipher(load_ring(RING_DLQ, echo.stack.keys_dir)),
                        bus=BusSettings(group_id=echo.group, poll_timeout_ms=50,
                                        tick_interval_ms=0, backoff_initial_s=0.05, backoff_max_s=0.2))
    loop._consumer.subscribe(handler.topics)
    statuses = []
    try:
        deadline = time.monotonic() + 60
        while len(set(handler.handled)) < len(events) and time.monotonic() < deadline:
            loop.run_once()  # raises nothing
            statuses.append((loop.stats.status, loop.stats.detail))
        for _ in range(3):
            loop.run_once()
        statuses.append((loop.stats.status, loop.stats.detail))
    finally:
        loop.close()
    assert sorted(handler.handled) == sorted(e.id for e in events)  # each handled, and once
    assert handler.ticks > 2 and loop.stats.retries >= 2
    degraded = [detail for status, detail in statuses if status == "degraded"]
    assert degraded and all("Redis unreachable" in d for d in degraded), statuses
    assert statuses[-1] == ("running", ""), statuses
    assert list(read_topic(echo.settings, echo.dlq, idle_ms=300)) == []


def test_bus_overlapped_acks_commit_a_batch_only_after_the_next_and_rewind_both_when_acks_fail(
        echo: Echo, monkeypatch: pytest.MonkeyPatch) -> None:
    # By default a batch's acknowledgements are awaited after the next batch is handled. If they fail, both
    # batches go back: nothing is lost, and what is handled again carries the same ids.
    from bulwark.errors import UnavailableError
    from tests.integration.echo_service import EchoHandler, registry

    events = echo_events(30)
    echo.send(events)
    loop = ConsumerLoop(EchoHandler(echo.topic_in, echo.topic_out), echo.settings, echo.redis,
                        registry=registry(), dlq_cipher=FieldCipher(load_ring(RING_DLQ, echo.stack.keys_dir)),
                        bus=BusSettings(group_id=echo.group, max_batch=10, backoff_initial_s=0.05))
    loop._consumer.subscribe([echo.topic_in])

    def until(check, timeout_s: float = 30.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, "timed out"
            loop.run_once()

    try:
        first = 0
        while not first:
            first = loop.run_once()
        assert len(echo.effects()) == first
        assert echo.committed() == 0  # handled and sent, not yet acknowledged-and-committed

        real_wait = loop._producer.wait_for
        calls = []

        def failing_wait(pending: list, timeout_s: float = 30.0) -> int:
            calls.append(len(pending))
            if len(calls) == 1:
                raise UnavailableError("simulated: the broker did not acknowledge")
            return real_wait(pending, timeout_s)

        monkeypatch.setattr(loop._producer, "wait_for", failing_wait)
        while not calls:  # the second batch is handled, then the first one's acknowledgements fail
            loop.run_once()
        handled_before = len(echo.effects())
        assert handled_before > first and echo.committed() == 0

        until(lambda: echo.committed() == 30)
        effects = echo.effects()
        assert sorted(set(effects)) == sorted(e.id for e in events)
        assert len(effects) == 30 + handled_before  # both batches were handled again, nothing skipped
        out = collect(echo.settings, echo.topic_out, until=lambda ev: len(distinct(ev)) >= 30, timeout_s=30)
        assert set(distinct(out)) == {derived_id(e.id, "echo", "0") for e in events}

        # A quiet topic does not leave a batch uncommitted: the next empty poll finishes it.
        echo.send(echo_events(5, tail=True))
        until(lambda: len(echo.effects()) == 35 + handled_before)
        until(lambda: echo.committed() == 35, timeout_s=10)
    finally:
        loop.close()
