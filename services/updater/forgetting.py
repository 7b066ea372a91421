"""Forgetting reaches the models: replace and purge every version trained on a forgotten subject.

On each check (`forget_check_s`) and for each model:
1. every version whose training subjects meet the forgotten list is marked: `forgotten_subjects`, and
   `forget_deadline` = when it first carried one (stamped by `bulwark forget`) + `forget_deadline_s`;
2. unless a newer version without forgotten subjects is already on its way (trained, quantized, validated
   or rolling out), a `training.request` (reason `forget`) asks the trainer for a replacement, whose
   training set leaves the forgotten subjects out;
3. the replacement rolls out as any validated version does; if the live version still carries a forgotten
   subject at its deadline, a clean candidate is promoted at once, and with none an alert says so;
4. every carrier that answers no traffic (not live, not the candidate, past the grace period) is purged:
   unloaded from Triton, removed from the model repository, its artifacts deleted (each artifact's data key
   is wrapped inside its own manifest, so the key goes with it), its subject set dropped, and the registry
   entry kept as `retired` with `purged_at`, for the record.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from bulwark.artifacts import ArtifactStore
from bulwark.events import Envelope, derived_id
from bulwark.forgetting import ForgettingLedger
from bulwark.live import LiveState, read_live, write_live
from services.updater.rollout import GRACE_S, RolloutController
from services.updater.settings import UpdaterSettings
from services.updater.signals import SERVICE

log = logging.getLogger(__name__)


def iso(ts: float) -> str:
    """A timestamp as ISO 8601 UTC."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ForgettingEnforcer:
    """Marks, replaces and purges versions carrying forgotten subjects (called from the updater's tick)."""

    def __init__(self, own: UpdaterSettings, controller: RolloutController, store: ArtifactStore) -> None:
        self.own = own
        self.c = controller
        self.ledger: ForgettingLedger = controller.forgetting
        self.store = store
        self._last = 0.0

    def tick(self, *, force: bool = False) -> list[Envelope]:
        """One check of every model, at most every `forget_check_s`."""
        if not force and time.monotonic() - self._last < self.own.forget_check_s:
            return []
        self._last = time.monotonic()
        events: list[Envelope] = []
        for model in self.c.registry.models():
            carriers = self.ledger.carriers(model)
            if carriers:
                events += self._enforce(model, carriers)
        return events

    def _enforce(self, model: str, carriers: dict[int, int]) -> list[Envelope]:
        now = time.time()
        deadlines: dict[int, float] = {}
        for v, n in carriers.items():
            self.ledger.stamp(model, v, now)
            since = float(self.c.registry.get(model, v).get("forget_since") or now)
            deadlines[v] = since + self.own.forget_deadline_s
            self.c.registry.record(model, v, forgotten_subjects=n, forget_deadline=deadlines[v])
        events = self._request_replacement(model, carriers, min(deadlines.values()))
        with self.c._lock:
            state = read_live(self.c.redis, self.c.keys, model) or LiveState(model=model)
            live = state.live_version
            if live in carriers and now >= deadlines[live]:
                events += self._deadline(state, carriers)
                state = read_live(self.c.redis, self.c.keys, model) or state
            for v, n in sorted(carriers.items()):
                if v in (state.live_version, state.candidate):
                    continue
                entry = self.c.registry.get(model, v)
                if v in state.loaded and now - float(entry.get("state_at") or 0) < GRACE_S:
                    continue  # just replaced: front doors may still route to it for a moment
                events.append(self._purge(state, v, n, entry))
        return events

    def _request_replacement(self, model: str, carriers: dict[int, int], deadline: float) -> list[Envelope]:
        versions = self.c.registry.versions(model)
        newest_carrier = max(carriers)
        for v in versions:
            if v > newest_carrier and v not in carriers:
                entry = self.c.registry.get(model, v, missing_ok=True) or {}
                if entry.get("state") not in ("rejected", "retired"):
                    return []  # a clean version is on its way
        newest, count = max(versions), self.ledger.forgotten_count()
        # One request per (newest version, size of the forgotten list): a rejected replacement, or a
        # version trained while the forget happened, asks again; a restart does not.
        if not self.c.redis.set(self.c.keys.state(SERVICE, f"forget-request:{model}:{newest}:{count}"), 1, nx=True):
            return []
        state = read_live(self.c.redis, self.c.keys, model)
        log.info("forget: replacement requested model=%s carriers=%s", model, sorted(carriers))
        return [Envelope(type="training.request", source=SERVICE, subject=model,
                         id=derived_id("forget", model, str(newest), str(count)),
                         payload={"model": model, "reason": "forget", "requested_by": SERVICE,
                                  "detail": f"versions {sorted(carriers)} were trained on forgotten subjects",
                                  "parent_version": str(state.live_version) if state and state.live_version else None,
                                  "deadline": iso(deadline)})]

    def _deadline(self, state: LiveState, carriers: dict[int, int]) -> list[Envelope]:
        if state.candidate is not None and state.candidate not in carriers:
            return self.c._promote_locked(state, by=SERVICE, reason="forget deadline: the replacement goes live now")
        key = self.c.keys.state(SERVICE, f"forget-missed:{state.model}:{state.live_version}")
        if not self.c.redis.set(key, 1, nx=True):
            return []
        return [Envelope(type="alert", source=SERVICE, subject=state.model, payload={
            "kind": "forget.deadline_missed", "severity": "error", "service": SERVICE, "model": state.model,
            "version": str(state.live_version),
            "summary": f"{state.model} v{state.live_version} still serves after its forget deadline: no replacement "
                       "without forgotten subjects has passed the gate yet",
            "evidence": {"forgotten_subjects": carriers[state.live_version]}})]

    def _purge(self, state: LiveState, version: int, carried: int, entry: dict[str, Any]) -> Envelope:
        model = state.model
        if version in state.loaded or str(version) in state.retiring:
            state.loaded = [v for v in state.loaded if v != version]
            state.retiring.pop(str(version), None)
            write_live(self.c.redis, self.c.keys, state)
        self.c.repo.retire(model, version)
        self.c.repo.remove(model, version)
        if self.c.triton.server_ready() and self.c.triton.model_ready(model, version):
            self.c.triton.load(model)  # its folder is gone: Triton unloads it
        self.store.delete(model, version)
        self.c.catalog.forget(model, version)
        self.ledger.drop_subjects(model, version)
        reason = f"purged: trained on {carried} forgotten subject(s)"
        self.c.registry.set_state(model, version, "retired", by=SERVICE, reason=reason, purged_at=time.time(),
                                  forgotten_subjects=0, carried_forgotten=carried)
        log.info("forget: purged model=%s version=%d", model, version)
        return Envelope(type="model.deployed", source=SERVICE, subject=model, payload={
            "model": model, "action": "retire", "version": version, "live_version": state.live_version,
            "candidate": state.candidate, "stage": state.stage, "share": state.share, "by": SERVICE,
            "reason": reason, "rollout_id": state.rollout_id, "was": entry.get("state")})
