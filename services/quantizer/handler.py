"""The quantizer's handler: a `model.trained` event in, a signed `quantized` artifact and `model.quantized` out.

The trained artifact is verified (signature, digests, the digest the event names) before anything reads it.
An artifact that is the problem (unsigned, tampered, an unknown family, a model that does not trace) is not
a bad event: it yields an `alerts` event with the reason, publishes nothing and leaves the registry alone.
Redis failures raise `UnavailableError`, so the loop retries the event.

Idempotent: a version whose quantized artifact already exists (a redelivery, or a crash after publishing)
is not recomputed; its event is rebuilt from the signed manifest, with the same id, since the id is derived
from the input event's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bulwark.artifacts import MANIFEST, Artifact, ArtifactStore, ArtifactWriter, canonical, sha256
from bulwark.bus import Context, Output
from bulwark.errors import CryptoError, InvalidArgumentError, NotFoundError, SignatureError
from bulwark.events import Envelope, derived_id
from bulwark.families import FAMILIES, LoadedModel
from bulwark.health import ServiceStats
from bulwark.plugins import UnknownPluginError
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings
from services.quantizer.candidates import TraceError
from services.quantizer.pipeline import QuantizeOutcome, Quantizer
from services.quantizer.settings import QuantizerSettings

log = logging.getLogger(__name__)
SERVICE = "quantizer"
STAGE_IN, STAGE_OUT = "trained", "quantized"

# Alert kinds: what is wrong with the artifact, not with the event.
ARTIFACT_REJECTED = "quantizer.artifact_rejected"
UNKNOWN_FAMILY = "quantizer.unknown_family"
TRACE_FAILED = "quantizer.trace_failed"

REQUIRED = ("model.pt", "config.json", "heldout.json")
# Files the quantized artifact takes over from its parent (weights come from the chosen form instead).
CARRIED = ("config.json", "features.json", "tokenizer.json", "profile.json", "heldout.json")


class _Rejected(Exception):
    """The artifact cannot be quantized; becomes an alert."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class QuantizerHandler:
    """Consumes `models.trained`; publishes `models.quantized` or an alert."""

    name = SERVICE
    event_types = {"model.trained"}

    def __init__(self, settings: CommonSettings, own: QuantizerSettings, store: ArtifactStore,
                 registry: ModelRegistry, stats: ServiceStats, quantizer: Quantizer | None = None) -> None:
        self.topics = [settings.topics.models_trained]
        self._settings = settings
        self._own = own
        self._store = store
        self._registry = registry
        self._stats = stats
        self._quantizer = quantizer or Quantizer(own)

    def handle(self, event: Envelope, ctx: Context) -> list[Output]:
        """The `model.quantized` event for the version the event names, or an alert saying why not."""
        p = event.payload
        model, version, digest = p["model"], int(p["version"]), p["artifact"]["digest"]
        self._stats.extra["activity"] = f"quantizing {model} v{version}"
        try:
            return [self._quantize(event, model, version, digest)]
        except _Rejected as r:
            log.warning("not quantized model=%s version=%d kind=%s reason=%s", model, version, r.kind, r.reason)
            return [self._alert(event, model, version, digest, r)]
        finally:
            self._stats.extra["activity"] = "idle"

    # ------------------------------------------------------------------ steps
    def _quantize(self, event: Envelope, model: str, version: int, digest: str) -> Output:
        done = self._existing(model, version, digest)
        if done is None:
            parent = self._open(model, version, digest)
            loaded = self._load(parent)
            try:
                outcome = self._quantizer.quantize(loaded, parent.json("heldout.json"), parent.files["model.pt"])
            except TraceError as exc:
                raise _Rejected(TRACE_FAILED, exc.message) from None
            except InvalidArgumentError as exc:
                raise _Rejected(ARTIFACT_REJECTED, f"held-out records unusable: {exc.message}") from None
            done = self._publish(parent, outcome)
        manifest, folder, out_digest = done
        self._record(model, version, folder, out_digest, manifest["card"]["quantization"])
        return self._quantized_event(event, manifest, folder, out_digest)

    def _open(self, model: str, version: int, digest: str) -> Artifact:
        """Verify and decrypt the trained artifact, and check it is the one the event names."""
        try:
            parent = self._store.open(model, version, STAGE_IN)
        except (SignatureError, NotFoundError, CryptoError) as exc:
            raise _Rejected(ARTIFACT_REJECTED, exc.message) from None
        if (parent.model, parent.version, parent.manifest.get("stage")) != (model, version, STAGE_IN):
            raise _Rejected(ARTIFACT_REJECTED, f"the signed manifest names {parent.model} v{parent.version} "
                            f"({parent.manifest.get('stage')}), not {model} v{version} ({STAGE_IN})")
        if parent.digest != digest:
            raise _Rejected(ARTIFACT_REJECTED, "the trained artifact's digest is not the one the event names")
        missing = [name for name in REQUIRED if name not in parent.files]
        if missing:
            raise _Rejected(ARTIFACT_REJECTED, f"the trained artifact has no {', '.join(missing)}")
        return parent

    def _load(self, parent: Artifact) -> LoadedModel:
        try:
            family = FAMILIES.get(parent.family)
        except UnknownPluginError as exc:
            raise _Rejected(UNKNOWN_FAMILY, exc.message) from None
        try:
            return family.load(parent)
        except Exception as exc:  # noqa: BLE001 - a family that cannot load its own artifact: reject that artifact
            log.warning("family load failed family=%s exception=%s", parent.family, type(exc).__name__)
            raise _Rejected(ARTIFACT_REJECTED, f"the {parent.family} family cannot load it "
                            f"({type(exc).__name__})") from None

    def _existing(self, model: str, version: int, digest: str) -> tuple[dict[str, Any], Path, str] | None:
        """The already published quantized artifact of this version (verified), if any."""
        folder = self._store.path(model, version, STAGE_OUT)
        if not (folder / MANIFEST).exists():
            return None
        try:
            manifest = self._store.verify(model, version, STAGE_OUT)
        except (SignatureError, NotFoundError) as exc:
            raise _Rejected(ARTIFACT_REJECTED, f"the existing quantized artifact: {exc.message}") from None
        if manifest["card"].get("parent_digest") != digest:
            raise _Rejected(ARTIFACT_REJECTED, "a quantized artifact of this version exists, made from another "
                            "trained artifact")
        return manifest, folder, sha256(canonical(manifest))

    def _publish(self, parent: Artifact, outcome: QuantizeOutcome) -> tuple[dict[str, Any], Path, str]:
        card = {**parent.card, "quantization": outcome.summary, "parent_digest": parent.digest}
        writer = ArtifactWriter(parent.model, parent.version, STAGE_OUT, parent.family, parent=parent.digest, card=card)
        writer.add("model.pt", outcome.model_pt)  # encrypted; no state.pt, so families load this TorchScript
        for name in CARRIED:
            if name in parent.files:
                writer.add(name, parent.files[name], encrypt=parent.manifest["files"][name]["encrypted"])
        writer.add_json("report.json", outcome.report)
        folder = self._store.publish(writer)
        manifest = self._store.verify(parent.model, parent.version, STAGE_OUT)
        return manifest, folder, sha256(canonical(manifest))

    def _record(self, model: str, version: int, folder: Path, digest: str, summary: dict[str, Any]) -> None:
        entry = self._registry.get(model, version, missing_ok=True) or {}
        if entry.get("quantized_digest") == digest:
            return  # recorded before a crash or on a first delivery
        fields = {"quantization": summary, "quantized_artifact": str(folder), "quantized_digest": digest}
        if entry.get("state") in (None, STAGE_IN):
            self._registry.set_state(model, version, STAGE_OUT, by=SERVICE, reason=summary["reason"], **fields)
        else:
            self._registry.record(model, version, **fields)  # a later stage owns the state now

    # ------------------------------------------------------------------ outputs
    def _quantized_event(self, event: Envelope, manifest: dict[str, Any], folder: Path, digest: str) -> Output:
        card = manifest["card"]
        q = card["quantization"]
        payload = {"model": manifest["model"], "version": manifest["version"], "family": manifest["family"],
                   "parent_digest": card["parent_digest"],
                   "artifact": {"path": str(folder), "digest": digest, "stage": STAGE_OUT},
                   "form": q["form"], "reason": q["reason"], "serving_target": q["serving_target"],
                   "metrics": q["metrics"], "report": q, "trigger": event.id}
        out = Envelope(type="model.quantized", source=SERVICE, subject=manifest["model"],
                       id=derived_id(event.id, SERVICE, "quantized"), payload=payload)
        return Output(self._settings.topics.models_quantized, out)

    def _alert(self, event: Envelope, model: str, version: int, digest: str, r: _Rejected) -> Output:
        payload = {"kind": r.kind, "severity": "error", "service": SERVICE, "model": model, "version": str(version),
                   "summary": f"{model} v{version} not quantized: {r.reason}"[:1024],
                   "evidence": {"model": model, "version": version, "reason": r.reason, "artifact_digest": digest,
                                "event_id": event.id}}
        out = Envelope(type="alert", source=SERVICE, subject=model, id=derived_id(event.id, SERVICE, "alert"),
                       payload=payload)
        return Output(self._settings.topics.alerts, out)
