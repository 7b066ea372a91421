"""Live signals per version during a rollout, from inference.log and labeled clean events, kept in Redis.

For each (model, version, rollout epoch): requests, errors, guard flags, latencies (the last 2,000), shadow
comparisons and agreements with the live answer, and labeled outcomes (a clean event whose transaction id is
the request id of a logged prediction). A new rollout starts a new epoch, so earlier traffic never counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from bulwark.errors import UnavailableError
from bulwark.redis_keys import RedisKeys

SERVICE = "updater"
_LATENCIES = 2000
_PREDICTION_TTL_S = 6 * 3600


@dataclass
class Signals:
    """One version's figures over the current rollout."""

    requests: int = 0
    errors: int = 0
    flags: int = 0
    compared: int = 0
    agreed: int = 0
    labeled: int = 0
    correct: int = 0
    p99_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        """Errors per request."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def flag_rate(self) -> float:
        """Guard flags per request."""
        return self.flags / self.requests if self.requests else 0.0

    @property
    def agreement(self) -> float:
        """Share of shadow answers equal to the live answer (1.0 with none)."""
        return self.agreed / self.compared if self.compared else 1.0

    @property
    def accuracy(self) -> float:
        """Accuracy on labeled events (NaN with none)."""
        return self.correct / self.labeled if self.labeled else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain figures for events and ModelAdmin."""
        return {"requests": self.requests, "errors": self.errors, "error_rate": self.error_rate, "flags": self.flags,
                "flag_rate": self.flag_rate, "compared": self.compared, "agreement": self.agreement,
                "labeled": self.labeled, "accuracy": None if not self.labeled else self.accuracy,
                "latency_p99_ms": self.p99_ms}


class SignalStore:
    """Counts records into per-version hashes; reads them back as `Signals`."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self._keys = keys

    def _key(self, model: str, version: int, epoch: int) -> str:
        return self._keys.state(SERVICE, f"signals:{model}:{version}:{epoch}")

    def observe(self, record: dict[str, Any], epoch: int) -> None:
        """Count one inference.log record into the versions it concerns."""
        model, version = record["model"], int(record["version"])
        try:
            pipe = self._redis.pipeline(transaction=False)
            key = self._key(model, version, epoch)
            pipe.hincrby(key, "requests", 1)
            if record.get("error"):
                pipe.hincrby(key, "errors", 1)
            if (record.get("guard") or {}).get("action") == "flag":
                pipe.hincrby(key, "flags", 1)
            pipe.lpush(key + ":lat", record.get("latency_ms", 0.0))
            pipe.ltrim(key + ":lat", 0, _LATENCIES - 1)
            for k in (key, key + ":lat"):
                pipe.expire(k, 7 * 24 * 3600)
            shadow = record.get("shadow")
            if shadow and shadow.get("version"):
                skey = self._key(model, int(shadow["version"]), epoch)
                pipe.hincrby(skey, "requests", 1)
                if shadow.get("error"):
                    pipe.hincrby(skey, "errors", 1)
                else:
                    pipe.hincrby(skey, "compared", 1)
                    if shadow.get("label") == record.get("label"):
                        pipe.hincrby(skey, "agreed", 1)
                    pipe.lpush(skey + ":lat", shadow.get("latency_ms", 0.0))
                    pipe.ltrim(skey + ":lat", 0, _LATENCIES - 1)
            # Remember the prediction, so a label arriving later can be scored against it.
            pipe.set(self._keys.state(SERVICE, f"pred:{record['request_id']}"),
                     f"{model}|{version}|{epoch}|{record.get('label', '')}", ex=_PREDICTION_TTL_S)
            pipe.execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for rollout signals ({type(exc).__name__})") from None

    def label(self, request_id: str, truth: str) -> None:
        """Score the prediction logged under `request_id` against its true label, if one was logged."""
        try:
            raw = self._redis.get(self._keys.state(SERVICE, f"pred:{request_id}"))
            if raw is None:
                return
            model, version, epoch, predicted = raw.decode().split("|", 3)
            key = self._key(model, int(version), int(epoch))
            pipe = self._redis.pipeline(transaction=False)
            pipe.hincrby(key, "labeled", 1)
            if predicted == truth:
                pipe.hincrby(key, "correct", 1)
            pipe.execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for rollout signals ({type(exc).__name__})") from None

    def read(self, model: str, version: int, epoch: int) -> Signals:
        """The version's figures for this rollout epoch."""
        key = self._key(model, version, epoch)
        try:
            raw = self._redis.hgetall(key)
            lat = [float(x) for x in self._redis.lrange(key + ":lat", 0, -1)]
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for rollout signals ({type(exc).__name__})") from None
        c = {k.decode(): int(v) for k, v in raw.items()}
        return Signals(c.get("requests", 0), c.get("errors", 0), c.get("flags", 0), c.get("compared", 0),
                       c.get("agreed", 0), c.get("labeled", 0), c.get("correct", 0),
                       float(np.percentile(lat, 99)) if lat else 0.0)
