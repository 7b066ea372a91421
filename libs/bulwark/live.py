"""Which version answers: the live version and the rollout in progress, per model, in Redis.

The updater is the only writer; the inference front door, the explainer and the guard read it on every
request (one HGETALL, cached for `ttl_s`), so a promotion or a rollback takes effect with no restart.

Routing is sticky per client key: a client whose key hashes below the canary share is answered by the
candidate for the whole canary (the live version sees a copy, to keep measuring agreement), the others by
the live version; in shadow, the live version answers and the candidate sees a copy of the request.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from bulwark.errors import NotFoundError, UnavailableError
from bulwark.redis_keys import RedisKeys

STAGES = ("none", "shadow", "canary", "full", "paused")


@dataclass
class LiveState:
    """A model's serving state."""

    model: str
    live_version: int | None = None
    candidate: int | None = None
    stage: str = "none"
    share: float = 0.0
    paused_stage: str | None = None
    updated_at: float = 0.0
    epoch: int = 0
    started_at: float = 0.0
    reason: str = ""
    loaded: list[int] = field(default_factory=list)
    rollout_id: int = 0
    stage_started_at: float = 0.0
    # Versions leaving Triton, with when they stopped taking traffic (unloaded after a grace period).
    retiring: dict[str, float] = field(default_factory=dict)

    def to_redis(self) -> dict[str, str]:
        """Hash fields for Redis."""
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_redis(cls, model: str, raw: dict[bytes, bytes]) -> LiveState:
        """Parse the Redis hash (unknown fields are ignored: newer writers may add some)."""
        known = cls.__dataclass_fields__
        values = {k.decode(): json.loads(v) for k, v in raw.items() if k.decode() in known}
        values["model"] = model
        return cls(**values)

    def route(self, client_key: str) -> tuple[int, int | None]:
        """(version that answers, version that gets a shadow copy or None) for a client."""
        if self.live_version is None and self.candidate is None:
            raise NotFoundError(f"model {self.model!r} has no live version yet")
        stage = self.paused_stage if self.stage == "paused" else self.stage
        if self.candidate is not None and stage == "canary" and sticky_fraction(self.model, client_key) < self.share:
            # The live version shadows canary answers, so agreement is still measured during the canary.
            return self.candidate, self.live_version
        if self.candidate is not None and stage == "shadow":
            return self._live_or_candidate(), self.candidate
        if self.candidate is not None and stage == "full":
            return self.candidate, None
        return self._live_or_candidate(), None

    def _live_or_candidate(self) -> int:
        return self.live_version if self.live_version is not None else int(self.candidate)  # type: ignore[arg-type]


def sticky_fraction(model: str, client_key: str) -> float:
    """A number in [0, 1) fixed by (model, client): the same client always lands on the same side."""
    h = hashlib.blake2b(f"{model}|{client_key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class LiveReader:
    """Reads serving states with a short in-process cache (default 0.5 s)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, *, ttl_s: float = 0.5) -> None:
        self._redis = client
        self._keys = keys
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, LiveState]] = {}

    def get(self, model: str) -> LiveState:
        """The model's state (NotFoundError when the model was never deployed)."""
        now = time.monotonic()
        hit = self._cache.get(model)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        state = read_live(self._redis, self._keys, model)
        if state is None:
            raise NotFoundError(f"model {model!r} is not deployed; list models with `bulwark models list`")
        self._cache[model] = (now, state)
        return state

    def invalidate(self, model: str | None = None) -> None:
        """Forget cached states (all, or one model's)."""
        if model is None:
            self._cache.clear()
        else:
            self._cache.pop(model, None)


def write_live(client: redis.Redis, keys: RedisKeys, state: LiveState) -> LiveState:
    """Replace a model's state atomically, bumping its epoch (the updater's only write path)."""
    key = keys.live(state.model)
    try:
        with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = pipe.hget(key, "epoch")
                    state.epoch = (json.loads(current) if current else 0) + 1
                    state.updated_at = time.time()
                    pipe.multi()
                    pipe.delete(key)
                    pipe.hset(key, mapping=state.to_redis())
                    pipe.execute()
                    return state
                except redis.WatchError:
                    continue
    except redis.RedisError as exc:
        raise _unreachable(exc) from None


def read_live(client: redis.Redis, keys: RedisKeys, model: str) -> LiveState | None:
    """The model's state, or None if never deployed (no cache)."""
    try:
        raw = client.hgetall(keys.live(model))
    except redis.RedisError as exc:
        raise _unreachable(exc) from None
    return LiveState.from_redis(model, raw) if raw else None


def _unreachable(exc: redis.RedisError) -> UnavailableError:
    return UnavailableError(f"Redis unreachable for the live version ({type(exc).__name__})")


def as_dict(state: LiveState) -> dict[str, Any]:
    """Plain dict (for events and JSON output)."""
    return asdict(state)
