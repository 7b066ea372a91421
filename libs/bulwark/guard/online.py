"""The online guard: checks the inference front door runs on every request, in process.

Before the model: a per-client rate limit (a counter in Redis, sent in the same round trip as the front
door's cache lookup, so it costs no extra network trip) and range checks against the version's training
profile (numbers far outside the training range, categories never seen, fractional values
where training only had whole numbers). After the model (Triton returns the logits and the last hidden
layer): the out-of-distribution distance in hidden space and the adversarial detector's probability, both
from the version's signed gate report. The policy turns scores into allow, flag (served, marked, alerted)
or reject. The training profile and the detector come with the version, so the guard follows whatever
version answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import redis

from bulwark.artifacts import verify_folder
from bulwark.crypto.signing import Verifier
from bulwark.errors import Reason
from bulwark.guard.detector import AdversarialDetector, HiddenSpace, constraint_features, detector_features
from bulwark.guard.policy import OnlinePolicy
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.versions import ServedVersion

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    """The guard's decision about one input; `code` is the failure reason when rejected."""

    action: str = "allow"
    ood_score: float = 0.0
    adversarial_score: float = 0.0
    reasons: list[str] = field(default_factory=list)
    code: Reason = Reason.FAILED_PRECONDITION

    def escalate(self, action: str, reason: str, code: Reason | None = None) -> None:
        """Raise the action (allow < flag < reject) and record why."""
        order = {"allow": 0, "flag": 1, "reject": 2}
        if order[action] > order[self.action]:
            self.action = action
            if code is not None:
                self.code = code
        self.reasons.append(reason)


@dataclass
class GuardProfile:
    """What the guard knows about one version."""

    fields: dict[str, Any]
    integer_fields: set[str]
    hidden: HiddenSpace | None
    detector: AdversarialDetector | None
    detector_integer_fields: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool, float, float, bool, frozenset[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Precomputed per version: (field, numeric?, low, high, whole numbers only?, known categories).
        for name, f in self.fields.items():
            if f.get("kind") == "numeric":
                self.checks.append((name, True, f["min"], f["max"], name in self.integer_fields, frozenset()))
            else:
                self.checks.append((name, False, 0.0, 0.0, False, frozenset(f.get("shares", {}))))


class OnlineGuard:
    """Per-request checks for the front door (thread-safe; profiles cached per version)."""

    def __init__(self, policy: OnlinePolicy, client: redis.Redis, keys: RedisKeys, registry: ModelRegistry,
                 verifier: Verifier, *, on_flag: Callable[[ServedVersion, dict[str, Any], Verdict], None] | None = None
                 ) -> None:
        self.policy = policy
        self._redis = client
        self._keys = keys
        self._registry = registry
        self._verifier = verifier
        self._on_flag = on_flag
        self._profiles: dict[tuple[str, int], GuardProfile] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ profiles
    def profile(self, served: ServedVersion) -> GuardProfile:
        """The version's guard profile: training profile, plus the gate's detector when it has run."""
        key = (served.model, served.version)
        hit = self._profiles.get(key)
        if hit is None:
            with self._lock:
                hit = self._profiles.get(key) or self._load(served)
                self._profiles[key] = hit
        return hit

    def _load(self, served: ServedVersion) -> GuardProfile:
        fields = (served.profile or {}).get("fields") or {}
        integer_fields = {n for n, f in fields.items() if f.get("kind") == "numeric" and f.get("integer")}
        hidden_stats = (served.profile or {}).get("hidden_space")
        detector, detector_fields = None, []
        entry = self._registry.get(served.model, served.version, missing_ok=True) or {}
        gate_folder = entry.get("gate_report")
        if gate_folder:
            # The gate's guard data is signed like any artifact; a tampered one is refused, not used.
            verify_folder(Path(gate_folder), self._verifier)
            guard = json.loads((Path(gate_folder) / "guard.json").read_bytes())
            hidden_stats = guard.get("hidden_space") or hidden_stats
            if guard.get("detector"):
                detector = AdversarialDetector.from_dict(guard["detector"])
                detector_fields = list(guard.get("integer_fields", []))
        hidden = HiddenSpace.from_profile(hidden_stats) if hidden_stats else None
        return GuardProfile(fields, integer_fields, hidden, detector, detector_fields)

    def forget(self, model: str, version: int) -> None:
        """Drop a cached profile (a new gate report arrived)."""
        self._profiles.pop((model, version), None)

    # ------------------------------------------------------------------ before the model
    def rate_key(self, model: str, client: str) -> str:
        """The client's counter for the current second (the client key may be anything a caller sends: only a
        hash of it goes into Redis)."""
        who = hashlib.blake2b(f"{model}|{client}".encode(), digest_size=12).hexdigest()
        return self._keys.rate(who, str(int(time.time())))

    def count(self, pipe: redis.client.Pipeline, model: str, client: str, n: int) -> None:
        """Queue the rate counter's increment on the caller's pipeline (one round trip with the cache lookup)."""
        key = self.rate_key(model, client)
        pipe.incrby(key, n)
        pipe.expire(key, 2)

    def rate_exceeded(self, count: int | None) -> bool:
        """Whether a client's count this second is over the burst limit (None: Redis was unreachable)."""
        return count is not None and count > self.policy.burst

    def throttled(self, n: int) -> list[Verdict]:
        """Rejections for a client over its rate."""
        verdicts = [Verdict() for _ in range(n)]
        for v in verdicts:
            v.escalate("reject", f"rate limit: at most {self.policy.burst} requests per second per client; "
                                 "slow down and retry", Reason.RESOURCE_EXHAUSTED)
        return verdicts

    def before(self, served: ServedVersion, records: Sequence[dict[str, Any]], client: str) -> list[Verdict]:
        """Range checks against the training profile (the rate limit is counted with the cache lookup)."""
        verdicts = [Verdict() for _ in records]
        prof = self.profile(served)
        margin = self.policy.range_margin
        action = "reject" if self.policy.reject_out_of_range else "flag"
        for record, verdict in zip(records, verdicts):
            for name, numeric, lo, hi, whole, known in prof.checks:
                value = record.get(name)
                if numeric:
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        continue
                    span = (hi - lo) or 1e-9
                    if value < lo - margin * span or value > hi + margin * span:
                        verdict.escalate(action, f"{name} is far outside the training range [{lo:.4g}, {hi:.4g}]",
                                         Reason.INVALID_ARGUMENT)
                    elif whole and not float(value).is_integer():
                        verdict.escalate("flag", f"{name} is fractional; training values were whole numbers")
                elif isinstance(value, str) and value not in known:
                    verdict.escalate("flag", f"{name} has a value never seen in training")
        return verdicts

    # ------------------------------------------------------------------ after the model
    def after(self, served: ServedVersion, verdicts: Sequence[Verdict], logits: np.ndarray,
              hidden: np.ndarray | None, records: Sequence[dict[str, Any]] = ()) -> None:
        """Add the OOD and adversarial scores to `verdicts` (in place) and decide."""
        prof = self.profile(served)
        if hidden is None or prof.hidden is None:
            return
        ood = prof.hidden.distance(hidden)
        adv = None
        if prof.detector is not None:
            raw = {f: np.array([float(r.get(f, 0.0)) for r in records]) for f in prof.detector_integer_fields}
            constraints = constraint_features(raw, prof.detector_integer_fields, len(hidden))
            adv = prof.detector.score(detector_features(hidden, logits, prof.hidden, constraints))
        p = self.policy
        for i, v in enumerate(verdicts):
            v.ood_score = float(ood[i]) if math.isfinite(ood[i]) else 1e9
            if v.ood_score >= p.ood_reject:
                v.escalate("reject", f"input is out of distribution (score {v.ood_score:.2f}, limit {p.ood_reject})")
            elif v.ood_score >= p.ood_flag:
                v.escalate("flag", f"input is unusual for this model (out-of-distribution score {v.ood_score:.2f})")
            if adv is not None:
                v.adversarial_score = float(adv[i])
                if v.adversarial_score >= p.adversarial_reject:
                    v.escalate("reject", f"input looks crafted to fool the model (score {v.adversarial_score:.2f})")
                elif v.adversarial_score >= p.adversarial_flag:
                    v.escalate("flag", f"input may be adversarial (score {v.adversarial_score:.2f})")

    def flagged(self, served: ServedVersion, record: dict[str, Any], verdict: Verdict) -> None:
        """Report a flagged (served) request."""
        if self._on_flag is not None:
            try:
                self._on_flag(served, record, verdict)
            except Exception as exc:  # noqa: BLE001 - alerting must never fail an answer
                log.warning("flag alert not sent error=%s", type(exc).__name__)
