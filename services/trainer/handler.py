"""The trainer's handler: count new labeled events, train on triggers, publish `models.trained`.

Triggers: `trigger_every` new labeled events (counted with a HyperLogLog of event ids, so a redelivered event
never counts twice), the interval (`tick`), or a `training.request` event (drift, schedule, forgetting,
people). A trigger whose data cannot make a model publishes an `alerts` event and no model.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Iterable

import redis

from bulwark.bus import Context, Output
from bulwark.errors import UnavailableError
from bulwark.events import Envelope, derived_id
from bulwark.health import ServiceStats
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from services.trainer.dataset import DatasetError
from services.trainer.pipeline import SERVICE, TrainingPipeline, TrainOutcome, TrainRequest
from services.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


class TrainerHandler:
    """Consumes clean events and training requests."""

    name = SERVICE

    def __init__(self, settings: CommonSettings, own: TrainerSettings, pipeline: TrainingPipeline,
                 client: redis.Redis, stats: ServiceStats) -> None:
        self.topics = [settings.topics.events_clean, settings.topics.training_requests]
        self.event_types = {own.event_type, "training.request"}
        self._settings = settings
        self._own = own
        self._pipeline = pipeline
        self._redis = client
        self._keys = RedisKeys(settings.redis_prefix)
        self._stats = stats
        self._window = self._keys.state(SERVICE, f"window:{own.model}")
        self._last = self._keys.state(SERVICE, f"last-trained:{own.model}")

    def handle(self, event: Envelope, ctx: Context) -> Iterable[Output]:
        """A training request trains now; a labeled clean event may cross the count trigger."""
        if event.type == "training.request":
            p = event.payload
            if p["model"] != self._own.model:
                return  # another trainer's model
            window = p.get("window") or {}
            parent = p.get("parent_version")  # a string in training.request, an integer in model.trained
            yield from self.train_now(event.id, TrainRequest(event.id, p["reason"], p["requested_by"],
                                                          int(parent) if parent else None, window.get("max_events")))
            return
        if not isinstance(event.payload.get(self._own.label), bool):
            return
        try:
            self._redis.pfadd(self._window, event.id)
            count = self._redis.pfcount(self._window) if self._own.trigger_every else 0
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the trigger count ({type(exc).__name__})") from None
        if self._own.trigger_every and count >= self._own.trigger_every:
            yield from self.train_now(event.id, TrainRequest(event.id, "new_data", SERVICE))

    def tick(self) -> Iterable[Output]:
        """The interval trigger: train when the interval passed and new labeled events arrived."""
        if not self._own.interval_s:
            return []
        now = time.time()
        try:
            last = float(self._redis.get(self._last) or 0)
            pending = self._redis.pfcount(self._window)
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the schedule ({type(exc).__name__})") from None
        if now - last < self._own.interval_s or not pending:
            return []
        slot = math.floor(now / self._own.interval_s)
        trigger = f"interval-{self._own.model}-{slot}"
        return list(self.train_now(trigger, TrainRequest(trigger, "schedule", SERVICE)))

    def train_now(self, trigger: str, req: TrainRequest) -> Iterable[Output]:
        """Run one training for `trigger`; yields the `models.trained` event or an alert."""
        self._stats.extra["activity"] = f"training {self._own.model} ({req.reason})"
        try:
            outcome = self._pipeline.run(req)
        except DatasetError as exc:
            log.warning("no model trained model=%s reason=%s kind=%s", self._own.model, req.reason, exc.kind)
            self._reset_window()
            yield self._alert(trigger, exc)
            return
        finally:
            self._stats.extra["activity"] = "idle"
        self._reset_window()
        if outcome is not None:
            yield self._trained_event(trigger, outcome, req)

    def _reset_window(self) -> None:
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._window)
            pipe.set(self._last, time.time())
            pipe.execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable ({type(exc).__name__})") from None

    def _alert(self, trigger: str, exc: DatasetError) -> Output:
        event = Envelope(type="alert", source=SERVICE, subject=self._own.model, id=derived_id(trigger, SERVICE, "alert"),
                         payload={"kind": exc.kind, "severity": "warning", "service": SERVICE, "model": self._own.model,
                                  "summary": f"no model trained: {exc.message}", "evidence": exc.evidence})
        return Output(self._settings.topics.alerts, event)

    def _trained_event(self, trigger: str, o: TrainOutcome, req: TrainRequest) -> Output:
        event = Envelope(type="model.trained", source=SERVICE, subject=o.model, id=derived_id(trigger, SERVICE, "trained"),
                         payload={"model": o.model, "version": o.version, "family": o.family, "parent": req.parent,
                                  "artifact": {"path": str(o.path), "digest": o.digest, "stage": "trained"},
                                  "metrics": {k: v for k, v in o.metrics.items() if isinstance(v, (int, float))},
                                  "dataset": o.dataset, "training": o.training, "privacy": o.privacy,
                                  "reason": req.reason,
                                  "requested_by": req.requested_by, "trigger": trigger})
        return Output(self._settings.topics.models_trained, event)
