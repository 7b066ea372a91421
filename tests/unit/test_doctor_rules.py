"""The doctor's pure rules: when a probe stops waiting, and when a failed instance counts as replaced."""

from __future__ import annotations

from bulwark.doctor.checks import _replaced
from bulwark.doctor.model import DOWN, UP
from bulwark.doctor.probe import _stuck

DATA = ["ingest-anonymizer", "trainer"]
MODEL = ["quantizer", "robustness-guard", "updater"]


def test_probe_waits_while_a_live_hop_could_still_handle_the_canary() -> None:
    assert not _stuck([DATA, MODEL], {}, set())
    # The trainer is down but the anonymizer has not seen the canary yet: keep waiting.
    assert not _stuck([DATA], {}, {"trainer"})
    # The data route waits on a dead trainer, but the model route is still moving.
    assert not _stuck([DATA, MODEL], {"ingest-anonymizer": 1.0}, {"trainer"})


def test_probe_stops_when_every_route_is_through_or_waits_on_a_down_service() -> None:
    assert _stuck([DATA], {"ingest-anonymizer": 1.0}, {"trainer"})
    assert _stuck([DATA, MODEL], {"ingest-anonymizer": 1.0, "trainer": 1.2}, {"quantizer"})
    assert _stuck([DATA], {"ingest-anonymizer": 1.0, "trainer": 1.2}, set())


def test_failed_instance_is_replaced_only_by_an_up_instance_started_after_its_last_beat() -> None:
    beats = [{"instance": "a-new", "started_at": "200"}, {"instance": "b-old", "started_at": "50"}]
    assert _replaced(150.0, beats, {"a-new": UP, "b-old": UP})
    # A frozen member whose partner started before it stopped beating is not replaced: it is missing.
    assert not _replaced(250.0, beats, {"a-new": UP, "b-old": UP})
    # A newer instance that is itself down replaces nothing.
    assert not _replaced(150.0, beats, {"a-new": DOWN, "b-old": UP})


def _span(service: str, at: int, trace: str = "ab" * 16, **attributes: object) -> dict:
    return {"trace_id": trace, "service": service, "status": "unset", "name": f"{service} handle",
            "attributes": dict(attributes), "start_ns": at}


def test_a_reader_beside_the_chain_is_not_mistaken_for_progress() -> None:
    from bulwark.doctor.traces import trace_report
    from bulwark.settings import CommonSettings

    # The updater reads clean events for labels; the trainer never got this one: it stopped before the trainer.
    spans = [_span("producer", 1), _span("ingest-anonymizer", 2), _span("updater", 3)]
    report = trace_report(CommonSettings(), "ab" * 16, spans=spans)
    assert not report.complete
    assert report.last_hop == "ingest-anonymizer" and report.stopped_at == "trainer"
    spans.append(_span("trainer", 4))
    report = trace_report(CommonSettings(), "ab" * 16, spans=spans)
    assert report.complete and report.last_hop == "trainer" and "last hop trainer" in report.detail
