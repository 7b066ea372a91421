"""The extraction defence against a real Redis: budgets slide, sweeps are caught and throttled once, real
traffic is not, and every command rides on one pipeline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pytest

from bulwark.errors import Reason
from bulwark.guard.extraction import ExtractionDefence
from bulwark.guard.policy import ExtractionPolicy
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.testing.stack import TestStack
from tests.unit.test_extraction import PROFILE, sweep

pytestmark = pytest.mark.integration


class Clock:
    """A settable clock, so a test walks through an hour's window in no time."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make(stack: TestStack):  # noqa: ANN201
    client = make_redis(stack.settings())
    alerts: list = []

    def build(**policy) -> tuple[ExtractionDefence, Clock]:
        clock = Clock()
        d = ExtractionDefence(ExtractionPolicy(**policy), client, RedisKeys("x" + uuid.uuid4().hex[:8]),
                              on_alert=alerts.append, clock=clock)
        return d, clock

    build.alerts = alerts
    build.redis = client
    return build


def ask(d: ExtractionDefence, client: str, records: list[dict], probs: np.ndarray | None = None,
        ood: list[float] | None = None):  # noqa: ANN201
    """One request as the front door makes it: queue on a pipeline with another command, execute, assess."""
    pipe = d._redis.pipeline(transaction=False)
    pipe.ping()  # the front door's own commands come first; the ticket must find its replies after them
    ticket = d.queue(pipe, "fraud", client, records, PROFILE)
    a = d.assess(ticket, pipe.execute())
    if probs is not None:
        d.observe(a.who, probs, ood or [0.0] * len(records))
    return a


@dataclass
class Answer:
    """The one field of a PredictOutput that hardening changes."""

    probabilities: list[float]


REAL = [e.payload for e in ReferenceGenerator(seed=5).events(2000)]


def test_budget_rejects_past_the_limit_and_frees_as_the_window_slides(make) -> None:
    d, clock = make(budget=100, window_s=600, buckets=6, detect=False)
    for i in range(10):
        assert ask(d, "c1", REAL[i * 10:(i + 1) * 10]).reject is None
    over = ask(d, "c1", REAL[:1])
    assert over.reject is not None and over.reject.reason is Reason.RESOURCE_EXHAUSTED
    assert "at most 100 queries per 600 s" in over.reject.message
    assert ask(d, "c2", REAL[:1]).reject is None  # another client has its own budget
    clock.now += 300  # half the window later the old queries still count
    assert ask(d, "c1", REAL[:1]).reject is not None
    clock.now += 400  # past the window: the buckets that held them have slid out
    assert ask(d, "c1", REAL[:1]).reject is None


def test_a_sweep_is_detected_throttled_and_alerted_once(make) -> None:
    d, _ = make(min_queries=200)
    verdicts = [ask(d, "thief", sweep(50, seed=i)) for i in range(6)]
    assert [v.throttled for v in verdicts[:3]] == [False] * 3  # under min_queries, nobody is judged
    tripped = next(v for v in verdicts if v.throttled)
    assert tripped.queries >= 200 and any(r.startswith("coverage") for r in tripped.reasons)
    assert len(make.alerts) == 1
    alert = make.alerts[0]
    assert alert.payload["kind"] == "guard.extraction" and alert.payload["evidence"]["distinct_cells"] >= 150
    assert "thief" not in str(alert.to_dict())  # only the hashed client leaves the front door
    # Throttled: label-only answers, then at most throttle_per_minute queries a minute.
    assert d.harden(Answer([0.3, 0.7]), verdicts[-1]).probabilities == [0.0, 1.0]
    assert d.harden(Answer([0.3, 0.7]), verdicts[0]).probabilities == [0.3, 0.7]  # the default output is full
    blocked = ask(d, "thief", sweep(70, seed=99))
    assert blocked.reject is not None and "throttled" in blocked.reject.message


def test_real_traffic_is_never_flagged_at_ten_times_the_judging_threshold(make) -> None:
    d, _ = make(min_queries=200)
    rng = np.random.default_rng(0)
    for i in range(0, 2000, 50):
        # Confident answers (as the fraud model gives for almost all real traffic), a few near the boundary.
        p1 = np.clip(rng.beta(0.3, 6, size=50), 0, 1)
        a = ask(d, "shop", REAL[i:i + 50], np.stack([1 - p1, p1], axis=1), list(rng.uniform(0, 1.2, 50)))
        assert not a.throttled and a.reject is None, a.reasons
    assert a.queries == 2000 and make.alerts == []


def test_out_of_distribution_and_boundary_shares_mark_a_client(make) -> None:
    d, _ = make(min_queries=100, coverage_cells=10_000)  # coverage alone would never fire here
    probs = np.tile([[0.52, 0.48]], (50, 1))
    seen = [ask(d, "prober", REAL[i * 50:(i + 1) * 50], probs, [3.0] * 50) for i in range(3)]
    # The model-side counts of a request arrive with the next one: the second request (100 queries) trips.
    assert [a.throttled for a in seen] == [False, True, True] and seen[2].reject is not None
    assert any("near-boundary share 0.50" in r for r in seen[1].reasons)
    assert any("out-of-distribution share 0.50" in r for r in seen[1].reasons)


def test_volume_alone_marks_a_client(make) -> None:
    d, _ = make(min_queries=10, volume=300, coverage_cells=10_000)
    for i in range(0, 300, 100):
        a = ask(d, "bulk", REAL[i:i + 100])
    assert a.throttled and a.reasons == ["volume: 300 queries in 3600 s (limit 300)"]


def test_a_sweep_of_single_queries_is_judged_on_the_query_that_reaches_min_queries(make) -> None:
    """Cells are counted only once a client can be judged (and then at most every second or 5% more
    queries): a one-query-at-a-time sweep still trips on the very query that reaches `min_queries`."""
    d, _ = make(min_queries=200)
    queries = sweep(260, seed=3)
    verdicts = [ask(d, "thief", [q]) for q in queries]
    tripped = next(i for i, v in enumerate(verdicts) if v.throttled)
    assert tripped == 199 and verdicts[tripped].cells >= 150
