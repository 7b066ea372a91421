"""Model-extraction defence for the front door: query budgets, output hardening, detection and throttling.

A client that wants to copy a model sends many queries and trains a surrogate on the answers (Tramèr et
al., "Stealing Machine Learning Models via Prediction APIs", USENIX Security 2016; Orekondy et al.,
"Knockoff Nets", CVPR 2019). Four controls answer it, all per client and all in Redis, so every front-door
replica sees the same counts:

- a query budget over a sliding window (`window_s`, counted in `buckets` sub-windows: the window slides by
  one sub-window), separate from the guard's one-second burst limit; past it: RESOURCE_EXHAUSTED;
- output hardening: `full` probabilities, `rounded` to `round_digits`, or `label` only (a one-hot vector),
  so each answer carries less of the decision surface;
- detection of extraction-like traffic over the window: volume, coverage of the input space (distinct cells
  of a coarse grid over the numeric fields' training ranges, counted with a HyperLogLog), and the shares of
  out-of-distribution and near-boundary queries (the guard's OOD score; the gap between the two highest
  probabilities). Ordinary clients ask about ordinary cases; an extraction attack spreads over the input
  space and probes the boundary;
- a detected client gets one `guard.extraction` alert and is throttled for `throttle_s`: at most
  `throttle_per_minute` queries and label-only answers.

A request's bookkeeping is one server-side script (`_ACCOUNT`: count, add cells, read the window) on the
front door's own pipeline, so it costs one command in the cache lookup's round trip, not twenty. The
model-side counts of a request (OOD, near-boundary) are only known after Triton answers: they wait in
memory and ride on the client's next request. The client key is hashed before it reaches Redis; with
credentials on, the budget follows the authenticated identity, which the caller cannot change per call.

Counting distinct cells merges the window's twelve HyperLogLogs (about 0.15 ms of Redis time, more than the
rest of the lookup), and only the coverage signal reads it, only once a client has `min_queries` in its
window. So the script counts cells only when asked: for a client past `min_queries` whose last count is
older than one second or 5% of its queries (`_CellCounts`); a coverage share can lag that much, no more.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import redis

from bulwark.errors import BulwarkError, Reason
from bulwark.events import Envelope
from bulwark.guard.policy import ExtractionPolicy
from bulwark.redis_keys import RedisKeys

log = logging.getLogger(__name__)


# KEYS: this sub-window's stats hash and cell HyperLogLog, the minute counter, the throttle mark, then the
# window's stats hashes and cell logs (oldest first). ARGV: queries, ood, near-boundary, ttl, sub-windows,
# count cells (0/1), then the request's cells. Returns {queries this minute, window queries, ood,
# near-boundary, distinct cells (-1: not counted), throttled (0/1)}. Every key carries the client's hash
# tag, so the script runs on a cluster too.
_ACCOUNT = """
local n, ood, edge, ttl, b = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local count_cells = ARGV[6] == '1'
redis.call('HINCRBY', KEYS[1], 'n', n)
if ood > 0 then redis.call('HINCRBY', KEYS[1], 'ood', ood) end
if edge > 0 then redis.call('HINCRBY', KEYS[1], 'edge', edge) end
redis.call('EXPIRE', KEYS[1], ttl)
if #ARGV > 6 then
  redis.call('PFADD', KEYS[2], unpack(ARGV, 7))
  redis.call('EXPIRE', KEYS[2], ttl)
end
local minute = redis.call('INCRBY', KEYS[3], n)
redis.call('EXPIRE', KEYS[3], 120)
local sn, so, se = 0, 0, 0
for i = 5, 4 + b do
  local row = redis.call('HMGET', KEYS[i], 'n', 'ood', 'edge')
  sn = sn + (tonumber(row[1]) or 0)
  so = so + (tonumber(row[2]) or 0)
  se = se + (tonumber(row[3]) or 0)
end
local cells = -1
if count_cells then cells = redis.call('PFCOUNT', unpack(KEYS, 5 + b, 4 + 2 * b)) end
local throttled = redis.call('EXISTS', KEYS[4])
return {minute, sn, so, se, cells, throttled}
"""


@dataclass(frozen=True)
class Ticket:
    """Where one request's script reply sits in the pipeline's replies."""

    who: str
    model: str
    at: int


@dataclass
class Assessment:
    """The defence's decision for one client's request."""

    who: str = ""
    queries: int = 0
    cells: int = 0
    ood_share: float = 0.0
    boundary_share: float = 0.0
    throttled: bool = False
    reasons: list[str] = field(default_factory=list)
    reject: BulwarkError | None = None

    def evidence(self) -> dict[str, Any]:
        """Alert evidence: counts and shares, the hashed client, never an input value."""
        return {"client": self.who, "queries": self.queries, "distinct_cells": self.cells,
                "ood_share": round(self.ood_share, 4), "boundary_share": round(self.boundary_share, 4),
                "signals": list(self.reasons)}


ALLOW = Assessment()


class _CellCounts:
    """Per client (this process's view): its window's query count at the last reply, and the last distinct-
    cell count with the query count and time it was taken. Decides when the script should count again."""

    REFRESH_S = 1.0
    REFRESH_SHARE = 0.05
    MAX_CLIENTS = 100_000

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._counted: dict[str, tuple[int, float, int]] = {}  # who -> (queries, time, cells)
        self._lock = threading.Lock()

    def due(self, who: str, adding: int, min_queries: int, now: float) -> bool:
        with self._lock:
            seen = self._seen.get(who)
            if seen is None or seen + adding < min_queries:
                return False  # not judged yet: the count would go unread
            last = self._counted.get(who)
        return (last is None or now - last[1] >= self.REFRESH_S
                or seen - last[0] >= max(1, last[0] * self.REFRESH_SHARE))

    def update(self, who: str, queries: int, cells: int, now: float) -> int:
        """Record a reply; returns the cells to judge by (this reply's, or the last count)."""
        with self._lock:
            if len(self._seen) >= self.MAX_CLIENTS and who not in self._seen:
                self._seen.clear()  # a flood of one-off clients: forget, and count afresh
                self._counted.clear()
            self._seen[who] = queries
            if cells >= 0:
                self._counted[who] = (queries, now, cells)
                return cells
            last = self._counted.get(who)
        return last[2] if last is not None else 0


def cell_ids(records: Sequence[dict[str, Any]], fields: dict[str, Any], bins: int) -> list[str]:
    """The coarse-grid cell of each record: every numeric field's training range [min, max] cut into `bins`
    equal widths, below and above being cells of their own. Categories are left out: they have few values,
    which every client soon covers, while real traffic fills few of the numeric cells (training data is
    skewed) and a sweep of the input space fills them evenly."""
    numeric = [(n, float(f["min"]), float(f["max"])) for n, f in sorted(fields.items()) if f.get("kind") == "numeric"]
    out = []
    for r in records:
        parts = []
        for name, lo, hi in numeric:
            v = r.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                parts.append("x")
                continue
            step = (hi - lo) / bins or 1e-9
            parts.append(str(min(max(int((v - lo) // step), -1), bins)))
        out.append(hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest())
    return out


def near_boundary(probabilities: np.ndarray, margin: float) -> np.ndarray:
    """Rows whose two highest probabilities are within `margin` of each other."""
    top = np.sort(probabilities, axis=1)
    return (top[:, -1] - top[:, -2]) < margin if top.shape[1] > 1 else np.zeros(len(top), dtype=bool)


def harden(probabilities: list[float], mode: str, digits: int) -> list[float]:
    """The probabilities a client sees: all of them, rounded, or a one-hot label."""
    if mode == "label":
        best = int(np.argmax(probabilities))
        return [1.0 if i == best else 0.0 for i in range(len(probabilities))]
    if mode == "rounded":
        return [round(p, digits) for p in probabilities]
    return list(probabilities)


class ExtractionDefence:
    """Per-client budgets, hardening and extraction detection (thread-safe; one per front door)."""

    def __init__(self, policy: ExtractionPolicy, client: redis.Redis, keys: RedisKeys, *,
                 on_alert: Callable[[Envelope], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self._redis = client
        self._keys = keys
        self._on_alert = on_alert
        self._clock = clock
        self._bucket_s = max(policy.window_s // policy.buckets, 1)
        self._pending: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._cells = _CellCounts()

    def who(self, model: str, client: str) -> str:
        """The hashed client id the counters are kept under."""
        return hashlib.blake2b(f"extract|{model}|{client}".encode(), digest_size=12).hexdigest()

    # ------------------------------------------------------------------ before the model
    def queue(self, pipe: redis.client.Pipeline, model: str, client: str, records: Sequence[dict[str, Any]],
              fields: dict[str, Any]) -> Ticket:
        """Queue this request's accounting (one script call) on the caller's pipeline."""
        p, who = self.policy, self.who(model, client)
        now = self._clock()
        bucket = int(now // self._bucket_s)
        with self._lock:
            ood, edge = self._pending.pop(who, (0, 0))
        window = [str(b) for b in range(bucket - p.buckets + 1, bucket + 1)]
        key = self._keys.extraction
        keys = [key(who, "q", str(bucket)), key(who, "c", str(bucket)), key(who, "m", str(int(now // 60))),
                key(who, "t", "on"), *[key(who, "q", b) for b in window], *[key(who, "c", b) for b in window]]
        cells = cell_ids(records, fields, p.grid_bins) if fields else []
        at = len(pipe)
        # EVAL, not EVALSHA: Redis caches the compiled script by its digest, and a pipeline never meets a
        # NOSCRIPT error after a Redis restart.
        count = p.detect and self._cells.due(who, len(records), p.min_queries, now)
        pipe.eval(_ACCOUNT, len(keys), *keys, len(records), ood, edge, p.window_s + self._bucket_s, p.buckets,
                  int(count), *cells)
        return Ticket(who, model, at)

    def assess(self, ticket: Ticket, replies: Sequence[Any]) -> Assessment:
        """Decide from the script's reply (`replies` is the whole pipeline's answer)."""
        p = self.policy
        minute, n, ood, edge, cells, throttled_flag = (int(x) for x in replies[ticket.at])
        cells = self._cells.update(ticket.who, n, cells, self._clock())
        throttled = bool(throttled_flag)
        a = Assessment(ticket.who, n, cells, ood / n if n else 0.0, edge / n if n else 0.0, throttled)
        if n > p.budget:
            a.reject = BulwarkError(Reason.RESOURCE_EXHAUSTED, f"query budget: at most {p.budget} queries per "
                                    f"{p.window_s} s per client; the window slides, retry later")
            return a
        if throttled and minute > p.throttle_per_minute:
            a.reject = BulwarkError(Reason.RESOURCE_EXHAUSTED, "this client is throttled after traffic that looks "
                                    f"like model extraction: at most {p.throttle_per_minute} queries per minute "
                                    f"for {p.throttle_s} s")
            return a
        if not throttled and p.detect and n >= p.min_queries:
            a.reasons = self._signals(a)
            if a.reasons:
                self._trip(ticket, a)
        return a

    def _signals(self, a: Assessment) -> list[str]:
        p, out = self.policy, []
        if a.queries >= p.volume:
            out.append(f"volume: {a.queries} queries in {p.window_s} s (limit {p.volume})")
        if a.cells >= p.coverage_cells and a.cells / a.queries >= p.coverage_share:
            out.append(f"coverage: {a.cells} distinct input cells in {a.queries} queries")
        # Model-side counts lag a request behind; they are judged once some have arrived.
        if a.ood_share >= p.ood_share:
            out.append(f"out-of-distribution share {a.ood_share:.2f} (limit {p.ood_share})")
        if a.boundary_share >= p.boundary_share:
            out.append(f"near-boundary share {a.boundary_share:.2f} (limit {p.boundary_share})")
        return out

    def _trip(self, ticket: Ticket, a: Assessment) -> None:
        """Throttle the client and raise one alert (the NX set makes it one across replicas)."""
        try:
            first = self._redis.set(self._keys.extraction(ticket.who, "t", "on"), "1", ex=self.policy.throttle_s,
                                    nx=True)
        except redis.RedisError:
            return
        a.throttled = True
        if not first:
            return
        log.warning("extraction suspected model=%s client=%s queries=%d signals=%s", ticket.model, ticket.who,
                    a.queries, "; ".join(a.reasons))
        if self._on_alert is None:
            return
        event = Envelope(type="alert", source="inference", subject=ticket.model, payload={
            "kind": "guard.extraction", "severity": "warning", "service": "inference", "model": ticket.model,
            "version": None, "summary": f"client {ticket.who} throttled for {self.policy.throttle_s} s: traffic "
            f"looks like model extraction ({'; '.join(a.reasons)})"[:1024], "evidence": a.evidence()})
        try:
            self._on_alert(event)
        except Exception as exc:  # noqa: BLE001 - alerting never fails an answer
            log.warning("extraction alert not sent error=%s", type(exc).__name__)

    # ------------------------------------------------------------------ after the model
    def observe(self, who: str, probabilities: np.ndarray, ood_scores: Sequence[float]) -> None:
        """Count this request's near-boundary and out-of-distribution answers (sent with the next request)."""
        edge = int(near_boundary(probabilities, self.policy.boundary_margin).sum()) if len(probabilities) else 0
        ood = sum(1 for s in ood_scores if s >= self.policy.ood_score)
        if not (edge or ood):
            return
        with self._lock:
            counts = self._pending.setdefault(who, [0, 0])
            counts[0] += ood
            counts[1] += edge

    def harden(self, out: Any, a: Assessment) -> Any:
        """A copy of a PredictOutput with the probabilities this client may see."""
        mode = "label" if a.throttled else self.policy.output
        if mode == "full":
            return out
        return replace(out, probabilities=harden(out.probabilities, mode, self.policy.round_digits))
