"""The front door's metrics: outcomes, the model attribute's rule, the heartbeat's counts."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from bulwark.errors import BulwarkError, InvalidArgumentError, Reason
from bulwark.guard.online import Verdict
from bulwark.health import ServiceStats
from bulwark.meters import LATENCY_BUCKETS_MS
from services.inference.dataplane import PredictOutput
from services.inference.meters import DoorMeters


def answer(model: str, *, cached: bool, ms: float, action: str = "allow") -> PredictOutput:
    return PredictOutput("r", model, 3, "fraud", [0.2, 0.8], ["legitimate", "fraud"], cached,
                         Verdict(action=action), "live", ms)


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    out: dict[str, list] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = list(m.data.data_points)
    return out


def test_answers_and_errors_are_counted_by_outcome_and_answers_timed() -> None:
    reader = InMemoryMetricReader()
    stats = ServiceStats()
    meters = DoorMeters("inference", "i-1", stats, MeterProvider(metric_readers=[reader]).get_meter("t"))
    meters.record(["fraud", "fraud", "fraud"], [answer("fraud", cached=False, ms=3.0),
                                                answer("fraud", cached=True, ms=0.6),
                                                answer("fraud", cached=True, ms=0.7, action="flag")])
    meters.record(["fraud", "made-up-name", "fraud"], [
        BulwarkError(Reason.UNAVAILABLE, "Triton down"),
        BulwarkError(Reason.NOT_FOUND, "no model made-up-name"),
        BulwarkError(Reason.INTERNAL, "no result")])
    data = points(reader)
    counts = {tuple(sorted(p.attributes.items())): p.value for p in data["bulwark.predictions"]}
    base = (("bulwark.instance", "i-1"), ("bulwark.service", "inference"))
    ok = ("bulwark.model", "fraud"), ("bulwark.outcome", "ok")
    assert counts == {
        tuple(sorted((*base, *ok, ("bulwark.cached", False), ("bulwark.guard", "allow")))): 1,
        tuple(sorted((*base, *ok, ("bulwark.cached", True), ("bulwark.guard", "allow")))): 1,
        tuple(sorted((*base, *ok, ("bulwark.cached", True), ("bulwark.guard", "flag")))): 1,
        # An error for a model this door answers for names it; a name a caller made up never becomes a series.
        tuple(sorted((*base, ("bulwark.model", "fraud"), ("bulwark.outcome", "UNAVAILABLE")))): 1,
        tuple(sorted((*base, ("bulwark.outcome", "NOT_FOUND")))): 1,
        tuple(sorted((*base, ("bulwark.model", "fraud"), ("bulwark.outcome", "INTERNAL")))): 1,
    }
    durations = {p.attributes["bulwark.cached"]: p for p in data["bulwark.prediction.duration"]}
    assert durations[False].count == 1 and durations[False].sum == 3.0
    assert durations[True].count == 2 and abs(durations[True].sum - 1.3) < 1e-9
    assert list(durations[True].explicit_bounds) == list(LATENCY_BUCKETS_MS)
    assert (stats.handled, stats.errors) == (3, 1)  # the heartbeat: answers, and INTERNAL failures only


def test_no_input_value_reaches_an_attribute() -> None:
    reader = InMemoryMetricReader()
    meters = DoorMeters("inference", "i-1", None, MeterProvider(metric_readers=[reader]).get_meter("t"))
    bad = InvalidArgumentError("features.amount: expected a number, got 'alice@example.com'")
    meters.record(["fraud"], [bad])
    meters.record(["fraud"], [answer("fraud", cached=False, ms=2.0)])
    attrs = [p.attributes for pts in points(reader).values() for p in pts]
    assert attrs and not [a for a in attrs if any("alice" in str(v) for v in a.values())]
