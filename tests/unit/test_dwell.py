"""The dwell window behind the heartbeat's dwell_p50_ms / dwell_p99_ms."""

from __future__ import annotations

from bulwark.health import DwellWindow, ServiceStats


def test_dwell_percentiles_cover_the_recent_span_only() -> None:
    stats = ServiceStats()
    w = DwellWindow(stats, span_s=10.0)
    for i in range(1000):
        w.add(0.0 + i * 0.001, 500.0)  # an old burst: half a second each
    w.refresh(1.0)
    assert stats.dwell_p99_ms == 500.0
    for i in range(1000):
        w.add(20.0 + i * 0.001, 1.0 + (i % 100) / 10)  # 1.0 .. 10.9 ms, evenly
    w.refresh(21.0)  # the burst is older than the span: gone
    assert stats.dwell_p50_ms == 6.0 and stats.dwell_p99_ms == 10.9


def test_dwell_refreshes_at_most_once_a_second_and_keeps_a_bounded_count() -> None:
    stats = ServiceStats()
    w = DwellWindow(stats, max_events=100)
    w.add(0.0, 1.0)
    w.refresh(5.0)
    w.add(5.1, 99.0)
    w.refresh(5.5)  # within a second of the last refresh: unchanged
    assert stats.dwell_p99_ms == 1.0
    for i in range(500):
        w.add(6.0, 2.0)
    w.refresh(6.5)
    assert stats.dwell_p99_ms == 2.0  # only the last 100 events are kept


def test_status_shows_the_slowest_instances_dwell_only_when_events_flow() -> None:
    from bulwark.stack.health import _dwell

    assert _dwell([{"dwell_p99_ms": "0.0"}, {}]) == ""  # idle, or an older instance without the field
    assert _dwell([{"dwell_p99_ms": "3.25"}, {"dwell_p99_ms": "12.5"}]) == " dwell_p99=12.5ms"
