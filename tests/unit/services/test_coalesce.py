"""The front door's call coalescing: lone calls go alone, concurrent ones share a batch, nobody is lost."""

from __future__ import annotations

import threading
import time
from typing import Sequence

import pytest

from bulwark.errors import BulwarkError, Reason
from services.inference.coalesce import Call, Coalescer


class Recorder:
    """A serve function that answers each call with its request doubled and remembers the batches; the
    first batch can be held open so that others queue behind it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def __call__(self, calls: Sequence[Call[int, int]]) -> None:
        self.batches.append([c.req for c in calls])
        self.entered.set()
        self.hold.wait(5)
        for c in calls:
            c.result = c.req * 2


def _wait_queued(co: Coalescer, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(co._queue) < n:
        assert time.monotonic() < deadline, "callers did not queue"
        time.sleep(0.001)


def test_a_lone_call_is_served_alone_in_its_own_thread() -> None:
    rec = Recorder()
    co = Coalescer(rec, slots=1, max_batch=8)
    assert [co.call(i, deadline_s=1) for i in range(3)] == [0, 2, 4]
    assert rec.batches == [[0], [1], [2]]


def test_calls_arriving_while_the_slot_is_busy_share_the_next_batch_and_each_gets_its_own_answer() -> None:
    rec = Recorder()
    rec.hold.clear()
    co = Coalescer(rec, slots=1, max_batch=8)
    answers: dict[int, int] = {}
    first = threading.Thread(target=lambda: answers.__setitem__(100, co.call(100, deadline_s=5)))
    first.start()
    assert rec.entered.wait(5)
    others = [threading.Thread(target=lambda i=i: answers.__setitem__(i, co.call(i, deadline_s=5))) for i in range(5)]
    for t in others:
        t.start()
    _wait_queued(co, 5)
    rec.hold.set()
    for t in [first, *others]:
        t.join(5)
    assert answers == {100: 200, **{i: 2 * i for i in range(5)}}
    assert rec.batches[0] == [100]
    assert sorted(rec.batches[1]) == [0, 1, 2, 3, 4]
    assert co._active == 0 and not co._queue


def test_a_batch_never_exceeds_max_batch() -> None:
    rec = Recorder()
    rec.hold.clear()
    co = Coalescer(rec, slots=1, max_batch=2)
    threads = [threading.Thread(target=co.call, args=(0,), kwargs={"deadline_s": 5})]
    threads[0].start()
    assert rec.entered.wait(5)
    threads += [threading.Thread(target=co.call, args=(i,), kwargs={"deadline_s": 5}) for i in range(1, 6)]
    for t in threads[1:]:
        t.start()
    _wait_queued(co, 5)
    rec.hold.set()
    for t in threads:
        t.join(5)
    assert [len(b) for b in rec.batches] == [1, 2, 2, 1]
    assert sorted(x for b in rec.batches for x in b) == list(range(6))


def test_a_failing_batch_answers_every_caller_with_an_error_and_frees_the_slot() -> None:
    def boom(calls: Sequence[Call[int, int]]) -> None:
        raise RuntimeError("triton client exploded")

    co = Coalescer(boom, slots=1, max_batch=8)
    result = co.call(1, deadline_s=1)
    assert isinstance(result, BulwarkError) and result.reason is Reason.INTERNAL
    assert "RuntimeError" in result.message
    assert co._active == 0


def test_each_call_keeps_its_own_deadline_and_identity() -> None:
    seen: list[tuple[str, float]] = []

    def serve(calls: Sequence[Call[int, int]]) -> None:
        now = time.perf_counter()
        for c in calls:
            seen.append((c.identity, c.remaining_s(now)))
            c.result = 0

    co = Coalescer(serve, slots=1, max_batch=8)
    co.call(1, deadline_s=0.5, identity="alice")
    assert seen[0][0] == "alice" and 0.4 < seen[0][1] <= 0.5


@pytest.mark.parametrize("slots,max_batch", [(0, 1), (1, 0)])
def test_settings_below_one_are_refused(slots: int, max_batch: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(lambda calls: None, slots=slots, max_batch=max_batch)
