"""`alerts` events for requests the guard flagged: at most one per model per interval, with the count."""

from __future__ import annotations

import threading
import time
from typing import Any

from bulwark.bus.producer import LazyEventProducer, Output
from bulwark.events import Envelope
from bulwark.guard.online import Verdict
from bulwark.settings import CommonSettings
from bulwark.versions import ServedVersion


class FlagAlerts:
    """Turns flagged requests into rate-limited alerts (ids and scores only, never input values)."""

    def __init__(self, settings: CommonSettings, producer: LazyEventProducer, *, interval_s: float) -> None:
        self._settings = settings
        self._producer = producer
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, served: ServedVersion, record: dict[str, Any], verdict: Verdict) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending[served.model] = self._pending.get(served.model, 0) + 1
            if now - self._last.get(served.model, 0.0) < self._interval:
                return
            self._last[served.model] = now
            count, self._pending[served.model] = self._pending[served.model], 0
        event = Envelope(type="alert", source="inference", subject=served.model, payload={
            "kind": "guard.flagged", "severity": "info", "service": "inference", "model": served.model,
            "version": str(served.version),
            "summary": f"{count} request(s) flagged by the guard; latest: {'; '.join(verdict.reasons)[:500]}",
            "evidence": {"flagged": count, "ood_score": verdict.ood_score,
                         "adversarial_score": verdict.adversarial_score, "action": verdict.action}})
        self._producer.send_nowait(Output(self._settings.topics.alerts, event))
