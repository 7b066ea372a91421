"""The model registry in Redis: every version of every model, its lifecycle state, lineage and reports.

A version moves trained → quantized → validated (or rejected) → shadow → canary → live → retired. Each stage
writes its own fields (the trainer creates the entry; the quantizer adds its report; the gate its verdict;
only the updater moves a version past validated). Values are JSON; nothing personal is stored here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from bulwark.errors import NotFoundError, UnavailableError
from bulwark.redis_keys import RedisKeys

STATES = ("trained", "quantized", "validated", "rejected", "shadow", "canary", "live", "retired")


class ModelRegistry:
    """Read and write version entries; every method maps Redis failures to `UnavailableError`."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self._keys = keys

    def next_version(self, model: str) -> int:
        """Allocate the model's next version number (1, 2, ...; Triton's version folders)."""
        try:
            return int(self._redis.incr(self._keys.model_seq(model)))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None

    def record(self, model: str, version: int, **fields: Any) -> None:
        """Create or update a version entry's fields (JSON-encoded)."""
        key = self._keys.model_version(model, str(version))
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(key, mapping={k: json.dumps(v, default=str) for k, v in fields.items()})
            pipe.zadd(self._keys.model_versions(model), {str(version): version}, nx=True)
            pipe.sadd(self._keys.models(), model)
            pipe.execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None

    def set_state(self, model: str, version: int, state: str, *, by: str, reason: str = "", **fields: Any) -> None:
        """Move a version to `state`, appending to its history who did it and why."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        entry = self.get(model, version, missing_ok=True) or {}
        history = entry.get("history", [])
        history.append({"state": state, "at": time.time(), "by": by, "reason": reason})
        self.record(model, version, state=state, state_at=time.time(), history=history, **fields)

    def get(self, model: str, version: int, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """A version's fields, decoded; `NotFoundError` (or None with `missing_ok`) when unknown."""
        try:
            raw = self._redis.hgetall(self._keys.model_version(model, str(version)))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None
        if not raw:
            if missing_ok:
                return None
            raise NotFoundError(f"model {model!r} has no version {version}; list them with `bulwark models versions {model}`")
        out = {k.decode(): json.loads(v) for k, v in raw.items()}
        out.setdefault("model", model)
        out.setdefault("version", version)
        return out

    def versions(self, model: str) -> list[int]:
        """Every version number of a model, ascending."""
        try:
            return [int(v) for v in self._redis.zrange(self._keys.model_versions(model), 0, -1)]
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None

    def models(self) -> list[str]:
        """Every model name."""
        try:
            return sorted(m.decode() for m in self._redis.smembers(self._keys.models()))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None

    def entries(self, model: str) -> list[dict[str, Any]]:
        """Every version entry of a model, ascending."""
        return [e for v in self.versions(model) if (e := self.get(model, v, missing_ok=True))]
