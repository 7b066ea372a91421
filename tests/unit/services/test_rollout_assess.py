"""The rollout rule: which bound a candidate breaks, and not before there is enough evidence."""

from __future__ import annotations

import pytest

from services.updater.rollout import assess
from services.updater.settings import UpdaterSettings
from services.updater.signals import Signals

# Defaults: min_signal_requests 20, min_agreement 0.9, error +0.02, p99 x3, flags +0.05, accuracy -0.05.
OWN = UpdaterSettings()


def healthy(**kw: float) -> Signals:
    return Signals(**{"requests": 100, "compared": 100, "agreed": 100, "p99_ms": 4.0, **kw})


def test_a_candidate_like_the_live_version_breaks_nothing() -> None:
    a = assess(OWN, healthy(), healthy(compared=0, agreed=0))
    assert a.regression is None and a.agreement == 1.0 and a.compared == 100


@pytest.mark.parametrize(("cand", "live", "bound"), [
    (healthy(errors=5), healthy(errors=1), "error rate 0.050 vs live 0.010"),
    (healthy(p99_ms=40.0), healthy(p99_ms=10.0), "latency p99 40.0 ms vs live 10.0 ms"),
    (healthy(flags=10), healthy(flags=2), "guard flag rate 0.100 vs live 0.020"),
    (healthy(agreed=80), healthy(compared=0, agreed=0), "agreement with the live version 0.800 below 0.9"),
    (healthy(labeled=50, correct=40), healthy(labeled=50, correct=45),
     "accuracy on labeled events 0.800 vs live 0.900"),
])
def test_each_bound_names_itself_and_the_figures(cand: Signals, live: Signals, bound: str) -> None:
    assert assess(OWN, cand, live).regression == bound


def test_no_verdict_before_the_minimum_evidence() -> None:
    few = Signals(requests=19, errors=19, compared=19, agreed=0, p99_ms=500.0)
    assert assess(OWN, few, healthy(compared=0, agreed=0)).regression is None
    # Agreement counts both sides' comparisons (the live version shadows the canary too): 10 + 10 is enough.
    a = assess(OWN, Signals(requests=10, compared=10, agreed=0), Signals(requests=10, compared=10, agreed=10))
    assert a.compared == 20 and a.regression == "agreement with the live version 0.500 below 0.9"


def test_latency_needs_a_slow_candidate_not_only_a_ratio() -> None:
    # 3x a 1 ms live p99 is still under 5 ms: not a regression worth a rollback.
    assert assess(OWN, healthy(p99_ms=4.5), healthy(p99_ms=1.0)).regression is None
