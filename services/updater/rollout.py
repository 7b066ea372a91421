"""Rollouts: deploy a validated version into Triton, then shadow, canary, full, or roll back.

The controller is the only writer of the live state (`bulwark.live`) and of Triton's model repository. Every
change is a `model.deployed` event with who and why. All state lives in Redis, so an updater that crashes
mid-rollout resumes where it was on restart (reloading into Triton whatever Triton no longer has); a
rollout whose candidate cannot be served any more is rolled back, never left half-split.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bulwark.artifacts import verify_folder
from bulwark.crypto.signing import Verifier
from bulwark.errors import BulwarkError, NotFoundError, Reason, SignatureError
from bulwark.events import Envelope
from bulwark.forgetting import ForgettingLedger
from bulwark.live import LiveState, read_live, write_live
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.triton.client import TritonClient
from bulwark.triton.repository import ModelRepository
from bulwark.versions import ServedVersion, VersionCatalog
from services.updater.settings import UpdaterSettings
from services.updater.signals import SERVICE, Signals, SignalStore

log = logging.getLogger(__name__)
GRACE_S = 5.0  # a version that stopped taking traffic stays loaded this long (front doors cache the state)


@dataclass
class Assessment:
    """Whether the candidate holds every bound so far, and why not."""

    regression: str | None
    candidate: Signals
    live: Signals
    agreement: float
    compared: int


def assess(own: UpdaterSettings, cand: Signals, live: Signals) -> Assessment:
    """A candidate's figures against the live version's, and the first bound it breaks (None: none yet)."""
    o = own
    compared = cand.compared + live.compared
    agreement = (cand.agreed + live.agreed) / compared if compared else 1.0
    why = None
    if cand.requests >= o.min_signal_requests:
        if cand.error_rate > live.error_rate + o.max_error_rate_increase:
            why = f"error rate {cand.error_rate:.3f} vs live {live.error_rate:.3f}"
        elif live.p99_ms > 0 and cand.p99_ms > 5 and cand.p99_ms > live.p99_ms * o.max_p99_ratio:
            why = f"latency p99 {cand.p99_ms:.1f} ms vs live {live.p99_ms:.1f} ms"
        elif cand.flag_rate > live.flag_rate + o.max_flag_rate_increase:
            why = f"guard flag rate {cand.flag_rate:.3f} vs live {live.flag_rate:.3f}"
    if why is None and compared >= o.min_signal_requests and agreement < o.min_agreement:
        why = f"agreement with the live version {agreement:.3f} below {o.min_agreement}"
    if why is None and cand.labeled >= o.min_labeled and live.labeled >= o.min_labeled and \
            cand.accuracy < live.accuracy - o.max_accuracy_drop:
        why = f"accuracy on labeled events {cand.accuracy:.3f} vs live {live.accuracy:.3f}"
    return Assessment(why, cand, live, agreement, compared)


class RolloutController:
    """Deploys, advances, promotes and rolls back; thread-safe (a lock per process, Redis per model)."""

    def __init__(self, own: UpdaterSettings, client: redis.Redis, keys: RedisKeys, registry: ModelRegistry,
                 triton: TritonClient, repo: ModelRepository, catalog: VersionCatalog, verifier: Verifier,
                 signals: SignalStore) -> None:
        self.own = own
        self.redis = client
        self.keys = keys
        self.registry = registry
        self.triton = triton
        self.repo = repo
        self.catalog = catalog
        self.verifier = verifier
        self.signals = signals
        self._lock = threading.RLock()
        self._last_consistency = 0.0
        self._unservable: set[tuple[str, tuple[int, ...]]] = set()  # alerted already, not again
        self._unloading: threading.Thread | None = None
        self.forgetting = ForgettingLedger(client, keys, registry)

    # ------------------------------------------------------------------ events
    def _event(self, state: LiveState, action: str, version: int | None, by: str, reason: str,
               extra: dict[str, Any] | None = None) -> Envelope:
        return Envelope(type="model.deployed", source=SERVICE, subject=state.model, payload={
            "model": state.model, "action": action, "version": version, "live_version": state.live_version,
            "candidate": state.candidate, "stage": state.stage, "share": state.share, "by": by, "reason": reason,
            "rollout_id": state.rollout_id, **(extra or {})})

    def _state(self, model: str) -> LiveState:
        return read_live(self.redis, self.keys, model) or LiveState(model=model)

    # ------------------------------------------------------------------ deploy
    def deploy(self, model: str, version: int, *, by: str, reason: str) -> list[Envelope]:
        """Place a validated version in Triton and start its rollout (or make it live if none is)."""
        with self._lock:
            entry = self.registry.get(model, version)
            carried = self.forgetting.carried(model, version)
            if carried:
                why = f"trained on {carried} forgotten subject(s)"
                self.registry.set_state(model, version, "rejected", by=SERVICE, reason=f"refused: {why}")
                return [self._alert(model, version, f"{model} v{version} refused: {why}", "updater.refused")]
            folder = entry.get("quantized_artifact") or entry["artifact"]
            try:
                verify_folder(Path(folder), self.verifier)
            except (SignatureError, NotFoundError) as exc:
                self.registry.set_state(model, version, "rejected", by=SERVICE, reason=f"refused: {exc.message}")
                return [self._alert(model, version, f"{model} v{version} refused: {exc.message}", "updater.refused")]
            state = self._state(model)
            events: list[Envelope] = []
            if state.candidate is not None and state.candidate != version:
                events += self._rollback_locked(state, by=SERVICE, reason=f"superseded by v{version}")
                state = self._state(model)
            self.registry.record(model, version, serving_artifact=str(folder))
            self.catalog.forget(model, version)
            served = self.catalog.get(model, version)
            loaded = sorted({*state.loaded, version, *([state.live_version] if state.live_version else [])})
            state.retiring.pop(str(version), None)
            self.repo.place(served.folder, served.inputs, served.outputs)
            self.triton.load(model)  # loads just the new folder: the config is unchanged
            self._wait_ready(model, version)
            self._warm_up(served)
            state.loaded = loaded
            if state.live_version is None:
                state.live_version, state.stage, state.share, state.candidate = version, "none", 0.0, None
                state.reason = reason
                write_live(self.redis, self.keys, state)
                self.registry.set_state(model, version, "live", by=by, reason="first version of the model")
                return events + [self._event(state, "promote", version, by, "first version of the model")]
            state.candidate = version
            state.rollout_id = int(self.redis.incr(self.keys.state(SERVICE, f"rollouts:{model}")))
            state.stage = "shadow" if self.own.shadow_s > 0 else "canary"
            state.share = 0.0 if state.stage == "shadow" else self.own.canary_share
            state.started_at = state.stage_started_at = time.time()
            state.reason = reason
            write_live(self.redis, self.keys, state)
            self.registry.set_state(model, version, state.stage, by=by, reason=reason)
            return events + [self._event(state, state.stage, version, by, reason)]

    def _wait_ready(self, model: str, version: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.triton.model_ready(model, version):
            if time.monotonic() > deadline:
                raise BulwarkError(Reason.UNAVAILABLE, f"{model} v{version} did not become ready in Triton",
                                   retryable=True)
            time.sleep(0.1)

    def _warm_up(self, served: ServedVersion) -> None:
        """A few requests before real traffic (first calls pay lazy initialization)."""
        if not self.own.warmup_requests:
            return
        arrays = [np.zeros((1, *s.dims), dtype=np.float32 if s.dtype == "TYPE_FP32" else np.int64)
                  for s in served.inputs]
        if served.family.name == "text":
            arrays[0][0, 0], arrays[1][0, :2] = 101, 1  # a [CLS] token, attended
        for _ in range(self.own.warmup_requests):
            self.triton.infer(served.model, served.version, arrays, served.inputs, served.outputs, timeout_s=10)

    # ------------------------------------------------------------------ the loop
    def tick(self) -> list[Envelope]:
        """Advance or roll back every rollout in progress; keep Triton consistent with the state."""
        events: list[Envelope] = []
        with self._lock:
            for model in self.registry.models():
                state = read_live(self.redis, self.keys, model)
                if state is None:
                    continue
                try:
                    events += self._advance(state)
                    self._retire_due(state)
                except BulwarkError as exc:
                    if exc.retryable:
                        raise
                    log.warning("rollout step failed model=%s reason=%s", model, exc.message)
            if time.monotonic() - self._last_consistency > 5:
                self._last_consistency = time.monotonic()
                events += self.ensure_consistent()
        return events

    def assess(self, state: LiveState) -> Assessment:
        """The candidate's figures against the live version's, and the first bound it breaks."""
        cand = self.signals.read(state.model, state.candidate, state.rollout_id)
        live = (self.signals.read(state.model, state.live_version, state.rollout_id) if state.live_version
                else Signals())
        return assess(self.own, cand, live)

    def _advance(self, state: LiveState) -> list[Envelope]:
        if state.candidate is None or state.stage in ("none", "paused"):
            return []
        a = self.assess(state)
        if a.regression:
            return self._rollback_locked(state, by=SERVICE, reason=f"regression: {a.regression}",
                                         extra={"signals": self._signals_doc(a)})
        elapsed = time.time() - state.stage_started_at
        if state.stage == "shadow" and elapsed >= self.own.shadow_s and a.compared >= self.own.shadow_min_compared:
            state.stage, state.share, state.stage_started_at = "canary", self.own.canary_share, time.time()
            write_live(self.redis, self.keys, state)
            self.registry.set_state(state.model, state.candidate, "canary", by=SERVICE, reason="shadow held every bound")
            return [self._event(state, "canary", state.candidate, SERVICE, "shadow held every bound",
                                {"signals": self._signals_doc(a)})]
        if state.stage == "canary" and elapsed >= self.own.canary_s and a.candidate.requests >= self.own.canary_min_requests:
            return self._promote_locked(state, by=SERVICE, reason="canary held every bound",
                                        extra={"signals": self._signals_doc(a)})
        return []

    @staticmethod
    def _signals_doc(a: Assessment) -> dict[str, Any]:
        return {"candidate": a.candidate.to_dict(), "live": a.live.to_dict(), "agreement": a.agreement,
                "compared": a.compared}

    # ------------------------------------------------------------------ people's decisions (and the loop's)
    def promote(self, model: str, version: int | None, *, by: str, reason: str) -> list[Envelope]:
        """Make the candidate (or `version`, which must be loaded or loadable) live now."""
        with self._lock:
            state = self._state(model)
            if version and version != state.candidate:
                if version == state.live_version:
                    raise BulwarkError(Reason.FAILED_PRECONDITION, f"{model} v{version} is already live")
                events = self.deploy(model, version, by=by, reason=reason)
                state = self._state(model)
                if state.candidate != version:
                    return events
                return events + self._promote_locked(state, by=by, reason=reason)
            if state.candidate is None:
                raise BulwarkError(Reason.FAILED_PRECONDITION, f"{model} has no rollout to promote; name a version")
            return self._promote_locked(state, by=by, reason=reason)

    def _promote_locked(self, state: LiveState, *, by: str, reason: str, extra: dict | None = None) -> list[Envelope]:
        new, old = state.candidate, state.live_version
        state.live_version, state.candidate, state.stage, state.share = new, None, "none", 0.0
        state.paused_stage, state.reason = None, reason
        write_live(self.redis, self.keys, state)
        self.registry.set_state(state.model, new, "live", by=by, reason=reason)
        if old is not None:
            self.registry.set_state(state.model, old, "retired", by=by, reason=f"replaced by v{new}")
        self._plan_retirement(state)
        return [self._event(state, "promote", new, by, reason, extra)]

    def rollback(self, model: str, *, by: str, reason: str) -> list[Envelope]:
        """Stop the rollout in progress (candidate gets no more traffic); with none, restore the previous
        live version."""
        with self._lock:
            state = self._state(model)
            if state.candidate is not None:
                return self._rollback_locked(state, by=by, reason=reason)
            previous = self._previous_live(state)
            if previous is None:
                raise BulwarkError(Reason.FAILED_PRECONDITION, f"{model} has no rollout and no earlier version to "
                                   "roll back to")
            current = state.live_version
            events = self.deploy(model, previous, by=by, reason=reason) if previous not in state.loaded else []
            state = self._state(model)
            state.live_version, state.candidate, state.stage = previous, None, "none"
            write_live(self.redis, self.keys, state)
            self.registry.set_state(model, previous, "live", by=by, reason=reason)
            if current is not None:
                self.registry.set_state(model, current, "retired", by=by, reason=f"rolled back: {reason}")
            return events + [self._event(state, "rollback", current, by, reason, {"restored": previous})]

    def _rollback_locked(self, state: LiveState, *, by: str, reason: str, extra: dict | None = None) -> list[Envelope]:
        cand = state.candidate
        state.candidate, state.stage, state.share, state.paused_stage = None, "none", 0.0, None
        state.reason = reason
        if cand is not None:
            state.retiring[str(cand)] = time.time()
        write_live(self.redis, self.keys, state)
        if cand is not None:
            self.registry.set_state(state.model, cand, "rejected", by=by, reason=f"rolled back: {reason}")
        log.info("rolled back model=%s version=%s reason=%s", state.model, cand, reason)
        return [self._event(state, "rollback", cand, by, reason, extra)]

    def pause(self, model: str, *, by: str, reason: str) -> list[Envelope]:
        """Freeze the rollout: traffic shares stay as they are until resumed."""
        with self._lock:
            state = self._state(model)
            if state.candidate is None or state.stage == "paused":
                raise BulwarkError(Reason.FAILED_PRECONDITION, f"{model} has no running rollout to pause")
            state.paused_stage, state.stage = state.stage, "paused"
            write_live(self.redis, self.keys, state)
            return [self._event(state, "pause", state.candidate, by, reason)]

    def resume(self, model: str, *, by: str, reason: str) -> list[Envelope]:
        """Continue a paused rollout from the stage it was paused in."""
        with self._lock:
            state = self._state(model)
            if state.stage != "paused" or state.paused_stage is None:
                raise BulwarkError(Reason.FAILED_PRECONDITION, f"{model} has no paused rollout")
            state.stage, state.paused_stage, state.stage_started_at = state.paused_stage, None, time.time()
            write_live(self.redis, self.keys, state)
            return [self._event(state, "resume", state.candidate, by, reason)]

    # ------------------------------------------------------------------ maintenance
    def _previous_live(self, state: LiveState) -> int | None:
        for entry in reversed(self.registry.entries(state.model)):
            history = [h["state"] for h in entry.get("history", [])]
            if entry["version"] != state.live_version and "live" in history and entry.get("state") == "retired":
                return int(entry["version"])
        return None

    def _plan_retirement(self, state: LiveState) -> None:
        keep = self._keep(state)
        now = time.time()
        for v in state.loaded:
            if v not in keep:
                state.retiring.setdefault(str(v), now)
        write_live(self.redis, self.keys, state)

    def _keep(self, state: LiveState) -> set[int]:
        must = {v for v in (state.live_version, state.candidate) if v is not None}
        others = sorted((v for v in state.loaded if v not in must), reverse=True)
        return must | set(others[: max(self.own.max_loaded - len(must), 0)])

    def _retire_due(self, state: LiveState) -> None:
        """Take versions whose grace period passed out of service; prune old retired folders. Triton's unload
        runs on a background thread, so it never delays a rollout decision."""
        due = [int(v) for v, since in state.retiring.items() if time.time() - since >= GRACE_S
               and int(v) not in (state.live_version, state.candidate)]
        if not due or (self._unloading is not None and self._unloading.is_alive()):
            return
        state.loaded = [v for v in state.loaded if v not in due]
        for v in due:
            state.retiring.pop(str(v), None)
            self.repo.retire(state.model, v)
        write_live(self.redis, self.keys, state)
        retired = self.repo.retired(state.model)
        for v in retired[: max(len(retired) + len(state.loaded) - self.own.max_on_disk, 0)]:
            self.repo.remove(state.model, v)
        model = state.model

        def unload() -> None:
            try:
                self.triton.load(model)  # the folders are gone: Triton unloads those versions
                log.info("unloaded model=%s versions=%s", model, due)
            except BulwarkError as exc:
                log.warning("unload failed model=%s reason=%s; the consistency check retries", model, exc.message)

        self._unloading = threading.Thread(target=unload, name="triton-unload", daemon=True)
        self._unloading.start()

    def ensure_consistent(self) -> list[Envelope]:
        """Triton must have every version the state says is loaded (it forgets them all when it restarts)."""
        events: list[Envelope] = []
        if not self.triton.server_ready():
            return events
        for model in self.registry.models():
            state = read_live(self.redis, self.keys, model)
            if state is None or not state.loaded:
                continue
            missing = [v for v in state.loaded if not self.triton.model_ready(model, v)]
            if not missing:
                continue
            log.warning("reloading into Triton model=%s versions=%s", model, missing)
            try:
                self.triton.load(model)
                for v in missing:
                    self._wait_ready(model, v, timeout_s=30)
            except BulwarkError as exc:
                if state.candidate in missing:
                    events += self._rollback_locked(state, by=SERVICE, reason=f"candidate cannot be served: {exc.message}")
                elif exc.retryable:
                    raise
                elif (model, tuple(missing)) not in self._unservable:
                    # The live version's artifact cannot be loaded (gone, or from other keys). Crashing would
                    # stop every other model's rollouts too, and a new version is the way out: alert once,
                    # keep going, and let the next check retry.
                    self._unservable.add((model, tuple(missing)))
                    log.error("live versions cannot be served model=%s versions=%s reason=%s", model, missing,
                              exc.message)
                    for v in missing:
                        events.append(self._alert(model, v, f"{model} v{v} cannot be loaded into Triton "
                                                  f"({exc.message}); its predictions fail until a new version "
                                                  "goes live or it is fixed", "updater.unservable"))
        return events

    def _alert(self, model: str, version: int, summary: str, kind: str) -> Envelope:
        return Envelope(type="alert", source=SERVICE, subject=model, payload={
            "kind": kind, "severity": "error", "service": SERVICE, "model": model, "version": str(version),
            "summary": summary, "evidence": {}})
