"""robustness-guard against the real broker and Redis: the gate decides for stated reasons; drift is seen."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from bulwark.artifacts import ArtifactStore
from bulwark.bus.reader import read_topic
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.events import Envelope
from bulwark.features import REFERENCE_FEATURES
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import NUMERIC_FIELDS, DriftSpec, ReferenceGenerator
from bulwark.registry import ModelRegistry
from bulwark.testing.services import ServiceProcess, collect
from bulwark.testing.stack import TestStack, topic_env
from tests.integration.helpers import clean_events, publish, quantize, train_version, trained_event

pytestmark = pytest.mark.integration
FIELDS = [f["name"] for f in REFERENCE_FEATURES]


class Guarded:
    """One context: topics, Redis prefix, home, and the guard service."""

    def __init__(self, stack: TestStack, tmp: Path, logs: Path, **env: str) -> None:
        self.stack = stack
        self.topics = stack.topics(partitions=2)
        self.prefix = "gd" + uuid.uuid4().hex[:8]
        self.home = tmp / f"home-{self.prefix}"
        self.settings = stack.settings(redis_prefix=self.prefix, home=self.home, **self.topics)
        self.env = {**stack.env(), **topic_env(self.topics), "BULWARK_REDIS_PREFIX": self.prefix,
                    "BULWARK_HOME": str(self.home), **env}
        self.logs = logs
        self.registry = ModelRegistry(make_redis(self.settings), RedisKeys(self.prefix))

    def service(self) -> ServiceProcess:
        return ServiceProcess("services.robustness_guard", "robustness-guard", self.env, self.logs)

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.artifacts_path, verifier=load_verifier(self.stack.keys_dir),
                             kek=load_ring(RING_KEK, self.stack.keys_dir))


def test_gate_passes_a_normal_model_and_fails_a_fragile_one_for_stated_reasons(stack: TestStack, tmp_path: Path,
                                                                               logs_dir: Path) -> None:
    normal = Guarded(stack, tmp_path, logs_dir)
    v_normal = train_version(stack, normal.settings, model="normal", seed=5, events=6000)
    # A model trained on a shortcut: the label is whether the sum of the six numeric fields' z-scores is
    # positive. The rule is easy to learn, and an L-infinity attack of 0.3 on each of six fields moves that
    # sum by up to 1.8 against its spread of about 2.4 (Goodfellow et al.'s linearity argument), so a large
    # share of the inputs sit within reach of the boundary.
    fragile = Guarded(stack, tmp_path, logs_dir)
    events = clean_events(stack, fragile.settings, 6000, seed=6, labeled_fraction=1.0)
    columns = {f: np.array([float(e.payload[f]) for e in events]) for f in NUMERIC_FIELDS}
    score = sum((c - c.mean()) / c.std() for c in columns.values())
    for e, s in zip(events, score):
        e.payload["is_fraud"] = bool(s > 0)
    publish(fragile.settings, fragile.settings.topics.events_clean, events)
    v_fragile = train_version(stack, fragile.settings, model="fragile", publish_events=False)
    for ctx, outcome in ((normal, v_normal), (fragile, v_fragile)):
        quantized = quantize(ctx.settings, trained_event(outcome))
        publish(ctx.settings, ctx.settings.topics.models_quantized, [quantized])
    results = {}
    for ctx in (normal, fragile):
        svc = ctx.service().start()
        try:
            [validated] = collect(ctx.settings, ctx.settings.topics.models_validated, until=lambda ev: len(ev) >= 1,
                                  timeout_s=180)
        finally:
            svc.terminate()
        results[ctx] = validated.payload
    ok, bad = results[normal], results[fragile]
    assert ok["passed"] and ok["reasons"] == ["holds every threshold of the policy"]
    figures = {k: (ok["figures"][k], bad["figures"][k]) for k in ("fgsm_accuracy", "pgd_accuracy")}
    assert not bad["passed"], figures
    assert any("PGD" in r and "below the policy's" in r for r in bad["reasons"]), (bad["reasons"], figures)
    assert any("FGSM" in r and "below the policy's" in r for r in bad["reasons"]), (bad["reasons"], figures)
    assert bad["figures"]["clean_accuracy"] > 0.95  # accurate on clean data, fragile under attack
    assert normal.registry.get("normal", 1)["state"] == "validated"
    assert fragile.registry.get("fragile", 1)["state"] == "rejected"
    # The report is signed: it verifies, and the guard's detector data travels with it.
    manifest = normal.store().verify("normal", 1, "gate")
    assert manifest["card"]["gate"]["passed"]
    assert ok["figures"]["detector_auroc_pgd"] > 0.85
    rejected = [e.payload for _, e in read_topic(fragile.settings, fragile.settings.topics.alerts) if e]
    assert [a["kind"] for a in rejected] == ["gate.rejected"]


def test_gate_refuses_a_tampered_artifact_with_an_alert(stack: TestStack, tmp_path: Path, logs_dir: Path) -> None:
    g = Guarded(stack, tmp_path, logs_dir)
    outcome = train_version(stack, g.settings, model="tamper", seed=8, events=2000)
    quantized = quantize(g.settings, trained_event(outcome))
    weights = g.settings.artifacts_path / "tamper" / "1" / "trained" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    publish(g.settings, g.settings.topics.models_quantized, [quantized])
    svc = g.service().start()
    try:
        [alert] = collect(g.settings, g.settings.topics.alerts, until=lambda ev: len(ev) >= 1, timeout_s=60)
        assert alert.payload["kind"] == "gate.artifact_refused" and "tampered" in alert.payload["summary"]
        assert list(read_topic(g.settings, g.settings.topics.models_validated, idle_ms=300)) == []
        assert g.registry.get("tamper", 1)["state"] == "quantized"
        assert svc.alive
    finally:
        svc.terminate()


def _records(model: str, version: int, n: int, seed: int, drift: DriftSpec | None = None) -> list[Envelope]:
    gen = ReferenceGenerator(seed=seed, drift=drift or DriftSpec())
    return [Envelope(type="inference.record", source="test", subject=model, payload={
        "request_id": f"r-{seed}-{i}", "model": model, "version": version, "client": "c", "label": "legitimate",
        "probabilities": [0.9, 0.1], "latency_ms": 1.0, "cached": False,
        "features": {f: e.payload[f] for f in FIELDS}}) for i, e in enumerate(gen.events(n))]


def test_drift_raises_an_alert_and_a_training_request_only_when_the_stream_shifts(stack: TestStack, tmp_path: Path,
                                                                                  logs_dir: Path) -> None:
    g = Guarded(stack, tmp_path, logs_dir)
    train_version(stack, g.settings, model="drifty", seed=9, events=3000)
    svc = g.service().start()
    try:
        # 20 unshifted windows of 500 records: no false alarm expected (the rate must stay under 5%).
        publish(g.settings, g.settings.topics.inference_log, _records("drifty", 1, 10_000, seed=100))
        deadline = time.monotonic() + 180
        windows = 0
        while windows < 20 and time.monotonic() < deadline:
            windows = int(make_redis(g.settings).get(RedisKeys(g.prefix).state("robustness-guard",
                                                                               "drift-windows:drifty:1")) or 0)
            time.sleep(1)
        assert windows == 20
        false_alarms = [e for _, e in read_topic(g.settings, g.settings.topics.alerts, idle_ms=500) if e]
        assert len(false_alarms) <= 1  # under 5% of 20 windows
        # Then a shifted stream (amounts tripled): the next window raises the alert and asks for retraining.
        publish(g.settings, g.settings.topics.inference_log,
                _records("drifty", 1, 500, seed=101, drift=DriftSpec(amount_factor=3.0)))
        alerts = collect(g.settings, g.settings.topics.alerts,
                         until=lambda ev: any(e.payload["kind"] == "drift.detected" and
                                              e.payload["evidence"]["window"] == 21 for e in ev), timeout_s=60)
        drift = next(e for e in alerts if e.payload["evidence"]["window"] == 21)
        assert drift.payload["evidence"]["psi"]["amount"] > 0.25 and "amount" in drift.payload["summary"]
        [request] = collect(g.settings, g.settings.topics.training_requests, until=lambda ev: len(ev) >= 1)
        assert request.payload["reason"] == "drift" and request.payload["model"] == "drifty"
    finally:
        svc.terminate()
