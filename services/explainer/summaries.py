"""The asynchronous mode: explain a sample of inference.log and keep global feature importance per version.

For every `inference.record`, the handler keeps the logged input (pseudonymous features or scrubbed text)
under its request id, so `Explain(request_id=...)` finds it for `BULWARK_EXPLAINER_REQUEST_TTL_S`. A sample
of records (a hash of the request id below `sample_share`: a redelivered record is sampled the same way) is
explained toward the positive (last) class, so signs agree across records, and each feature's |attribution|
and attribution are added to the version's summary hash. The addition and a per-record marker are one Lua
script: a redelivered record adds nothing. Every `summary_window` explained records of a version, an
`explanation.summary` event carries the running means to the `explanations` topic for the updater and the
dashboards; its id is derived from (model, version, count), so a redelivery re-publishes the same id.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Iterable

import redis

from bulwark.bus import Context, Output
from bulwark.errors import BulwarkError, Reason, UnavailableError
from bulwark.events import Envelope, derived_id
from bulwark.health import ServiceStats
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from services.explainer.dataplane import SERVICE, ExplainerDataPlane, ExplainInput, ExplainOutput
from services.explainer.settings import ExplainerSettings

log = logging.getLogger(__name__)
EVENT_TYPE = "explanation.summary"

# KEYS: marker, summary hash. ARGV: marker TTL, summary TTL, then field/increment pairs. Returns the count
# this record made (the first time, or the one remembered in its marker on a redelivery).
_ADD = """
local prev = redis.call('GET', KEYS[1])
if prev then return tonumber(prev) end
local n = redis.call('HINCRBY', KEYS[2], 'n', 1)
for i = 3, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], n, 'EX', ARGV[1])
return n
"""

# Reasons that say "this version cannot be explained here any more" (retired, never deployed here), not
# "this record is malformed": such records are skipped and counted, never dead-lettered.
_SKIP = {Reason.NOT_FOUND, Reason.FAILED_PRECONDITION}


def sampled(request_id: str, share: float) -> bool:
    """Whether a record is in the explained sample (stable across processes and redeliveries)."""
    h = int.from_bytes(hashlib.blake2b(f"explain|{request_id}".encode(), digest_size=8).digest(), "big")
    return h / 2**64 < share


def increments(out: ExplainOutput) -> dict[str, float]:
    """Summary-hash increments for one explanation: `abs:<feature>` and `sum:<feature>` (tokens that repeat
    in one text count once per occurrence)."""
    inc: dict[str, float] = {}
    for name, value in out.attributions:
        inc[f"abs:{name}"] = inc.get(f"abs:{name}", 0.0) + abs(value)
        inc[f"sum:{name}"] = inc.get(f"sum:{name}", 0.0) + value
    return inc


def importance(raw: dict[str, float], top: int) -> tuple[int, list[dict[str, Any]]]:
    """(records, strongest-first means) from a summary hash's decoded fields."""
    n = int(raw.get("n", 0))
    if n <= 0:
        return 0, []
    rows = [{"feature": k[4:], "mean_abs": v / n, "mean": raw.get(f"sum:{k[4:]}", 0.0) / n}
            for k, v in raw.items() if k.startswith("abs:")]
    rows.sort(key=lambda r: (-r["mean_abs"], r["feature"]))
    return n, rows[:top]


class SummaryHandler:
    """Consumes inference.log: remembers every record, explains a sample, publishes summaries."""

    name = SERVICE
    event_types = {"inference.record"}

    def __init__(self, settings: CommonSettings, own: ExplainerSettings, plane: ExplainerDataPlane,
                 client: redis.Redis, stats: ServiceStats | None = None) -> None:
        self.topics = [settings.topics.inference_log]
        self._settings = settings
        self._own = own
        self._plane = plane
        self._redis = client
        self._keys = RedisKeys(settings.redis_prefix)
        self._stats = stats or ServiceStats()
        self._add = client.register_script(_ADD)

    def handle(self, event: Envelope, ctx: Context) -> Iterable[Output]:
        """Remember the record; for a sampled one, explain it and maybe publish the version's summary."""
        p = event.payload
        if p.get("error"):
            return []
        self._plane.remember(p)
        if not sampled(p["request_id"], self._own.sample_share):
            return []
        model, version = p["model"], int(p["version"])
        try:
            positive = self._plane.loader.get(model, version).classes[-1]
            out = self._plane.explain(ExplainInput(model=model, version=version, features=p.get("features") or {},
                                                   text=p.get("text", ""), method=self._own.summary_method,
                                                   target=positive))
        except BulwarkError as exc:
            if exc.retryable or exc.reason not in _SKIP:
                raise  # retried (infrastructure) or dead-lettered (a malformed record)
            self._bump("summary_skipped")
            log.info("record not explained event_id=%s model=%s version=%d reason=%s", event.id, model, version,
                     exc.reason.value)
            return []
        n = self._count(event.id, out)
        self._bump("summary_explained")
        if n % self._own.summary_window:
            return []
        return [self._summary(out, n)]

    def _count(self, event_id: str, out: ExplainOutput) -> int:
        args: list[Any] = [self._settings.idempotence_ttl_s, self._own.summary_ttl_s]
        for k, v in increments(out).items():
            args += [k, repr(float(v))]
        try:
            return int(self._add(keys=[self._keys.explanation_counted(event_id),
                                       self._keys.explanation_summary(out.model, str(out.version))], args=args))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for explanation summaries ({type(exc).__name__})") from None

    def _summary(self, out: ExplainOutput, n: int) -> Output:
        try:
            raw = self._redis.hgetall(self._keys.explanation_summary(out.model, str(out.version)))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for explanation summaries ({type(exc).__name__})") from None
        explained, rows = importance({k.decode(): float(v) for k, v in raw.items()}, self._own.summary_top)
        payload = {"model": out.model, "version": out.version,
                   "family": out.family, "method": out.method,
                   "baseline_kind": out.baseline_kind, "explained": max(explained, n),
                   "window": self._own.summary_window,
                   "sample_share": self._own.sample_share, "importance": rows}
        event = Envelope(type=EVENT_TYPE, source=SERVICE, subject=out.model, payload=payload,
                         id=derived_id(EVENT_TYPE, out.model, str(out.version), str(n)))
        log.info("summary published model=%s version=%d explained=%d", out.model, out.version, n)
        return Output(self._settings.topics.explanations, event)

    def _bump(self, name: str) -> None:
        self._stats.extra[name] = str(int(self._stats.extra.get(name, "0")) + 1)
        self._stats.extra["summary_at"] = str(round(time.time(), 3))
