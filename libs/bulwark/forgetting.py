"""Forgetting that reaches models: which versions were trained on a forgotten subject, and by when they go.

`bulwark forget` puts the subject's pseudonymous id on the forgotten list (Redis set, ids only) and stamps
`forget_since` on every version whose training subjects include it; the updater marks the deadline,
asks for a replacement, rolls it out and purges the carriers (see `services.updater.forgetting`). The
trainer reads the same list and leaves those subjects' events out of every later training set.
"""

from __future__ import annotations

import json
import time

import redis

from bulwark.errors import UnavailableError
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry


class ForgettingLedger:
    """Reads the forgotten list against each version's training subjects (both sets in Redis)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, registry: ModelRegistry) -> None:
        self._redis = client
        self._keys = keys
        self.registry = registry

    def forgotten_count(self) -> int:
        """How many subjects are on the forgotten list."""
        try:
            return int(self._redis.scard(self._keys.forgotten()))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the forgotten list ({type(exc).__name__})") from None

    def carried(self, model: str, version: int) -> int:
        """How many forgotten subjects trained this version (0 once it is purged: its subject set goes)."""
        try:
            return int(self._redis.execute_command("SINTERCARD", 2, self._keys.model_subjects(model, str(version)),
                                                   self._keys.forgotten()))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the forgotten list ({type(exc).__name__})") from None

    def carriers(self, model: str) -> dict[int, int]:
        """Every version of `model` still carrying forgotten subjects, with how many."""
        out = {}
        for v in self.registry.versions(model):
            n = self.carried(model, v)
            if n:
                out[v] = n
        return out

    def stamp(self, model: str, version: int, at: float | None = None) -> None:
        """Record when the version first carried a forgotten subject (the deadline counts from here)."""
        try:
            self._redis.hsetnx(self._keys.model_version(model, str(version)), "forget_since",
                               json.dumps(at or time.time()))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None

    def affected(self, subject: str) -> list[tuple[str, int]]:
        """(model, version) pairs whose training subjects include `subject` (not yet purged)."""
        try:
            return [(m, v) for m in self.registry.models() for v in self.registry.versions(m)
                    if self._redis.sismember(self._keys.model_subjects(m, str(v)), subject)]
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None

    def drop_subjects(self, model: str, version: int) -> None:
        """Delete a purged version's subject set (pseudonymous ids are still personal data)."""
        try:
            self._redis.delete(self._keys.model_subjects(model, str(version)))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the model registry ({type(exc).__name__})") from None
