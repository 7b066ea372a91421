"""Producing events: envelope encoding, headers with trace context, waiting for acknowledgements."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError

from bulwark import topics as t
from bulwark.bus.client import kafka_client_config
from bulwark.errors import UnavailableError
from bulwark.events import ENVELOPE_VERSION, Envelope
from bulwark.settings import CommonSettings
from bulwark.tracing import Headers, inject_headers

_ENVELOPE_HEADER = str(ENVELOPE_VERSION).encode()


@dataclass
class Output:
    """One record a handler wants produced: an event for a topic (keyed by its subject unless `key`)."""

    topic: str
    event: Envelope
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


def event_headers(event: Envelope, extra: Headers | None = None) -> Headers:
    """The envelope version and the current trace context as Kafka headers (the rest is in the value)."""
    headers: Headers = [(t.H_ENVELOPE_VERSION, _ENVELOPE_HEADER)]
    if extra:
        headers.extend(extra)
    return inject_headers(headers)


def make_producer(settings: CommonSettings, *, client_id: str, linger_ms: int = 1000) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and never reorders a retried batch.

    The long linger is deliberate: every user of this producer flushes when its batch is done (the consumer
    loop on a side thread, then waits for the acknowledgements before it commits), so records leave in one
    produce request per partition per batch instead of many small ones. Each produce request is a storage
    write on the broker; on S3-backed storage, small ones cost most of the broker's CPU."""
    return KafkaProducer(
        **kafka_client_config(settings, client_id=client_id),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        batch_size=1024 * 1024,
        max_request_size=max(2 * settings.max_event_bytes, 1_048_576),
        max_block_ms=10_000,
        retries=5,
    )


class EventProducer:
    """Sends events and, on `flush()`, waits until every one is acknowledged or raises."""

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer
        self._pending: list = []  # kafka-python FutureRecordMetadata
        self.dropped = 0

    def send(self, out: Output) -> None:
        """Queue one output (asynchronous; `flush()` waits for it)."""
        headers = event_headers(out.event, out.headers)
        key = out.key if out.key is not None else out.event.key
        try:
            self._pending.append(self._producer.send(out.topic, value=out.event.encode(), key=key, headers=headers))
        except KafkaError as exc:
            raise UnavailableError(f"cannot produce to {out.topic}: {type(exc).__name__}") from None

    def send_nowait(self, out: Output) -> None:
        """Queue an output nobody waits for (sampled logs): failures are counted in `dropped`, never raised."""
        headers = event_headers(out.event, out.headers)
        key = out.key if out.key is not None else out.event.key
        try:
            fut = self._producer.send(out.topic, value=out.event.encode(), key=key, headers=headers)
            fut.add_errback(self._count_drop)
        except KafkaError:
            self._count_drop(None)

    def _count_drop(self, _exc: object) -> None:
        self.dropped += 1

    def send_raw(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        """Queue a record that is not an envelope built here (dead letters keep their own headers)."""
        try:
            self._pending.append(self._producer.send(topic, value=value, key=key, headers=headers))
        except KafkaError as exc:
            raise UnavailableError(f"cannot produce to {topic}: {type(exc).__name__}") from None

    def take_pending(self) -> list:
        """Send what is queued now without waiting (the producer's long linger would hold it), and return
        those outputs for `wait_for` later: the loop overlaps one batch's acknowledgements with the next
        batch's handling."""
        pending, self._pending = self._pending, []
        if pending:
            # kafka-python sends ahead of its linger only inside flush(), which blocks: run it on the side.
            threading.Thread(target=self._flush_quietly, name="flush-ahead", daemon=True).start()
        return pending

    def _flush_quietly(self) -> None:
        try:
            self._producer.flush(timeout=30.0)
        except Exception:  # noqa: BLE001 - `wait_for` reports each output's own outcome
            pass

    def wait_for(self, pending: list, timeout_s: float = 30.0) -> int:
        """Wait for these outputs' acknowledgements; raise `UnavailableError` if any failed or timed out."""
        deadline = time.monotonic() + timeout_s
        for fut in pending:
            try:
                fut.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - whatever failed the send, it was not acknowledged
                name = type(exc).__name__
                raise UnavailableError(f"broker did not acknowledge an output ({name})") from None
        return len(pending)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued record's acknowledgement; raise `UnavailableError` if any failed."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise UnavailableError(f"broker did not acknowledge outputs: {type(exc).__name__}") from None
        return self.wait_for(pending, timeout_s=0.0)  # all done now: this reports any that failed

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close the underlying producer."""
        self._producer.close(timeout=timeout_s)


class LazyEventProducer:
    """An `EventProducer` created on first use, and re-tried at most every `retry_s` while the broker is
    down, for components whose main job is not Kafka (the front door's sampled log)."""

    def __init__(self, settings: CommonSettings, *, client_id: str, retry_s: float = 10.0, linger_ms: int = 100) -> None:
        import threading

        self._settings = settings
        self._client_id = client_id
        self._retry_s = retry_s
        self._linger_ms = linger_ms
        self._producer: EventProducer | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()
        self.dropped = 0

    def _get(self) -> EventProducer | None:
        import time

        if self._producer is not None:
            return self._producer
        with self._lock:
            if self._producer is None and time.monotonic() >= self._next_try:
                try:
                    # Nobody flushes this producer: a short linger bounds how late records leave.
                    self._producer = EventProducer(make_producer(self._settings, client_id=self._client_id,
                                                                 linger_ms=self._linger_ms))
                except KafkaError:
                    self._next_try = time.monotonic() + self._retry_s
        return self._producer

    def send_nowait(self, out: Output) -> None:
        """Send without waiting; while the broker is unreachable the record is dropped and counted."""
        producer = self._get()
        if producer is None:
            self.dropped += 1
            return
        producer.send_nowait(out)

    def close(self) -> None:
        """Flush and close, if created."""
        if self._producer is not None:
            self._producer.close()
