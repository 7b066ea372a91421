"""OpenTelemetry metrics of every service: events handled, errors, retries, consumer lag, latency.

Instruments read the same `ServiceStats` the heartbeat writes, so the doctor, `bulwark status` and a
metrics backend agree. Where they go follows the trace sink (`BULWARK_TRACES_SINK`):

- `otlp` (auto when OTEL_EXPORTER_OTLP_ENDPOINT is set): the OTLP metric exporter;
- `kafka` or `file`: OTLP JSON lines in `<home>/metrics/<service>.jsonl`, readable with any JSON tool;
- `none`: instruments exist but nothing is exported.

The export interval is the SDK's OTEL_METRIC_EXPORT_INTERVAL (milliseconds), 10 s when unset.
Metric attributes are the service and instance names, never an event's content.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from bulwark import __version__
from bulwark.health import ServiceStats
from bulwark.settings import CommonSettings
from bulwark.tracing import _sink

log = logging.getLogger(__name__)

# Buckets of every millisecond histogram (events, predictions, gRPC calls): sub-millisecond cache hits and
# transforms up to minute-long training; one set, so histograms of different services compare.
LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 60000)


@dataclass
class MeteredStats(ServiceStats):
    """`ServiceStats` that also records every latency sample in the `bulwark.event.duration` histogram."""

    def observe_latency(self, ms: float) -> None:
        """Fold the sample into the moving average and record it in the histogram."""
        super().observe_latency(ms)
        histogram: Histogram | None = getattr(self, "_histogram", None)
        if histogram is not None:
            histogram.record(ms, getattr(self, "_attributes", {}))


class FileMetricExporter(MetricExporter):
    """Writes each export as one OTLP JSON `ExportMetricsServiceRequest` line."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        from google.protobuf.json_format import MessageToJson
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        line = MessageToJson(encode_metrics(metrics_data), indent=None)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self._fh.close()


def _exporter(service: str, settings: CommonSettings) -> MetricExporter | None:
    sink = _sink(settings)
    if sink == "none":
        return None
    if sink == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter  # type: ignore[assignment]
        return OTLPMetricExporter()
    return FileMetricExporter(settings.home / "metrics" / f"{service}.jsonl")


def setup_metrics(service: str, settings: CommonSettings, stats: ServiceStats) -> MeterProvider:
    """Install the global meter provider for `service` and its instruments over `stats`."""
    resource = Resource.create({
        "service.name": os.environ.get("OTEL_SERVICE_NAME", f"bulwark-{service}"),
        "service.namespace": "bulwark",
        "service.instance.id": settings.instance_id,
        "service.version": __version__,
    })
    readers = []
    exporter = _exporter(service, settings)
    if exporter is not None:
        interval = int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "10000"))
        readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=interval))
    provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(provider)
    instrument(provider.get_meter("bulwark", __version__), service, settings.instance_id, stats)
    return provider


def instrument(meter: metrics.Meter, service: str, instance: str, stats: ServiceStats) -> None:
    """Create the service's instruments on `meter`, reading `stats`."""
    attrs = {"bulwark.service": service, "bulwark.instance": instance}

    def counter(field: str) -> callable:  # type: ignore[valid-type]
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(getattr(stats, field), attrs)
        return observe

    meter.create_observable_counter("bulwark.events.handled", [counter("handled")], unit="{event}",
                                    description="Events a handler finished")
    meter.create_observable_counter("bulwark.events.dead_lettered", [counter("dead_lettered")], unit="{event}",
                                    description="Events sent to the dead-letter topic")
    meter.create_observable_counter("bulwark.events.errors", [counter("errors")], unit="{event}",
                                    description="Handler failures (unexpected exceptions)")
    meter.create_observable_counter("bulwark.retries", [counter("retries")], unit="{retry}",
                                    description="Back-offs after an infrastructure failure")

    def lag(_: CallbackOptions) -> Iterable[Observation]:
        if stats.lag >= 0:
            yield Observation(stats.lag, attrs)

    meter.create_observable_gauge("bulwark.consumer.lag", [lag], unit="{record}",
                                  description="Records behind the partitions' end (approximate on Tansu)")
    histogram = meter.create_histogram("bulwark.event.duration", unit="ms",
                                       description="Handling time per event, averaged over its batch",
                                       explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_MS))
    stats._histogram = histogram  # type: ignore[attr-defined]
    stats._attributes = attrs  # type: ignore[attr-defined]
