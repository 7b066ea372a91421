"""The quantizer's handler without Kafka or Redis: a verified artifact in, a signed one and its event out;
a redelivery is answered from the store without new work; a Redis failure is retried, never alerted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bulwark.artifacts import ArtifactStore, ArtifactWriter, canonical, sha256
from bulwark.bus import Context
from bulwark.crypto import load_ring, load_signer, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.crypto.keyset import init_keys
from bulwark.errors import UnavailableError
from bulwark.events import Envelope, EventTypeRegistry
from bulwark.families import FAMILIES, script_bytes, state_bytes
from bulwark.features import REFERENCE_FEATURES, FeatureSpec
from bulwark.health import ServiceStats
from bulwark.reference import ReferenceGenerator
from bulwark.settings import CommonSettings
from services.quantizer.handler import QuantizerHandler
from services.quantizer.pipeline import Quantizer
from services.quantizer.settings import QuantizerSettings


class MemoryRegistry:
    """The ModelRegistry methods the handler uses, in a dict; `down` makes every call fail like Redis down."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, int], dict[str, Any]] = {}
        self.down = False

    def get(self, model: str, version: int, *, missing_ok: bool = False) -> dict[str, Any] | None:
        if self.down:
            raise UnavailableError("Redis unreachable for the model registry (ConnectionError)")
        return self.entries.get((model, version))

    def record(self, model: str, version: int, **fields: Any) -> None:
        self.entries.setdefault((model, version), {}).update(fields)

    def set_state(self, model: str, version: int, state: str, *, by: str, reason: str = "", **fields: Any) -> None:
        self.record(model, version, state=state, by=by, **fields)


class CountingQuantizer(Quantizer):
    calls = 0

    def quantize(self, *args: Any, **kwargs: Any):  # noqa: ANN201
        CountingQuantizer.calls += 1
        return super().quantize(*args, **kwargs)


@pytest.fixture
def setup(tmp_path: Path):  # noqa: ANN201
    keys = tmp_path / "keys"
    init_keys(keys)
    store = ArtifactStore(tmp_path / "artifacts", verifier=load_verifier(keys), kek=load_ring(RING_KEK, keys),
                          signer=load_signer(keys))
    records = [e.payload for e in ReferenceGenerator(seed=3, labeled_fraction=1.0).events(800)]
    spec = FeatureSpec.fit(records[:600], REFERENCE_FEATURES)
    torch.manual_seed(2)
    module = FAMILIES.get("mlp").build(spec, {"hidden": [16, 16]}).eval()
    w = ArtifactWriter("fraud", 1, "trained", "mlp", card={"metrics": {"accuracy": 0.9}})
    w.add("model.pt", script_bytes(module))
    w.add("state.pt", state_bytes(module))
    w.add_json("config.json", {"hidden": [16, 16]})
    w.add_json("features.json", spec.to_dict())
    w.add_json("heldout.json", {"validation": records[600:], "train_sample": records[:600], "label": "is_fraud"},
               encrypt=True)
    store.publish(w)
    digest = sha256(canonical(store.verify("fraud", 1, "trained")))
    event = Envelope(type="model.trained", source="trainer", subject="fraud", payload={
        "model": "fraud", "version": 1, "family": "mlp", "artifact": {"path": "x", "digest": digest, "stage": "trained"},
        "metrics": {}, "dataset": {"digest": "d", "used": 800}, "reason": "manual"})
    settings = CommonSettings(home=tmp_path)
    own = QuantizerSettings(candidates=["dynamic-int8"], min_speedup=0, latency_repeats=3, latency_warmup=1)
    registry = MemoryRegistry()
    handler = QuantizerHandler(settings, own, store, registry, ServiceStats(), CountingQuantizer(own))  # type: ignore[arg-type]
    ctx = Context("models.trained", 0, 0, None, [], "quantizer", settings, None, None)  # type: ignore[arg-type]
    return handler, event, ctx, registry, store


def test_handler_publishes_a_valid_event_and_answers_a_redelivery_from_the_store(setup) -> None:
    handler, event, ctx, registry, store = setup
    CountingQuantizer.calls = 0
    [out] = handler.handle(event, ctx)
    assert out.topic == "models.quantized" and out.event.type == "model.quantized" and out.event.subject == "fraud"
    EventTypeRegistry.default().validate_payload("model.quantized", 1, json.loads(json.dumps(out.event.payload)))
    assert registry.entries[("fraud", 1)]["state"] == "quantized"
    registry.entries.clear()  # as if the process crashed before recording: the redelivery records it
    [again] = handler.handle(event, ctx)
    assert CountingQuantizer.calls == 1 and again.event.id == out.event.id and again.event.payload == out.event.payload
    assert registry.entries[("fraud", 1)]["quantized_digest"] == out.event.payload["artifact"]["digest"]
    assert store.verify("fraud", 1, "quantized")["card"]["parent_digest"] == event.payload["artifact"]["digest"]


def test_handler_redis_down_raises_retryable_and_publishes_nothing(setup) -> None:
    handler, event, ctx, registry, store = setup
    registry.down = True
    with pytest.raises(UnavailableError) as info:
        handler.handle(event, ctx)
    assert info.value.retryable


def test_handler_event_naming_another_digest_alerts(setup) -> None:
    handler, event, ctx, registry, store = setup
    event.payload["artifact"]["digest"] = "0" * 64
    [out] = handler.handle(event, ctx)
    assert out.topic == "alerts" and out.event.payload["kind"] == "quantizer.artifact_rejected"
    assert "not the one the event names" in out.event.payload["evidence"]["reason"]
    EventTypeRegistry.default().validate_payload("alert", 1, out.event.payload)
    assert registry.entries == {}
