"""Drift: per model version, windows of inference.log records binned like the training profile; when a window
closes, its population stability index per feature decides. Drift raises an `alerts` event and (at most once
per cooldown) a `training.requests` event.

Window state lives in Redis (bin counts in one hash per version), so it survives restarts and is shared by
every instance; the instance whose increment makes the count exactly the window size closes the window, so
exactly one decision is taken per window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import redis

from bulwark.bus import Output
from bulwark.errors import UnavailableError
from bulwark.events import Envelope, derived_id
from bulwark.guard.drift import psi
from bulwark.guard.policy import DriftPolicy
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from bulwark.versions import VersionCatalog

SERVICE = "robustness-guard"


def bin_of(field: dict[str, Any], value: Any) -> str | None:
    """The profile bin a value falls in (numbers: decile index; categories: the value or <other>)."""
    if field["kind"] == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        edges = field.get("edges") or []
        if len(edges) < 2:
            return None
        return str(int(np.clip(np.searchsorted(edges, float(value), side="right") - 1, 0, len(edges) - 2)))
    key = str(value)
    return key if key in field.get("shares", {}) else "<other>"


def window_psi(fields: dict[str, Any], counts: dict[str, int]) -> dict[str, float]:
    """PSI per field from a closed window's bin counts."""
    out = {}
    for name, field in fields.items():
        if field["kind"] == "numeric":
            n_bins = max(len(field.get("edges") or []) - 1, 0)
            if not n_bins:
                continue
            actual = np.array([counts.get(f"{name}|{i}", 0) for i in range(n_bins)], dtype=np.float64)
            expected = np.asarray(field["shares"], dtype=np.float64)
        else:
            cats = list(field["shares"]) + ["<other>"]
            actual = np.array([counts.get(f"{name}|{c}", 0) for c in cats], dtype=np.float64)
            expected = np.array([field["shares"].get(c, 0.0) for c in cats])
        if actual.sum() > 0:
            out[name] = psi(expected, actual / actual.sum())
    return out


class DriftMonitor:
    """Counts each record into its version's window and decides when the window closes."""

    def __init__(self, settings: CommonSettings, policy: DriftPolicy, client: redis.Redis, catalog: VersionCatalog,
                 *, cooldown_s: float = 600.0) -> None:
        self.settings = settings
        self.policy = policy
        self._redis = client
        self._keys = RedisKeys(settings.redis_prefix)
        self._catalog = catalog
        self._cooldown = cooldown_s

    def observe(self, event: Envelope) -> list[Output]:
        """Count one inference record; returns the alert and training request when its window drifted."""
        p = event.payload
        features = p.get("features")
        if not features:
            return []  # text-family records carry no tabular features to compare
        model, version = p["model"], int(p["version"])
        served = self._catalog.get(model, version)
        fields = (served.profile or {}).get("fields") or {}
        key = self._keys.state(SERVICE, f"drift:{model}:{version}")
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name, field in fields.items():
                b = bin_of(field, features.get(name))
                if b is not None:
                    pipe.hincrby(key, f"{name}|{b}", 1)
            pipe.hincrby(key, "__n", 1)
            n = pipe.execute()[-1]
            if n != self.policy.window:
                return []
            closing = f"{key}:closing:{event.id}"
            self._redis.rename(key, closing)
            counts = {k.decode(): int(v) for k, v in self._redis.hgetall(closing).items()}
            self._redis.delete(closing)
            window_no = self._redis.incr(self._keys.state(SERVICE, f"drift-windows:{model}:{version}"))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for drift windows ({type(exc).__name__})") from None
        scores = window_psi(fields, counts)
        drifted = {f: round(v, 4) for f, v in scores.items() if v > self.policy.psi_threshold}
        if len(drifted) < self.policy.min_features:
            return []
        return self._outputs(model, version, int(window_no), scores, drifted)

    def _outputs(self, model: str, version: int, window: int, scores: dict[str, float],
                 drifted: dict[str, float]) -> list[Output]:
        tag = f"{model}-v{version}-w{window}"
        listing = ", ".join(f"{f} {v:.2f}" for f, v in sorted(drifted.items(), key=lambda kv: -kv[1]))
        alert = Envelope(type="alert", source=SERVICE, subject=model, id=derived_id("drift", tag, "alert"), payload={
            "kind": "drift.detected", "severity": "warning", "service": SERVICE, "model": model, "version": str(version),
            "summary": f"{model} v{version}: {len(drifted)} feature(s) drifted in window {window} (PSI {listing}; "
                       f"threshold {self.policy.psi_threshold})",
            "evidence": {"window": window, "records": self.policy.window, "psi": {k: round(v, 4) for k, v in scores.items()},
                         "threshold": self.policy.psi_threshold}})
        outputs = [Output(self.settings.topics.alerts, alert)]
        cooldown = self._keys.state(SERVICE, f"drift-retrain:{model}")
        if self._redis.set(cooldown, tag, nx=True, ex=int(self._cooldown)):
            request = Envelope(type="training.request", source=SERVICE, subject=model,
                               id=derived_id("drift", tag, "retrain"), payload={
                                   "model": model, "reason": "drift", "requested_by": SERVICE,
                                   "detail": f"drift in window {window} of v{version}: {listing}"[:1024],
                                   "parent_version": version})
            outputs.append(Output(self.settings.topics.training_requests, request))
        return outputs
