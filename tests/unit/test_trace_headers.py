"""Trace context in Kafka headers: W3C traceparent, tracestate and baggage, written once and read back; and
the envelope's time stamp."""

from __future__ import annotations

import datetime as dt

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from bulwark.events import utc_now
from bulwark.tracing import _GETTER, _SETTER, extract_context, inject_headers


def _api(ctx=None) -> list[tuple[str, bytes]]:  # noqa: ANN001
    headers: list[tuple[str, bytes]] = [("bulwark-envelope", b"1")]
    propagate.inject(headers, context=ctx, setter=_SETTER)
    return headers


@pytest.mark.parametrize("sampler", [ALWAYS_ON, ALWAYS_OFF], ids=["sampled", "not-sampled"])
def test_inject_writes_the_w3c_context_of_the_current_span(sampler) -> None:  # noqa: ANN001
    tracer = TracerProvider(sampler=sampler).get_tracer("t")
    with tracer.start_as_current_span("s"):
        fast = inject_headers([("bulwark-envelope", b"1")])
        assert fast == _api()
    flags = int(dict(fast)["traceparent"].rsplit(b"-", 1)[1], 16)
    assert flags & 1 == (sampler is ALWAYS_ON)  # the sampled bit tells the next service what was decided


def test_tracestate_and_baggage_travel_like_the_api() -> None:
    span_ctx = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
                           trace_state=TraceState([("vendor", "v1")]))
    ctx = trace.set_span_in_context(NonRecordingSpan(span_ctx))
    assert inject_headers([("bulwark-envelope", b"1")], ctx) == _api(ctx)
    with_bag = baggage.set_baggage("tenant", "t1", ctx)
    headers = inject_headers([], with_bag)
    assert headers == _api(with_bag)[1:] and ("baggage", b"tenant=t1") in headers
    # And what was written reads back as the same context.
    back = trace.get_current_span(extract_context(headers)).get_span_context()
    assert (back.trace_id, back.span_id, back.trace_state.get("vendor")) == (0x1234, 0x5678, "v1")


def test_no_span_writes_no_trace_context() -> None:
    assert inject_headers([("bulwark-envelope", b"1")], trace.set_span_in_context(trace.INVALID_SPAN)) == [
        ("bulwark-envelope", b"1")]


def test_an_existing_traceparent_is_replaced_not_duplicated() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s"):
        headers = inject_headers([("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")])
    assert [k for k, _ in headers].count("traceparent") == 1 and _GETTER.get(headers, "traceparent") != ["00-" + "1" * 32]


def test_utc_now_is_rfc3339_milliseconds_utc() -> None:
    before = dt.datetime.now(dt.timezone.utc)
    stamp = utc_now()
    after = dt.datetime.now(dt.timezone.utc)
    assert len(stamp) == 24 and stamp.endswith("Z")
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after
