"""The consumer loop: poll, decode, validate, trace, handle, produce, wait for acks, then commit.

A service writes only a handler; this loop owns everything else, the same way in every service:

1. poll a batch (auto-commit is off);
2. decode and validate each record; a bad record becomes a dead letter with its reason and stage;
3. skip events already handled (idempotence keys in Redis, one pipelined round trip per batch);
4. call `handler.handle(event, ctx)` inside a processing span whose parent is the producer's context;
   a content error (non-retryable) dead-letters that event, and the loop moves on;
5. produce every output and dead letter, then wait for all acknowledgements (by default only after the
   next batch has been handled, so the broker's write time overlaps it; at once when the next poll is
   empty, on stop and on failure);
6. mark the handled ids in Redis, then commit the offsets (asynchronously by default: the next fetch
   does not wait for the commit's answer; the last offsets are committed synchronously on stop).

An infrastructure failure (broker, Redis, a peer down: a retryable `BulwarkError`) stops the batch where
it is: what was finished is acknowledged and committed, the partitions are rewound to the first record not
finished, and the loop backs off and tries again; nothing is skipped. A crash anywhere means redelivery;
outputs carry ids derived from their input, and handled ids are remembered, so a redelivered event has no
second visible effect. SIGTERM stops after the event in hand: acknowledged, committed, group left.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Protocol, Sequence

import redis
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import Field

from bulwark.bus.canary import CANARY_TYPE, canary_outputs
from bulwark.bus.client import kafka_client_config
from bulwark.bus.dlq import SourceRecord, build_dead_letter, dead_letter_id
from bulwark.bus.producer import EventProducer, Output, make_producer
from bulwark.crypto.aead import FieldCipher
from bulwark.errors import BulwarkError, Reason, UnavailableError
from bulwark.events import DecodeError, Envelope, EventTypeRegistry, decode
from bulwark.health import DwellWindow, ServiceStats
from bulwark.redis_client import OUTAGES, outage
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings, ServiceSettings
from bulwark.tracing import extract_context, tracer
from pydantic_settings import SettingsConfigDict

log = logging.getLogger(__name__)


class BusSettings(ServiceSettings):
    """Consumer-loop tuning (`BULWARK_BUS_*`)."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_BUS_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    max_batch: int = Field(500, ge=1, le=10_000)
    """Most records handled between two commits."""
    poll_timeout_ms: int = Field(20, ge=10, le=10_000)
    """How long one poll waits for records. Short on purpose: kafka-python 3.0 can take a fetch response that
    lands between its buffer check and its wait for "nothing in flight" and sleep up to `retry_backoff_ms`
    (100 ms) with the records buffered; a poll timeout below that bounds the stall (see docs/operations.md).
    An empty poll costs no broker request, only a loop turn."""
    tick_interval_ms: int = Field(200, ge=0, le=60_000)
    """Most often a handler's periodic work (`tick`: rollouts, schedules) runs, busy or idle; 0: after every
    poll. Kept apart from the poll timeout, which is short for latency."""
    backoff_initial_s: float = Field(0.2, gt=0)
    """First wait after an infrastructure failure."""
    backoff_max_s: float = Field(10.0, gt=0)
    """Longest wait between retries."""
    group_id: str | None = None
    """Consumer group; default `bulwark-<service>`."""
    fetch_max_wait_ms: int = Field(500, ge=1, le=10_000)
    """Longest a fetch waits for records (lower: less latency on a quiet topic; more requests to the broker)."""
    async_commit: bool = True
    """Send each batch's offset commit without waiting for its answer (still only after the batch's outputs
    are acknowledged), so the next fetch overlaps it; the last offsets are committed synchronously on stop.
    A lost commit only redelivers, and idempotence makes that invisible."""
    overlap_acks: bool = True
    """Wait for a batch's output acknowledgements only after handling the next batch, then mark and commit
    it, so the broker's write time overlaps useful work; a batch is finished at once when the next poll is
    empty, on stop and on failure. Outputs are still acknowledged before their offsets are committed."""
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    """Longest a handler may take on one batch before the group gives its partitions away (raise it for
    long work such as training)."""


class FaultSettings(ServiceSettings):
    """Fault injection for the platform's own tests and drills (`BULWARK_FAULT_*`); off by default."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_FAULT_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    delay_ms: int = Field(0, ge=0, le=60_000)
    """Extra delay before each event is handled: makes a service slow on purpose (degraded drills)."""
    crash_at: str = Field("", pattern=r"^(|after_ack|before_commit)$")
    """Kill the process (SIGKILL) at this point of the first batch: after_ack (outputs acknowledged, not yet
    marked or committed) or before_commit (marked, not committed)."""


@dataclass
class Context:
    """Where the event in hand came from, and what the loop offers its handler."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    headers: Sequence[tuple[str, bytes]]
    service: str
    settings: CommonSettings
    redis: redis.Redis
    keys: RedisKeys
    span: trace.Span = field(default=trace.INVALID_SPAN)


class Handler(Protocol):
    """What a service implements: its name, the topics it reads, and what one event produces.

    A handler may also define `tick() -> Iterable[Output]`, called after every poll (even an empty one),
    for time-based work such as a training schedule, and `prepare(events)`, called once per polled batch
    with the decoded events about to be handled, to fetch in bulk what `handle` would otherwise fetch one
    event at a time. `prepare` is an optimisation only: it must not raise, and `handle` meets any problem
    it skipped.
    """

    name: str
    topics: Sequence[str]
    event_types: Collection[str] | None

    def handle(self, event: Envelope, ctx: Context) -> Iterable[Output]:
        """Outputs for one event; raise a non-retryable `BulwarkError` to dead-letter it."""
        ...


@dataclass
class _Item:
    record: Any
    src: SourceRecord
    event: Envelope | None = None
    error: DecodeError | None = None

    @property
    def idem_id(self) -> str:
        return self.event.id if self.event is not None else dead_letter_id(self.src, None)


@dataclass
class _Batch:
    """A handled batch whose outputs were sent and whose acknowledgements are not yet awaited."""

    items: list[_Item]
    marks: list[str]
    pending: list = field(default_factory=list)  # kafka-python futures of its outputs


class ConsumerLoop:
    """Runs one handler over its topics with at-least-once delivery and idempotent effects."""

    def __init__(self, handler: Handler, settings: CommonSettings, client: redis.Redis, *,
                 registry: EventTypeRegistry, dlq_cipher: FieldCipher, bus: BusSettings | None = None,
                 faults: FaultSettings | None = None, stats: ServiceStats | None = None,
                 consumer: KafkaConsumer | None = None, producer: EventProducer | None = None,
                 tracer_: trace.Tracer | None = None) -> None:
        self.handler = handler
        self._prepare = getattr(handler, "prepare", None)
        self.settings = settings
        self.redis = client
        self.registry = registry
        self.bus = bus or BusSettings()
        self.faults = faults or FaultSettings()
        self.stats = stats or ServiceStats()
        self.keys = RedisKeys(settings.redis_prefix)
        self._cipher = dlq_cipher
        self._tracer = tracer_ or tracer("bulwark.bus")
        self._stop = threading.Event()
        self._group = self.bus.group_id or f"bulwark-{handler.name}"
        self._span_name = f"{handler.name} process"
        self._consumer = consumer or KafkaConsumer(
            **kafka_client_config(settings, client_id=f"{handler.name}-{settings.instance_id}"),
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_poll_records=self.bus.max_batch,
            max_poll_interval_ms=self.bus.max_poll_interval_ms,
            fetch_max_wait_ms=self.bus.fetch_max_wait_ms,
            max_partition_fetch_bytes=max(2 * settings.max_event_bytes, 1_048_576),
        )
        self._producer = producer or EventProducer(make_producer(settings, client_id=f"{handler.name}-out"))
        self._backoff = self.bus.backoff_initial_s
        self._crashed_once = False
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._inflight: _Batch | None = None  # handled, outputs sent, acknowledgements not yet awaited
        self._dwell = DwellWindow(self.stats)
        self._next_tick = 0.0  # monotonic time of the next handler tick
        # SET key 1 EX ttl for every key of a batch, as one command.
        self._mark = client.register_script(
            "for _, k in ipairs(KEYS) do redis.call('SET', k, '1', 'EX', ARGV[1]) end return #KEYS")

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the loop to stop after the event in hand (safe from a signal handler)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stop.is_set()

    def run(self) -> None:
        """Consume until stopped; then commit what was finished and leave the group."""
        self._consumer.subscribe(list(self.handler.topics))
        self.stats.status = "running"
        log.info("consuming service=%s group=%s topics=%s", self.handler.name, self._group,
                 ",".join(self.handler.topics))
        try:
            while not self._stop.is_set():
                self.run_once()
        finally:
            self.close()

    def run_once(self) -> int:
        """One poll and the batch it returned; returns how many records were finished."""
        try:
            polled = self._consumer.poll(timeout_ms=self.bus.poll_timeout_ms, max_records=self.bus.max_batch)
        except KafkaError as exc:
            self._fail(UnavailableError(f"poll failed: {type(exc).__name__}"))
            return 0
        polled_at = time.perf_counter()
        self.stats.last_poll_at = time.time()
        ticked = self._tick()
        if not polled:
            if not self._settle_inflight([]):
                return 0
            self._update_lag()
            if ticked:
                self._recovered()
            return 0
        items = [self._decode(rec) for tp in sorted(polled, key=lambda p: (p.topic, p.partition))
                 for rec in polled[tp]]
        try:
            done = self._process(items, polled_at)
        except BulwarkError as exc:
            if not exc.retryable:
                raise
            self._rewind(items, set())
            self._fail(exc)
            return 0
        self._update_lag()
        if done == len(items):
            self._recovered()
        return done

    def close(self) -> None:
        """Finish the batch in flight, flush, leave the consumer group, close clients."""
        self._settle_inflight([])
        try:
            self._producer.close()
        except Exception as exc:  # closing must not mask the reason we stopped
            log.warning("producer close failed error=%s", type(exc).__name__)
        self._commit_pending()
        try:
            self._consumer.close(autocommit=False)
        except Exception as exc:
            log.warning("consumer close failed error=%s", type(exc).__name__)
        self.stats.status = "stopped"

    # ------------------------------------------------------------------ steps
    def _decode(self, rec: Any) -> _Item:
        src = SourceRecord(rec.topic, rec.partition, rec.offset, rec.timestamp, rec.key, rec.value)
        item = _Item(rec, src)
        try:
            item.event = decode(rec.value, self.registry, max_bytes=self.settings.max_event_bytes)
        except DecodeError as exc:
            item.error = exc
        return item

    def _process(self, items: list[_Item], polled_at: float) -> int:
        started = time.perf_counter()
        seen = self._already_done([i.idem_id for i in items])
        if self._inflight is not None:
            seen.update(self._inflight.marks)  # handled in the batch in flight, not yet marked in Redis
        finished: list[_Item] = []
        marks: list[str] = []
        failure: BulwarkError | None = None
        if self._prepare is not None:
            fresh = [i.event for i in items if i.event is not None and i.idem_id not in seen]
            if fresh:
                with suppress_instrumentation():  # batch work belongs to no one event's trace
                    self._prepare(fresh)
        for item in items:
            if self._stop.is_set() and finished:
                break  # SIGTERM: finish and commit what is in hand, leave the rest for the next owner
            if item.idem_id in seen:
                self.stats.duplicates += 1
                finished.append(item)
                continue
            try:
                self._handle_item(item)
            except BulwarkError as exc:
                if not exc.retryable:
                    raise
                failure = exc
                break
            seen.add(item.idem_id)
            marks.append(item.idem_id)
            finished.append(item)
            now = time.perf_counter()
            self._dwell.add(now, (now - polled_at) * 1000)
        if not self._settle_inflight(items):
            return 0
        if (self.bus.overlap_acks and failure is None and len(finished) == len(items)
                and not self._stop.is_set()):
            self._inflight = _Batch(finished, marks, self._producer.take_pending())
        else:
            self._finish(finished, marks)
        self._dwell.refresh(time.perf_counter())
        if marks:
            self.stats.last_event_at = time.time()
            self.stats.observe_latency((time.perf_counter() - started) * 1000 / len(finished))
        if len(finished) < len(items):
            self._rewind(items, {id(i) for i in finished})
        if failure is not None:
            if marks:
                self._backoff = self.bus.backoff_initial_s  # progress was made: not a run of failures
            self._fail(failure)
        return len(finished)

    def _handle_item(self, item: _Item) -> None:
        src, event = item.src, item.event
        headers = item.record.headers
        # Extracting costs a propagator pass; skip it for records that carry no trace context.
        parent = extract_context(headers) if headers and any(k == "traceparent" for k, _ in headers) else None
        with self._tracer.start_as_current_span(self._span_name, context=parent, kind=SpanKind.CONSUMER) as span:
            if span.is_recording():  # most events are not sampled: their span takes no attributes
                span.set_attributes(self._span_attributes(item))
            if item.error is not None:
                self._reject(span, item, item.error, stage=item.error.stage, exception="DecodeError")
                return
            assert event is not None
            accepted = self.handler.event_types
            if accepted is not None and event.type not in accepted and event.type != CANARY_TYPE:
                err = DecodeError(Reason.UNKNOWN_EVENT_TYPE, "schema",
                                  f"{self.handler.name} does not handle event type {event.type!r}; it handles "
                                  f"{', '.join(sorted(accepted))}", event_id=event.id, event_type=event.type)
                self._reject(span, item, err, stage="schema", exception="DecodeError")
                return
            if self.faults.delay_ms:
                time.sleep(self.faults.delay_ms / 1000)
            if event.type == CANARY_TYPE:
                # The doctor's probe: marked like any event (its evidence), forwarded on its route, never handled.
                outputs = canary_outputs(event, src.topic, self.handler.name)
                for out in outputs:
                    self._producer.send(out)
                span.set_attributes({"bulwark.outputs": len(outputs), "bulwark.outcome": "canary"})
                return
            ctx = Context(src.topic, src.partition, src.offset, src.timestamp_ms, headers,
                          self.handler.name, self.settings, self.redis, self.keys, span)
            try:
                outputs = list(self.handler.handle(event, ctx))
            except BulwarkError as exc:
                if exc.retryable:
                    span.set_status(Status(StatusCode.ERROR, exc.reason.value))
                    raise
                self._reject(span, item, exc, stage="handle", exception=type(exc).__name__)
                return
            except OUTAGES as exc:  # Redis down or restarting: retried, never dead-lettered
                span.set_status(Status(StatusCode.ERROR, Reason.UNAVAILABLE.value))
                raise outage(self.handler.name, exc) from None
            except Exception as exc:  # an unexpected handler bug dead-letters the event, never the loop
                # Only the exception class and stack frames are logged: messages may hold personal values.
                log.error("handler failed service=%s event_id=%s exception=%s\n%s", self.handler.name, event.id,
                          type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
                err = BulwarkError(Reason.HANDLER_ERROR, f"{self.handler.name} failed on this event "
                                   f"({type(exc).__name__}); see the service log for event_id={event.id}")
                self.stats.errors += 1
                self._reject(span, item, err, stage="handle", exception=type(exc).__name__)
                return
            for out in outputs:
                self._producer.send(out)
            span.set_attributes({"bulwark.outputs": len(outputs), "bulwark.outcome": "handled"})
        self.stats.handled += 1
        self.stats.last_event_id = event.id

    @staticmethod
    def _span_attributes(item: _Item) -> dict[str, Any]:
        src, event = item.src, item.event
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.destination.name": src.topic,
            "messaging.destination.partition.id": src.partition,
            "messaging.kafka.offset": src.offset,
            "bulwark.event.size": len(src.value or b""),
        }
        event_id = event.id if event else (item.error.event_id if item.error else None)
        if event_id:
            attributes["bulwark.event.id"] = event_id
        if event is not None:
            attributes["bulwark.event.type"] = event.type
        return attributes

    def _reject(self, span: trace.Span, item: _Item, error: BulwarkError, *, stage: str, exception: str) -> None:
        span.set_status(Status(StatusCode.ERROR, error.reason.value))
        span.set_attribute("bulwark.outcome", "dead_lettered")
        span.set_attribute("bulwark.dlq.reason", error.reason.value)
        event_id = item.event.id if item.event else (item.error.event_id if item.error else None)
        event_type = item.event.type if item.event else (item.error.event_type if item.error else None)
        self._dead_letter(item, error, stage=stage, exception=exception, event_id=event_id, event_type=event_type)

    def _dead_letter(self, item: _Item, error: BulwarkError, *, stage: str, exception: str,
                     event_id: str | None, event_type: str | None) -> None:
        dl, headers = build_dead_letter(item.src, error, stage=stage, service=self.handler.name,
                                        cipher=self._cipher, exception=exception, event_id=event_id,
                                        event_type=event_type)
        self._producer.send(Output(self.settings.topics.events_dlq, dl,
                                   key=f"{item.src.topic}:{item.src.partition}".encode(), headers=headers))
        self.stats.dead_lettered += 1
        log.info("dead-lettered service=%s reason=%s stage=%s topic=%s partition=%d offset=%d event_id=%s",
                 self.handler.name, error.reason.value, stage, item.src.topic, item.src.partition,
                 item.src.offset, event_id or "-")

    def _already_done(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        try:
            # One MGET per batch: a round trip and a single command to pack, whatever the batch size.
            hits = self.redis.mget([self.keys.idempotence(self.handler.name, i) for i in ids])
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for idempotence check ({type(exc).__name__})") from None
        return {i for i, hit in zip(ids, hits) if hit is not None}

    def _settle_inflight(self, later: list[_Item]) -> bool:
        """Finish the batch in flight (wait for its acknowledgements, mark, commit). If that fails, rewind to
        its first records, and `later` ones too (handled after it, not yet finished: their outputs may land
        twice, with the same ids, which consumers de-duplicate), back off, and return False."""
        batch, self._inflight = self._inflight, None
        if batch is None:
            return True
        try:
            self._finish(batch.items, batch.marks, batch.pending)
        except BulwarkError as exc:
            if not exc.retryable:
                raise
            self._rewind(batch.items + later, set())
            self._fail(exc)
            return False
        return True

    def _finish(self, finished: list[_Item], marks: list[str], pending: list | None = None) -> None:
        """Wait for the outputs' acknowledgements (`pending`, or everything queued), mark, commit."""
        if not finished:
            return
        if pending is None:
            self._producer.flush()
        else:
            self._producer.wait_for(pending)
        self._maybe_crash("after_ack")
        if marks:
            try:
                self._mark([self.keys.idempotence(self.handler.name, i) for i in marks],
                           [self.settings.idempotence_ttl_s])
            except redis.RedisError as exc:
                raise UnavailableError(f"Redis unreachable for idempotence mark ({type(exc).__name__})") from None
        self._maybe_crash("before_commit")
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for item in finished:
            tp = TopicPartition(item.src.topic, item.src.partition)
            nxt = item.src.offset + 1
            if tp not in offsets or offsets[tp].offset < nxt:
                offsets[tp] = OffsetAndMetadata(nxt, "", -1)
        try:
            if self.bus.async_commit and not self._stop.is_set():
                self._consumer.commit_async(offsets, callback=self._committed)
                self._uncommitted.update(offsets)
            else:
                self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # Group rebalanced (or the broker restarted): the records come back to whoever owns them now,
            # and their idempotence marks make the second pass a no-op.
            log.warning("commit refused after rebalance service=%s error=%s", self.handler.name, exc.__class__.__name__)
        except KafkaError as exc:
            log.warning("commit failed service=%s error=%s", self.handler.name, type(exc).__name__)

    def _committed(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        """An asynchronous commit's answer: a failure only means those records may come back."""
        if isinstance(result, Exception):
            log.warning("async commit failed service=%s error=%s", self.handler.name, type(result).__name__)
            return
        for tp, om in offsets.items():
            if self._uncommitted.get(tp) == om:
                del self._uncommitted[tp]

    def _commit_pending(self) -> None:
        """Commit, and wait for, what asynchronous commits may not have landed (on stop)."""
        if not self._uncommitted:
            return
        try:
            self._consumer.commit(dict(self._uncommitted))
            self._uncommitted.clear()
        except KafkaError as exc:
            log.warning("final commit failed service=%s error=%s", self.handler.name, type(exc).__name__)

    def _rewind(self, items: list[_Item], finished_ids: set[int]) -> None:
        first: dict[TopicPartition, int] = {}
        for item in items:
            if id(item) in finished_ids:
                continue
            tp = TopicPartition(item.src.topic, item.src.partition)
            first[tp] = min(first.get(tp, item.src.offset), item.src.offset)
        for tp, offset in first.items():
            try:
                self._consumer.seek(tp, offset)
            except (KafkaError, AssertionError, ValueError):
                pass  # partition was revoked; its new owner resumes from the committed offset

    def _fail(self, exc: BulwarkError) -> None:
        self.stats.retries += 1
        self.stats.status = "degraded"
        self.stats.detail = f"{exc.reason.value}: {exc.message}"
        log.warning("retrying after infrastructure failure service=%s reason=%s message=%s backoff_s=%.1f",
                    self.handler.name, exc.reason.value, exc.message, self._backoff)
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.bus.backoff_max_s)

    def _recovered(self) -> None:
        self._backoff = self.bus.backoff_initial_s
        if self.stats.status == "degraded":
            log.info("recovered service=%s", self.handler.name)
        self.stats.status = "running"
        self.stats.detail = ""

    def _tick(self) -> bool:
        tick = getattr(self.handler, "tick", None)
        now = time.monotonic()
        if tick is None or now < self._next_tick:
            return True
        self._next_tick = now + self.bus.tick_interval_ms / 1000
        try:
            outputs = list(tick())
            for out in outputs:
                self._producer.send(out)
            if outputs:
                self._producer.flush()
        except BulwarkError as exc:
            if not exc.retryable:
                raise
            self._fail(exc)
            return False
        except OUTAGES as exc:  # the loop, and with it the service, outlives a Redis restart
            self._fail(outage(self.handler.name, exc))
            return False
        return True

    def _update_lag(self) -> None:
        # End offsets come from fetch responses' high watermark. On Tansu the high watermark can trail the
        # true end (it reports the last batch's base offset + 1), so lag there is approximate.
        lag = 0
        try:
            for tp in self._consumer.assignment():
                hw = self._consumer.highwater(tp)
                if hw is not None:
                    lag += max(0, hw - self._consumer.position(tp))
        except (KafkaError, AssertionError):
            return
        self.stats.lag = lag

    def _maybe_crash(self, point: str) -> None:
        if self.faults.crash_at == point and not self._crashed_once:
            self._crashed_once = True
            log.warning("fault injection: killing process at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)
