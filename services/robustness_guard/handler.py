"""The robustness guard's handler: gate every quantized candidate; watch inference.log for drift."""

from __future__ import annotations

import logging
from typing import Iterable

from bulwark.bus import Context, Output
from bulwark.errors import BulwarkError, CryptoError, NotFoundError, SignatureError
from bulwark.events import Envelope
from bulwark.plugins import UnknownPluginError
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings
from services.robustness_guard.drift import SERVICE, DriftMonitor
from services.robustness_guard.gate import Gate

log = logging.getLogger(__name__)


class GuardHandler:
    """models.quantized → the gate → models.validated; inference.record → drift windows."""

    name = SERVICE
    event_types = {"model.quantized", "inference.record"}

    def __init__(self, settings: CommonSettings, gate: Gate, drift: DriftMonitor, registry: ModelRegistry) -> None:
        self.topics = [settings.topics.models_quantized, settings.topics.inference_log]
        self._settings = settings
        self._gate = gate
        self._drift = drift
        self._registry = registry

    def handle(self, event: Envelope, ctx: Context) -> Iterable[Output]:
        """Dispatch by event type."""
        if event.type == "inference.record":
            yield from self._drift.observe(event)
            return
        model, version = event.payload["model"], int(event.payload["version"])
        try:
            result = self._gate.evaluate(model, version)
        except (SignatureError, CryptoError, NotFoundError, UnknownPluginError) as exc:
            log.warning("gate refused artifact model=%s version=%d reason=%s", model, version, exc.reason.value)
            yield self._alert(event, model, version, exc)
            return
        state = "validated" if result.passed else "rejected"
        self._registry.set_state(model, version, state, by=SERVICE, reason="; ".join(result.reasons),
                                 gate_report=result.path, gate_digest=result.digest,
                                 gate={"passed": result.passed, "reasons": result.reasons,
                                       "figures": result.report["figures"]})
        ctx.span.set_attributes({"bulwark.model": model, "bulwark.version": version, "bulwark.gate.passed": result.passed})
        validated = event.derive("model.validated", {
            "model": model, "version": version, "passed": result.passed, "reasons": result.reasons,
            "family": result.report["family"], "candidate_stage": result.report["candidate_stage"],
            "report": {"path": result.path, "digest": result.digest},
            "figures": {k: v for k, v in result.report["figures"].items() if isinstance(v, (int, float))}},
            source=SERVICE, subject=model)
        yield Output(self._settings.topics.models_validated, validated)
        if not result.passed:
            yield self._rejected_alert(event, model, version, result.reasons)

    def _alert(self, event: Envelope, model: str, version: int, exc: BulwarkError) -> Output:
        alert = event.derive("alert", {
            "kind": "gate.artifact_refused", "severity": "error", "service": SERVICE, "model": model,
            "version": str(version), "summary": f"{model} v{version} was not gated: {exc.message}",
            "evidence": {"reason": exc.reason.value}}, source=SERVICE, subject=model, index=1)
        return Output(self._settings.topics.alerts, alert)

    def _rejected_alert(self, event: Envelope, model: str, version: int, reasons: list[str]) -> Output:
        alert = event.derive("alert", {
            "kind": "gate.rejected", "severity": "warning", "service": SERVICE, "model": model, "version": str(version),
            "summary": f"{model} v{version} failed the robustness gate: {'; '.join(reasons)}"[:1024],
            "evidence": {"reasons": reasons}}, source=SERVICE, subject=model, index=2)
        return Output(self._settings.topics.alerts, alert)
