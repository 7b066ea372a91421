"""quantizer against the real broker and Redis: a trained version in, a signed compressed version out that a
fresh process loads from bytes; bad artifacts raise alerts and publish nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bulwark.artifacts import ArtifactStore, ArtifactWriter, canonical, sha256
from bulwark.bus.reader import read_topic
from bulwark.crypto import load_ring, load_signer, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.events import Envelope
from bulwark.families import FAMILIES
from bulwark.health import ServiceStats
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings, load_settings
from bulwark.testing.services import REPO_ROOT, ServiceProcess, collect
from bulwark.testing.stack import TestStack, topic_env
from services.trainer.handler import TrainerHandler
from services.trainer.pipeline import TrainingPipeline, TrainRequest, artifact_store
from services.trainer.settings import TrainerSettings
from tests.integration.helpers import clean_events, deploy, publish, quantize, train_version, trained_event

pytestmark = pytest.mark.integration
MODEL, VERSION = "fraud", 1


@dataclass
class Trained:
    """One MLP version trained by the trainer's own pipeline, and the `model.trained` event it published."""

    home: Path
    prefix: str
    event: Envelope
    settings: CommonSettings


@pytest.fixture(scope="module")
def trained(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Trained once per module, in this process; each test works on its own copy."""
    prefix, home = "qg" + uuid.uuid4().hex[:8], tmp_path_factory.mktemp("trained") / "home"
    settings = stack.settings(redis_prefix=prefix, home=home, **stack.topics(partitions=1))
    publish(settings, settings.topics.events_clean, clean_events(stack, settings, 3000, seed=21))
    own = load_settings(TrainerSettings, min_labeled=300, trigger_every=0, max_epochs=30, patience=4)
    client = make_redis(settings)
    handler = TrainerHandler(settings, own, TrainingPipeline(settings, own, client, artifact_store(settings)), client,
                             ServiceStats())
    [out] = handler.train_now("quantizer-tests", TrainRequest("quantizer-tests", "manual", "test"))
    return Trained(home, prefix, out.event, settings)


class Rig:
    """One test's quantizer: its own topics, Redis prefix and artifact folder holding a copy of the version."""

    def __init__(self, stack: TestStack, logs: Path, tmp: Path, trained: Trained, **env: str) -> None:
        self.stack, self.logs = stack, logs
        self.topics = stack.topics(partitions=2)
        self.prefix = "qz" + uuid.uuid4().hex[:8]
        self.home = tmp / "home"
        shutil.copytree(trained.home / "artifacts", self.home / "artifacts")
        self.settings = stack.settings(redis_prefix=self.prefix, home=self.home, **self.topics)
        self.registry = ModelRegistry(make_redis(self.settings), RedisKeys(self.prefix))
        entry = ModelRegistry(make_redis(trained.settings), RedisKeys(trained.prefix)).get(MODEL, VERSION)
        self.registry.record(MODEL, VERSION, **{k: v for k, v in entry.items() if k not in ("model", "version")})
        self.event = Envelope(type="model.trained", source="trainer", subject=MODEL, id=trained.event.id,
                              payload=json.loads(json.dumps(trained.event.payload)))
        self.event.payload["artifact"]["path"] = str(self.store().path(MODEL, VERSION, "trained"))
        self.env = {**stack.env(), **topic_env(self.topics), "BULWARK_REDIS_PREFIX": self.prefix,
                    "BULWARK_HOME": str(self.home), "BULWARK_BUS_GROUP_ID": stack.group("quantizer"),
                    "BULWARK_QUANTIZER_LATENCY_REPEATS": "10", "BULWARK_QUANTIZER_EVAL_RECORDS": "500", **env}

    def service(self, module: str = "services.quantizer") -> ServiceProcess:
        return ServiceProcess(module, "quantizer", self.env, self.logs)

    def store(self, *, signer: bool = False) -> ArtifactStore:
        keys = self.stack.keys_dir
        return ArtifactStore(self.settings.artifacts_path, verifier=load_verifier(keys), kek=load_ring(RING_KEK, keys),
                             signer=load_signer(keys) if signer else None)

    def send(self, event: Envelope | None = None) -> Envelope:
        event = event or self.event
        publish(self.settings, self.settings.topics.models_trained, [event])
        return event

    def read(self, topic: str, n: int = 1, timeout_s: float = 120) -> list[Envelope]:
        return collect(self.settings, topic, until=lambda ev: len(ev) >= n, timeout_s=timeout_s)

    def resign(self, family: str) -> None:
        """Re-publish the trained artifact, properly signed with the test keys, under another family name."""
        art = self.store().open(MODEL, VERSION, "trained")
        writer = ArtifactWriter(MODEL, VERSION, "trained", family, card=art.card)
        for name, meta in art.manifest["files"].items():
            writer.add(name, art.files[name], encrypt=meta["encrypted"])
        shutil.rmtree(self.store().path(MODEL, VERSION, "trained"))
        self.store(signer=True).publish(writer)
        self.event.payload["artifact"]["digest"] = sha256(canonical(self.store().verify(MODEL, VERSION, "trained")))


@pytest.fixture
def rig(stack: TestStack, logs_dir: Path, tmp_path: Path, trained: Trained) -> Rig:
    return Rig(stack, logs_dir, tmp_path, trained)


FRESH_PROCESS = """
import json, sys
import torch
from bulwark.artifacts import ArtifactStore
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.features import FeatureSpec
from bulwark.kernels import load_torchscript
from pathlib import Path
root, keys = Path(sys.argv[1]), Path(sys.argv[2])
art = ArtifactStore(root, verifier=load_verifier(keys), kek=load_ring(RING_KEK, keys)).open("fraud", 1, "quantized")
module = load_torchscript(art.files["model.pt"])  # as Triton's Python backend does
spec = FeatureSpec.from_dict(art.json("features.json"))
val = art.json("heldout.json")["validation"][:500]
with torch.no_grad():
    probs = torch.softmax(module(torch.from_numpy(spec.encode(val))), dim=1)[:, 1]
print(json.dumps(probs.tolist()))
"""


def test_quantizer_publishes_a_signed_compressed_version_a_fresh_process_loads(rig: Rig) -> None:
    rig.env["BULWARK_QUANTIZER_MIN_SPEEDUP"] = "0"  # 10 timed calls are too few to gate on: no bench here
    svc = rig.service().start()
    try:
        rig.send()
        [done] = rig.read(rig.settings.topics.models_quantized)
        # Redelivery after a lost idempotence mark (a crash before the loop marked it): same event, no new work.
        client, mark = make_redis(rig.settings), RedisKeys(rig.prefix).idempotence("quantizer", rig.event.id)
        deadline = time.monotonic() + 10
        while not client.exists(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        client.delete(mark)
        rig.send()
        again = rig.read(rig.settings.topics.models_quantized, n=2)
        assert svc.alive
        assert svc.log_path.read_text().count("compressing: dynamic-int8\n") == 1
    finally:
        svc.terminate()
    p = done.payload
    assert (p["model"], p["version"], p["family"], p["artifact"]["stage"]) == (MODEL, VERSION, "mlp", "quantized")
    assert p["parent_digest"] == rig.event.payload["artifact"]["digest"] and p["trigger"] == rig.event.id
    assert p["form"] in ("dynamic-int8", "dynamic-int8-tensor", "dynamic-int8-vnni",
                         "dynamic-int8-vnni-tensor", "static-int8")
    assert p["report"]["candidates"][p["form"]]["status"] == "chosen"
    assert p["report"]["candidates"]["fp16"]["status"] == "skipped"  # gpu form, cpu target
    assert [e.id for e in again] == [done.id, done.id] and again[1].payload == p
    # The artifact verifies, names its parent, carries the report, and has no eager weights.
    art = rig.store().open(MODEL, VERSION, "quantized")
    assert art.digest == p["artifact"]["digest"] and art.manifest["parent"] == p["parent_digest"]
    assert set(art.files) == {"model.pt", "config.json", "features.json", "profile.json", "heldout.json", "report.json"}
    assert art.manifest["files"]["model.pt"]["encrypted"] and art.manifest["files"]["heldout.json"]["encrypted"]
    assert art.card["parent_digest"] == p["parent_digest"] and art.card["quantization"]["form"] == p["form"]
    assert art.card["metrics"] == rig.store().open(MODEL, VERSION, "trained").card["metrics"]  # the parent's card kept
    report = art.json("report.json")
    chosen = next(c for c in report["candidates"] if c["name"] == p["form"])
    assert chosen["size_bytes"] == len(art.files["model.pt"]) < report["fp32"]["size_bytes"] / 1.5
    # A fresh process loads the TorchScript from bytes; it matches this process and agrees with fp32.
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(rig.settings.artifacts_path), str(rig.stack.keys_dir)],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=True)
    fresh = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    heldout = art.json("heldout.json")["validation"][:500]
    quantized = FAMILIES.get("mlp").load(art).predict(heldout)[:, 1]
    fp32 = FAMILIES.get("mlp").load(rig.store().open(MODEL, VERSION, "trained")).predict(heldout)[:, 1]
    assert np.allclose(fresh, quantized, atol=1e-6)
    assert np.mean((fresh >= 0.5) == (fp32 >= 0.5)) >= 0.98
    y = np.array([int(r["is_fraud"]) for r in heldout])
    assert np.mean((fp32 >= 0.5) == y) - np.mean((fresh >= 0.5) == y) <= 0.005 + 1e-9  # within the budget
    # The registry moved the version to quantized, with the summary.
    entry = rig.registry.get(MODEL, VERSION)
    assert entry["state"] == "quantized" and entry["quantized_digest"] == art.digest
    assert entry["quantization"]["form"] == p["form"] and entry["history"][-1]["by"] == "quantizer"
    assert list(read_topic(rig.settings, rig.settings.topics.alerts, idle_ms=300)) == []


@pytest.mark.parametrize("form", ["dynamic-int8-vnni", "dynamic-int8-vnni-tensor"])
def test_kernel_form_serves_from_triton_with_the_answers_it_was_evaluated_with(
        stack: TestStack, tmp_path: Path, form: str) -> None:
    # The form calls Bulwark's int8 kernel: Triton's Python backend loads the library before the model.
    from bulwark.families.mlp import MLPFamily
    from bulwark.triton.client import TritonClient
    from services.quantizer.settings import QuantizerSettings

    model = "fraud-" + uuid.uuid4().hex[:6]
    settings = stack.settings(triton=True, redis_prefix="qk" + uuid.uuid4().hex[:8], home=tmp_path / "home",
                              **stack.topics(partitions=1))
    outcome = train_version(stack, settings, model=model, seed=31)
    own = QuantizerSettings(candidates=[form], min_speedup=0, latency_repeats=5, eval_records=300)
    done = quantize(settings, trained_event(outcome), own)
    assert done.payload["form"] == form
    deploy(stack, settings, model, [outcome.version], live=outcome.version)
    art = ArtifactStore(settings.artifacts_path, verifier=load_verifier(stack.keys_dir),
                        kek=load_ring(RING_KEK, stack.keys_dir)).open(model, outcome.version, "quantized")
    loaded = FAMILIES.get("mlp").load(art)
    records = art.json("heldout.json")["validation"][:64]
    [x] = loaded.inputs(records)
    inputs, outputs = MLPFamily().io(loaded.spec, loaded.config)
    logits, hidden = TritonClient(stack.triton.spec.endpoints["grpc"]).infer(
        model, outcome.version, [x.numpy()], inputs, outputs, timeout_s=30)
    assert np.allclose(logits, loaded.logits(records), atol=1e-5)
    assert hidden.shape == (64, outputs[1].dims[0])


def _unsigned(rig: Rig) -> None:
    (rig.store().path(MODEL, VERSION, "trained") / "manifest.sig").unlink()


def _tampered(rig: Rig) -> None:
    path = rig.store().path(MODEL, VERSION, "trained") / "model.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("case", "prepare", "module", "kind", "fragment"),
    [
        ("unsigned", _unsigned, "services.quantizer", "quantizer.artifact_rejected", "missing manifest.json or manifest.sig"),
        ("tampered", _tampered, "services.quantizer", "quantizer.artifact_rejected", "model.pt does not match"),
        # Signed with the test keys; only the family is wrong.
        ("unknown family", lambda rig: rig.resign("gbdt"), "services.quantizer", "quantizer.unknown_family",
         "unknown model family 'gbdt'"),
        # A family (installed by the test's service module) whose model neither scripts nor traces.
        ("does not trace", lambda rig: rig.resign("untraceable"), "tests.integration.untraceable_family",
         "quantizer.trace_failed", "neither scripts nor traces"),
    ],
)
def test_quantizer_bad_artifact_alerts_publishes_nothing_and_keeps_running(
        rig: Rig, case: str, prepare: Callable[[Rig], None], module: str, kind: str, fragment: str) -> None:
    prepare(rig)
    before = rig.registry.get(MODEL, VERSION)
    svc = rig.service(module).start()
    try:
        rig.send()
        [alert] = rig.read(rig.settings.topics.alerts)
        time.sleep(1)
        assert svc.alive
        assert list(read_topic(rig.settings, rig.settings.topics.models_quantized, idle_ms=300)) == []
        assert list(read_topic(rig.settings, rig.settings.topics.events_dlq, idle_ms=300)) == []  # the event was fine
    finally:
        svc.terminate()
    a = alert.payload
    assert (a["kind"], a["severity"], a["service"], a["model"], a["version"]) == (kind, "error", "quantizer", MODEL, "1")
    assert fragment in a["evidence"]["reason"] and fragment in a["summary"]
    assert a["evidence"]["artifact_digest"] == rig.event.payload["artifact"]["digest"]
    assert rig.registry.get(MODEL, VERSION) == before
    assert not rig.store().path(MODEL, VERSION, "quantized").exists()


@pytest.mark.slow
def test_quantizer_text_family_publishes_int8_minilm_that_loads_and_agrees(stack: TestStack, logs_dir: Path,
                                                                           tmp_path: Path) -> None:
    prefix, home = "qt" + uuid.uuid4().hex[:8], tmp_path / "trained" / "home"
    settings = stack.settings(redis_prefix=prefix, home=home, **stack.topics(partitions=1))
    publish(settings, settings.topics.events_clean, clean_events(stack, settings, 2500, seed=14, labeled_fraction=1.0))
    own = load_settings(TrainerSettings, family="text", min_labeled=300, trigger_every=0, max_epochs=60, patience=8,
                        learning_rate=0.01)
    client = make_redis(settings)
    handler = TrainerHandler(settings, own, TrainingPipeline(settings, own, client, artifact_store(settings)), client,
                             ServiceStats())
    [out] = handler.train_now("quantizer-text", TrainRequest("quantizer-text", "manual", "test"))
    rig = Rig(stack, logs_dir, tmp_path, Trained(home, prefix, out.event, settings),
              BULWARK_QUANTIZER_LATENCY_MAX_S="5")
    svc = rig.service().start()
    try:
        rig.send()
        [done] = rig.read(rig.settings.topics.models_quantized, timeout_s=400)
    finally:
        svc.terminate()
    p = done.payload
    assert p["family"] == "text" and p["report"]["candidates"]["static-int8"]["status"] == "skipped"
    int8 = p["report"]["candidates"]["dynamic-int8"]
    assert int8["size_ratio"] >= 3.5 and int8["agreement"] >= 0.98
    art = rig.store().open(MODEL, VERSION, "quantized")
    assert "tokenizer.json" in art.files and "state.pt" not in art.files
    # The published TorchScript (int8 or, if the rule said so, fp32) runs on fresh texts of any length.
    loaded = FAMILIES.get("text").load(art)
    probs = loaded.predict([{"note": "urgent wire transfer requested"}, {"note": "monthly groceries"},
                            {"note": "a much longer note about a weekend trip to the coast with the whole family"}])
    assert probs.shape == (3, 2) and probs[0, 1] > probs[1, 1]
