"""OpenTelemetry set-up for every Bulwark process, and trace context in Kafka headers.

The SDK reads the standard variables itself: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_ENDPOINT/PROTOCOL/HEADERS, OTEL_SDK_DISABLED.
Where spans go (`BULWARK_TRACES_SINK`):

- `otlp`: the OTLP exporter (auto picks it whenever OTEL_EXPORTER_OTLP_ENDPOINT is set);
- `kafka`: OTLP protobuf records on the `otlp_spans` topic, exactly what the Collector's Kafka exporter
  writes, so `bulwark doctor` (and a Collector's Kafka receiver) can read them with no collector running;
  auto picks it when no endpoint is set;
- `file`: OTLP JSON lines under `<home>/traces/`;
- `none`: spans are made (context still propagates) but not exported.

Span attributes carry ids, sizes and outcomes only, never a personal value.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from bulwark import __version__
from bulwark.settings import CommonSettings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode("ascii")))


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        vals = [v.decode("ascii", "replace") for k, v in carrier if k == key and v is not None]
        return vals or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


def inject_headers(headers: Headers, ctx: otel_context.Context | None = None) -> Headers:
    """Write the W3C trace context (traceparent, tracestate, baggage) of `ctx` into Kafka headers."""
    propagate.inject(headers, context=ctx, setter=_SETTER)
    return headers


def extract_context(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context carried in Kafka headers (an empty context when there is none)."""
    return propagate.extract(headers or [], getter=_GETTER)


class KafkaSpanExporter(SpanExporter):
    """Exports spans as OTLP protobuf `ExportTraceServiceRequest` records to a Kafka topic.

    The record format is the OpenTelemetry Collector Kafka exporter's `otlp_proto` encoding. The
    producer is created on first export, off the request path (the batch processor's thread).
    """

    def __init__(self, settings: CommonSettings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._producer = None
        self._lock = threading.Lock()

    def _get_producer(self):  # noqa: ANN202 - kafka-python has no types
        if self._producer is None:
            from bulwark.bus.client import kafka_client_config
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                **kafka_client_config(self._settings, client_id="otlp-spans"),
                acks=1, linger_ms=50, retries=3, max_block_ms=2000,
            )
        return self._producer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        try:
            with self._lock:
                self._get_producer().send(self._topic, encode_spans(spans).SerializeToString())
            return SpanExportResult.SUCCESS
        except Exception as exc:  # a tracing failure must never take a service down
            log.debug("span export to kafka failed: %s", type(exc).__name__)
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._producer is not None:
            self._producer.flush(timeout=timeout_millis / 1000)
        return True

    def shutdown(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=2)
            self._producer = None


class FileSpanExporter(SpanExporter):
    """Exports spans as OTLP JSON lines (one `ExportTraceServiceRequest` per line) to a file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from google.protobuf.json_format import MessageToJson
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        line = MessageToJson(encode_spans(spans), indent=None)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._fh.close()


def _sink(settings: CommonSettings) -> str:
    if settings.traces_sink != "auto":
        return settings.traces_sink
    return "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") else "kafka"


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    return OTLPSpanExporter()


def _sampler(settings: CommonSettings) -> Sampler | None:
    # The SDK's own variable wins; without it, record a share of new traces, children follow their parent.
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    return ParentBased(TraceIdRatioBased(settings.traces_sample_ratio))


def setup_tracing(service: str, settings: CommonSettings, *,
                  extra_exporters: Iterable[SpanExporter] = ()) -> TracerProvider:
    """Install the global tracer provider for `service`, exporting to the configured sink."""
    resource = Resource.create({
        "service.name": os.environ.get("OTEL_SERVICE_NAME", f"bulwark-{service}"),
        "service.namespace": "bulwark",
        "service.instance.id": settings.instance_id,
        "service.version": __version__,
    })
    provider = TracerProvider(resource=resource, sampler=_sampler(settings))
    sink = _sink(settings)
    exporter: SpanExporter | None = None
    if sink == "otlp":
        exporter = _otlp_exporter()
    elif sink == "kafka":
        exporter = KafkaSpanExporter(settings, settings.topics.otlp_spans)
    elif sink == "file":
        exporter = FileSpanExporter(settings.home / "traces" / f"{service}.jsonl")
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192, max_export_batch_size=512,
                                                       schedule_delay_millis=500))
    for extra in extra_exporters:
        provider.add_span_processor(BatchSpanProcessor(extra, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    log.info("tracing set up service=%s sink=%s sampler=%s", service, sink, provider.sampler.get_description())
    return provider


def tracer(name: str = "bulwark") -> trace.Tracer:
    """The tracer Bulwark code uses (from the global provider)."""
    return trace.get_tracer(name, __version__)


def background_thread(body: Callable[[], None]) -> Callable[[], None]:
    """`body` with the library instrumentations (Redis, gRPC) quiet, for a thread's `target`.

    Work a background thread does on its own clock (heartbeats, the front door's cache writes) belongs to no
    request: each Redis command there would be a root trace of its own, noise in every trace view, and its
    span bookkeeping competes for the interpreter lock with the requests being served."""
    def run() -> None:
        with suppress_instrumentation():
            body()
    return run


def current_trace_id() -> str | None:
    """Hex trace id of the current span, if any (for logs and responses)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


_INSTRUMENTED = False


def instrument_libraries() -> list[str]:
    """Turn on OpenTelemetry's gRPC (server and client) and Redis instrumentations, once per process.

    gRPC: server spans continue the caller's context from the metadata, client spans (between Bulwark
    services) inject it; `TritonClient.infer` suppresses its duplicate client span and injects by hand
    (the front door likewise suppresses the Redis span of its per-request lookup). Redis: one span per
    command, statements sanitized to `COMMAND ? ?` by the instrumentation, so no key or value reaches a
    span. Kafka is traced by the
    consumer loop and `event_headers` (the kafka-python instrumentation cannot see `poll()`).
    Returns the names of the instrumentations that are on.
    """
    global _INSTRUMENTED
    on: list[str] = []
    if _INSTRUMENTED:
        return on
    _INSTRUMENTED = True
    try:
        from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer

        GrpcInstrumentorServer().instrument()
        GrpcInstrumentorClient().instrument()
        on.append("grpc")
    except Exception as exc:  # an instrumentation that cannot load leaves manual spans only
        log.warning("grpc instrumentation off error=%s", type(exc).__name__)
    try:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()
        on.append("redis")
    except Exception as exc:
        log.warning("redis instrumentation off error=%s", type(exc).__name__)
    return on
