"""The front door's metrics: every prediction counted by outcome, and the answers' latency.

A gRPC service has no consumer loop to count its work, so the data plane records each item it finishes:

- `bulwark.predictions` (counter): attributes `bulwark.outcome` (`ok`, or the error reason the caller got:
  `INVALID_ARGUMENT`, `NOT_FOUND`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, ...), `bulwark.cached` and
  `bulwark.guard` (`allow` or `flag`) on answers, and `bulwark.model` on answers and on errors for a model
  this door has answered for (never a name a caller made up, so callers cannot grow the metric's series;
  never an input value);
- `bulwark.prediction.duration` (histogram, ms): from the data plane starting the request's batch to its
  answer, by model and cached (a call queued behind a coalesced batch waits before that).

Both go wherever the service's metrics go (`libs/bulwark/meters.py`). The heartbeat's `handled` counts the
answers and `errors` the INTERNAL failures, so `bulwark status` and the doctor see the door's traffic.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

from opentelemetry import metrics

from bulwark.errors import BulwarkError, Reason
from bulwark.health import ServiceStats
from bulwark.meters import LATENCY_BUCKETS_MS


class DoorMeters:
    """Counts and times the data plane's results: about 16 µs per answer with an exporting reader (the SDK's
    aggregation), 0.5% of an uncached answer; no I/O on the request path."""

    def __init__(self, service: str, instance: str, stats: ServiceStats | None = None,
                 meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("bulwark.inference")
        self._count = meter.create_counter("bulwark.predictions", unit="{prediction}",
                                           description="Predictions the front door finished, by outcome")
        self._duration = meter.create_histogram(
            "bulwark.prediction.duration", unit="ms", description="Time to answer in the front door",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_MS))
        self._base = {"bulwark.service": service, "bulwark.instance": instance}
        self._stats = stats
        self._lock = threading.Lock()
        self._served: set[str] = set()  # models this door has answered for

    def record(self, models: Sequence[str], results: Sequence[Any]) -> None:
        """One finished item per model name and result (an answer with `latency_ms`, or a BulwarkError)."""
        answered = internal = 0
        for model, result in zip(models, results):
            if isinstance(result, BulwarkError):
                attrs = {**self._base, "bulwark.outcome": result.reason.value}
                if model in self._served:
                    attrs["bulwark.model"] = model
                internal += result.reason is Reason.INTERNAL
                self._count.add(1, attrs)
                continue
            answered += 1
            self._served.add(model)
            timing = {**self._base, "bulwark.model": model, "bulwark.cached": bool(result.cached)}
            self._count.add(1, {**timing, "bulwark.outcome": "ok", "bulwark.guard": result.guard.action})
            self._duration.record(result.latency_ms, timing)
        if self._stats is not None:
            with self._lock:
                self._stats.handled += answered
                self._stats.errors += internal
