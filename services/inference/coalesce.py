"""Coalescing of concurrent single predictions into batches (group commit).

Sixteen clients calling Predict at once would otherwise cost sixteen Redis round trips and sixteen Triton
calls, each paying Python's per-call cost on the front door's one interpreter. Here a caller that finds a
free slot serves its own call at once; callers that find every slot busy queue, and whoever finishes a
batch hands the queue (up to `max_batch` calls) to the first queued caller, which serves it as one batch:
one Redis pipeline, one Triton request per version. A lone caller never waits for a batch to form, so the
batch-1 latency is unchanged; under load, batches form from what arrived while the slots were busy.

Each caller still gets its own answer or error; rate limits and extraction budgets stay per caller (the
data plane groups a batch by caller). A batch runs under the longest remaining deadline among its calls:
gRPC still ends each call at its own deadline.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from opentelemetry import trace

from bulwark.errors import BulwarkError, Reason

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class Call(Generic[Req, Res]):
    """One caller's request, waiting for its answer or for a batch to serve."""

    req: Req
    deadline_at: float
    identity: str
    context: trace.SpanContext
    done: threading.Event | None = None  # made only for a call that has to wait
    result: Res | BulwarkError | None = None
    lead: list[Call[Req, Res]] | None = None

    def remaining_s(self, now: float) -> float:
        """Seconds left before this call's deadline."""
        return self.deadline_at - now


Serve = Callable[[Sequence[Call[Req, Res]]], None]


class Coalescer(Generic[Req, Res]):
    """Serves concurrent calls in batches; `serve` must set `result` on every call it is given."""

    def __init__(self, serve: Serve, *, slots: int, max_batch: int) -> None:
        if slots < 1 or max_batch < 1:
            raise ValueError("slots and max_batch must be at least 1")
        self._serve = serve
        self._slots = slots
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._active = 0
        self._queue: list[Call[Req, Res]] = []
        self.batches = 0
        self.calls = 0

    def call(self, req: Req, *, deadline_s: float, identity: str = "") -> Res | BulwarkError:
        """Serve `req`, alone or in a batch with other concurrent calls; returns its answer or error."""
        call: Call[Req, Res] = Call(req, time.perf_counter() + deadline_s, identity,
                                    trace.get_current_span().get_span_context())
        with self._lock:
            if self._active < self._slots:
                self._active += 1
                batch: list[Call[Req, Res]] | None = [call]
            else:
                call.done = threading.Event()
                self._queue.append(call)
                batch = None
        if batch is None:
            call.done.wait()  # type: ignore[union-attr]
            if call.lead is None:
                return call.result  # type: ignore[return-value]  # served in someone else's batch
            batch = call.lead
        try:
            self._serve(batch)
        except Exception as exc:  # noqa: BLE001 - every waiting caller must get an answer
            for c in batch:
                if c.result is None:
                    c.result = BulwarkError(Reason.INTERNAL, f"batch failed: {type(exc).__name__}")
        finally:
            self._hand_on(batch, call)
        return call.result  # type: ignore[return-value]

    def _hand_on(self, batch: list[Call[Req, Res]], own: Call[Req, Res]) -> None:
        """Wake the batch's other callers, then give the queue to its first caller or free the slot."""
        with self._lock:
            self.batches += 1
            self.calls += len(batch)
            nxt = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
            if not nxt:
                self._active -= 1
        for c in batch:
            if c is not own:
                c.done.set()  # type: ignore[union-attr]  # every call but the server's own waited
        if nxt:
            nxt[0].lead = nxt
            nxt[0].done.set()  # type: ignore[union-attr]
