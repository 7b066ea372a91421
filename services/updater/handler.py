"""The updater's handler: validated versions roll out; inference records and labels feed the signals; the
tick advances rollouts and asks for scheduled retraining."""

from __future__ import annotations

import math
import time
from typing import Iterable

from bulwark.bus import Context, Output
from bulwark.errors import NotFoundError
from bulwark.events import Envelope, derived_id
from bulwark.live import LiveReader
from bulwark.settings import CommonSettings
from services.updater.forgetting import ForgettingEnforcer
from services.updater.rollout import RolloutController
from services.updater.settings import UpdaterSettings
from services.updater.signals import SERVICE, SignalStore


class UpdaterHandler:
    """models.validated, inference.log and labeled clean events in; models.deployed out."""

    name = SERVICE

    def __init__(self, settings: CommonSettings, own: UpdaterSettings, controller: RolloutController,
                 signals: SignalStore, live: LiveReader, *, clean_type: str = "payment.transaction.clean",
                 label: str = "is_fraud", forgetting: ForgettingEnforcer | None = None) -> None:
        self.topics = [settings.topics.models_validated, settings.topics.inference_log, settings.topics.events_clean]
        self.event_types = {"model.validated", "inference.record", clean_type}
        self._settings = settings
        self._own = own
        self._controller = controller
        self._signals = signals
        self._live = live
        self._label = label
        self._forgetting = forgetting

    def _out(self, events: list[Envelope]) -> list[Output]:
        topic = self._settings.topics
        route = {"alert": topic.alerts, "training.request": topic.training_requests}
        return [Output(route.get(e.type, topic.models_deployed), e) for e in events]

    def handle(self, event: Envelope, ctx: Context) -> Iterable[Output]:
        """Dispatch by event type."""
        p = event.payload
        if event.type == "model.validated":
            if p["passed"]:
                yield from self._out(self._controller.deploy(p["model"], int(p["version"]), by=SERVICE,
                                                             reason="passed the robustness gate"))
            return
        if event.type == "inference.record":
            try:
                state = self._live.get(p["model"])
            except NotFoundError:
                return
            self._signals.observe(p, state.rollout_id)
            return
        truth = p.get(self._label)
        if isinstance(truth, bool):
            self._signals.label(p["transaction_id"], "fraud" if truth else "legitimate")

    def tick(self) -> Iterable[Output]:
        """Advance rollouts; on the retraining schedule, ask the trainer for a new version."""
        outputs = self._out(self._controller.tick())
        if self._forgetting is not None:
            outputs += self._out(self._forgetting.tick())
        if self._own.retrain_interval_s:
            slot = math.floor(time.time() / self._own.retrain_interval_s)
            for model in self._controller.registry.models():
                key = self._controller.keys.state(SERVICE, f"retrain-slot:{model}")
                previous = self._controller.redis.set(key, slot, get=True)
                # The first tick only starts the clock; each later slot asks once (the event id is the slot's).
                if previous is not None and previous != str(slot).encode():
                    request = Envelope(type="training.request", source=SERVICE, subject=model,
                                       id=derived_id("schedule", model, str(slot)),
                                       payload={"model": model, "reason": "schedule", "requested_by": SERVICE,
                                                "detail": f"every {self._own.retrain_interval_s:.0f} s"})
                    outputs.append(Output(self._settings.topics.training_requests, request))
        return outputs
