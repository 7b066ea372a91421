"""ModelAdmin over gRPC: list versions, see rollouts, and let a person pause, promote or roll back.

Every change needs a reason, is made by the caller's identity, and is published as a `model.deployed` event
and an `audit` event (who, what, when, why)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from bulwark.api.v1 import admin_pb2, admin_pb2_grpc
from bulwark.artifacts import verify_folder
from bulwark.audit import audit_event, publish_audit
from bulwark.auth import current_identity
from bulwark.bus.producer import EventProducer, Output
from bulwark.errors import BulwarkError, InvalidArgumentError, Reason
from bulwark.live import read_live
from bulwark.settings import CommonSettings
from services.updater.forgetting import iso
from services.updater.rollout import RolloutController
from services.updater.signals import SERVICE, Signals

SERVICE_NAME = "bulwark.api.v1.ModelAdmin"


def _signals(s: Signals) -> admin_pb2.Signals:
    return admin_pb2.Signals(error_rate=s.error_rate, latency_p99_ms=s.p99_ms, guard_flag_rate=s.flag_rate,
                             agreement=s.agreement, accuracy=s.accuracy if s.labeled else 0.0, requests=s.requests,
                             labeled=s.labeled)


class ModelAdminServicer(admin_pb2_grpc.ModelAdminServicer):
    """ModelAdmin over the rollout controller and the registry."""

    def __init__(self, settings: CommonSettings, controller: RolloutController, producer: EventProducer) -> None:
        self._settings = settings
        self._c = controller
        self._producer = producer

    # ------------------------------------------------------------------ reads
    def ListModels(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Every model with its live version and rollout stage."""
        out = []
        for model in self._c.registry.models():
            state = read_live(self._c.redis, self._c.keys, model)
            out.append(admin_pb2.ModelSummary(model=model, live_version=(state.live_version or 0) if state else 0,
                                              versions=len(self._c.registry.versions(model)),
                                              rollout_stage=state.stage if state else "none"))
        return admin_pb2.ListModelsResponse(models=out)

    def ListVersions(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Every version: state, lineage, metrics, reports, signature status."""
        if not request.model:
            raise InvalidArgumentError("model: required")
        if request.model not in self._c.registry.models():
            raise BulwarkError(Reason.NOT_FOUND, f"no model {request.model!r}; list models with `bulwark models list`")
        return admin_pb2.ListVersionsResponse(versions=[self._version(e) for e in self._c.registry.entries(request.model)])

    def _version(self, e: dict[str, Any]) -> admin_pb2.VersionInfo:
        folder = e.get("serving_artifact") or e.get("quantized_artifact") or e.get("artifact")
        try:
            verify_folder(Path(folder), self._c.verifier)
            signature_ok = True
        except (BulwarkError, TypeError):
            signature_ok = False
        q = e.get("quantization") or {}
        gate = e.get("gate") or {}
        carried = self._c.forgetting.carried(e["model"], int(e["version"]))
        if carried:
            deadline = iso(float(e["forget_deadline"])) if e.get("forget_deadline") else "next check"
        else:
            deadline = f"purged {iso(float(e['purged_at']))}" if e.get("purged_at") else ""
        card = {f"privacy.{k}": str(v) for k, v in (e.get("privacy") or {}).items()}
        return admin_pb2.VersionInfo(
            model=e["model"], version=int(e["version"]), state=e.get("state", ""), family=e.get("family", ""),
            parent=int(e.get("parent") or 0), created_at=str(e.get("created_at", "")),
            metrics={k: float(v) for k, v in (e.get("metrics") or {}).items() if isinstance(v, (int, float))},
            artifact_digest=e.get("artifact_digest", ""), signature_ok=signature_ok,
            dataset_digest=e.get("dataset_digest", ""),
            quantization=f"{q.get('form', '')}: {q.get('reason', '')}" if q else "",
            gate=("passed" if gate.get("passed") else "failed: " + "; ".join(gate.get("reasons", []))) if gate else "",
            card=card, forgotten_subjects=carried, forget_deadline=deadline)

    def GetStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """The live version, the rollout and its signals, and what Triton has loaded."""
        state = read_live(self._c.redis, self._c.keys, request.model)
        if state is None:
            raise BulwarkError(Reason.NOT_FOUND, f"model {request.model!r} is not deployed")
        return self._status(state)

    def _status(self, state: Any) -> admin_pb2.ModelStatus:
        rollout = admin_pb2.Rollout(stage=state.stage, share=state.share, reason=state.reason,
                                    started_at=str(state.started_at), updated_at=str(state.updated_at))
        if state.candidate is not None:
            a = self._c.assess(state)
            rollout.candidate_version = state.candidate
            rollout.candidate.CopyFrom(_signals(a.candidate))
            rollout.live.CopyFrom(_signals(a.live))
            rollout.decision = "regression: " + a.regression if a.regression else "holding every bound so far"
        loaded = self._c.triton.loaded_versions(state.model) if self._c.triton.server_ready() else []
        return admin_pb2.ModelStatus(model=state.model, live_version=state.live_version or 0, rollout=rollout,
                                     loaded_versions=loaded)

    # ------------------------------------------------------------------ changes
    def _change(self, request: Any, action: str) -> admin_pb2.ModelStatus:
        if len(request.reason.strip()) < 3:
            raise InvalidArgumentError("reason: required; say why (it is recorded with your name)")
        who = current_identity().name
        fn = {"promote": lambda: self._c.promote(request.model, request.version or None, by=who, reason=request.reason),
              "rollback": lambda: self._c.rollback(request.model, by=who, reason=request.reason),
              "pause": lambda: self._c.pause(request.model, by=who, reason=request.reason),
              "resume": lambda: self._c.resume(request.model, by=who, reason=request.reason)}[action]
        outcome = "allowed"
        try:
            events = fn()
        except BulwarkError:
            outcome = "failed"
            raise
        finally:
            publish_audit(self._settings, audit_event(actor=who, action=f"models.{action}", target=request.model,
                                                      reason=request.reason, outcome=outcome, source=SERVICE,
                                                      details={"version": request.version}), self._producer)
        for e in events:
            topic = self._settings.topics.alerts if e.type == "alert" else self._settings.topics.models_deployed
            self._producer.send(Output(topic, e))
        self._producer.flush()
        return self._status(read_live(self._c.redis, self._c.keys, request.model))

    def Promote(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Make the candidate (or the named version) live now."""
        return self._change(request, "promote")

    def Rollback(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Stop the rollout, or restore the previous live version."""
        return self._change(request, "rollback")

    def Pause(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Freeze the rollout's traffic shares."""
        return self._change(request, "pause")

    def Resume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Continue a paused rollout."""
        return self._change(request, "resume")
