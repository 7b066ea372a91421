"""The explainer against a real tritonserver, Kafka and Redis: one MLP version trained, quantized and deployed
by the services' own code, the front door and the explainer as processes, every call over gRPC."""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients

from bulwark.api.v1 import common_pb2, explain_pb2, explain_pb2_grpc, inference_pb2, inference_pb2_grpc
from bulwark.artifacts import ArtifactStore
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.events import Envelope, EventTypeRegistry
from bulwark.families import FAMILIES, LoadedModel
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import PERSONAL_FIELDS, ReferenceGenerator
from bulwark.registry import ModelRegistry
from bulwark.testing.services import ServiceProcess, collect
from bulwark.testing.stack import TestStack, topic_env
from tests.integration.helpers import anonymize, deploy, quantize, train_version, trained_event

pytestmark = pytest.mark.integration
SERVICE_NAME = "bulwark.api.v1.ExplainService"
SUMMARY_WINDOW = 4


def value(v: Any) -> common_pb2.Value:
    """A clean-event field value as a proto Value."""
    if isinstance(v, bool):
        return common_pb2.Value(flag=v)
    if isinstance(v, (int, float)):
        return common_pb2.Value(number=float(v))
    return common_pb2.Value(category=str(v))


class Rig:
    """One version trained on anonymized reference events, quantized, deployed in Triton; a second version whose
    artifact is tampered with; the front door and the explainer running as processes."""

    def __init__(self, stack: TestStack, tmp: Path, logs: Path) -> None:
        self.stack = stack
        self.model = "fraud-" + uuid.uuid4().hex[:6]
        self.prefix = "ex" + uuid.uuid4().hex[:8]
        self.home = tmp / "home"
        topics = stack.topics(partitions=2)
        self.settings = stack.settings(triton=True, redis_prefix=self.prefix, home=self.home, **topics)
        self.keys = RedisKeys(self.prefix)
        self.redis = make_redis(self.settings)
        env = {**stack.env(triton=True), **topic_env(topics), "BULWARK_REDIS_PREFIX": self.prefix,
               "BULWARK_HOME": str(self.home)}
        self.v1 = train_version(stack, self.settings, model=self.model, seed=11)
        self.quantized = quantize(self.settings, trained_event(self.v1))
        self.v2 = train_version(stack, self.settings, model=self.model, publish_events=False, max_epochs=1)
        deploy(stack, self.settings, self.model, [self.v1.version], live=self.v1.version)
        self.fields = list(self.loaded().spec.fields)
        # Requests hold anonymized events' fields; the raw events keep the personal values they must never show.
        self.raw = list(ReferenceGenerator(seed=404, pii_note_fraction=1.0).events(24))
        self.clean = [e.payload for e in anonymize(stack, self.settings, self.raw)]
        self.door = ServiceProcess("services.inference", "inference", {
            **env, "BULWARK_INFERENCE_PORT": "0", "BULWARK_BUS_GROUP_ID": stack.group("inference")}, logs)
        self.explainer = ServiceProcess("services.explainer", "explainer", {
            **env, "BULWARK_EXPLAINER_PORT": "0", "BULWARK_BUS_GROUP_ID": stack.group("explainer"),
            "BULWARK_EXPLAINER_SAMPLE_SHARE": "1.0", "BULWARK_EXPLAINER_SUMMARY_WINDOW": str(SUMMARY_WINDOW)}, logs)
        try:
            for svc in (self.door, self.explainer):
                svc.start(wait=False)  # both import torch at once; then wait for each heartbeat
            self.door.wait_running(120)
            self.explainer.wait_running(120)
        except Exception:
            self.door.kill()  # the module's processes are kept from the per-test killer: stop them here
            self.explainer.kill()
            raise
        self.door_channel = grpc.insecure_channel(f"127.0.0.1:{self.port(self.door)}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port(self.explainer)}")
        self.stub = explain_pb2_grpc.ExplainServiceStub(self.channel)
        self.predict = inference_pb2_grpc.InferenceServiceStub(self.door_channel)

    def port(self, svc: ServiceProcess) -> int:
        """The gRPC port a service process bound (it reports it in its heartbeat)."""
        return int(self.redis.hget(self.keys.heartbeat(svc.service, svc.instance), "x_grpc_port"))

    def features(self, i: int) -> dict[str, common_pb2.Value]:
        """The model's fields of clean event `i`, as the front door and the explainer take them."""
        return {k: value(v) for k, v in self.clean[i].items() if k in self.fields}

    def store(self) -> ArtifactStore:
        """The artifact store, reading with the stack's verify keys and key-encryption ring."""
        return ArtifactStore(self.settings.artifacts_path, verifier=load_verifier(self.stack.keys_dir),
                             kek=load_ring(RING_KEK, self.stack.keys_dir))

    def loaded(self) -> LoadedModel:
        """v1's trained artifact, verified and loaded in this process."""
        return FAMILIES.get("mlp").load(self.store().open(self.model, self.v1.version, "trained"))

    def personal_values(self) -> list[str]:
        """Every personal value of the raw events behind the requests (long enough not to match by chance)."""
        out = []
        for e in self.raw:
            out += [str(e.payload[f]) for f in PERSONAL_FIELDS if len(str(e.payload.get(f) or "")) >= 6]
        return out

    def close(self) -> None:
        """Close the channels and stop both services."""
        self.channel.close()
        self.door_channel.close()
        for svc in (self.explainer, self.door):
            svc.terminate()


@pytest.fixture(scope="module")
def rig(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The module's version, front door and explainer, built once."""
    r = Rig(stack, tmp_path_factory.mktemp("explainer"), tmp_path_factory.mktemp("explainer-logs"))
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _keep_module_services() -> Iterator[None]:
    # The module's processes must outlive each test (the session-wide orphan killer runs per test).
    from bulwark.testing import services

    started = list(services._STARTED)
    yield
    services._STARTED[:] = [s for s in services._STARTED if s not in started]


def test_explain_names_the_clean_fields_adds_up_and_equals_captum_on_the_signed_artifact(rig: Rig) -> None:
    resp = rig.stub.Explain(explain_pb2.ExplainRequest(model=rig.model, features=rig.features(0)), timeout=30)
    assert (resp.model, resp.version, resp.family) == (rig.model, rig.v1.version, "mlp")  # unpinned: the live one
    assert resp.method == "integrated_gradients" and resp.model_form == "trained"
    assert resp.artifact_digest == rig.v1.digest and resp.baseline_kind == "training_mean"
    names = [a.feature for a in resp.attributions]
    assert sorted(names) == sorted(rig.fields) and not set(names) & set(PERSONAL_FIELDS)
    c = resp.convergence
    change = resp.output - resp.baseline_output
    assert c.converged and c.steps >= 50
    assert abs(sum(a.value for a in resp.attributions) - change) <= 0.01 * abs(change) + 1e-3
    assert math.isclose(c.delta, sum(a.value for a in resp.attributions) - change, abs_tol=1e-6)

    # The same attributions from Captum, in this process, on the artifact read back from its signed folder.
    art = rig.store().open(rig.model, rig.v1.version, "trained")
    loaded = FAMILIES.get("mlp").load(art)
    spec, module = loaded.spec, loaded.module.eval()
    t = list(loaded.family.classes).index(resp.target)
    x = torch.from_numpy(spec.encode([rig.clean[0]]))
    base = torch.tensor([art.json("profile.json")["input_space"]["mean"]], dtype=torch.float32)

    def log_odds(inp: torch.Tensor) -> torch.Tensor:
        z = module(inp)
        return z[:, t] - torch.logsumexp(torch.cat([z[:, :t], z[:, t + 1:]], 1), 1)

    attr = CaptumIntegratedGradients(log_odds).attribute(x, base, n_steps=c.steps, method="gausslegendre")[0]
    captum = {name: float(attr[s].sum()) for name, s in zip(spec.fields, spec.slices().values())}
    assert all(abs(captum[a.feature] - a.value) <= 1e-4 for a in resp.attributions)
    with torch.no_grad():
        assert math.isclose(resp.output, float(log_odds(x)[0]), abs_tol=1e-4)
    assert all(v not in str(resp) for v in rig.personal_values())


def test_feature_ablation_attributes_the_form_triton_serves(rig: Rig) -> None:
    entry = ModelRegistry(rig.redis, rig.keys).get(rig.model, rig.v1.version)
    resp = rig.stub.Explain(explain_pb2.ExplainRequest(model=rig.model, version=rig.v1.version,
                                                       features=rig.features(1), method="feature_ablation"),
                            timeout=30)
    assert resp.model_form == "quantized" and resp.artifact_digest == entry["quantized_digest"]
    assert resp.artifact_digest == rig.quantized.payload["artifact"]["digest"]
    assert resp.convergence.steps == 0 and sorted(a.feature for a in resp.attributions) == sorted(rig.fields)
    # The explained output is the served model's: the front door's answer, from Triton, as log-odds.
    served = rig.predict.Predict(inference_pb2.PredictRequest(model=rig.model, features=rig.features(1)), timeout=10)
    p = served.probabilities[list(served.classes).index(resp.target)]
    assert math.isclose(resp.output, math.log(p / (1 - p)), abs_tol=1e-3)


def test_logged_prediction_is_explained_by_its_request_id(rig: Rig) -> None:
    rid = "why-" + uuid.uuid4().hex[:8]
    answer = rig.predict.Predict(inference_pb2.PredictRequest(model=rig.model, features=rig.features(2),
                                                              request_id=rid, client_key="customer-7"), timeout=10)
    deadline = time.monotonic() + 30
    while True:  # the explainer keeps the input once it has consumed the front door's inference.log record
        try:
            resp = rig.stub.Explain(explain_pb2.ExplainRequest(model=rig.model, request_id=rid), timeout=30)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND and "request_id" in exc.details()
            assert time.monotonic() < deadline, "the logged prediction never became explainable"
            time.sleep(0.2)
    assert resp.request_id == rid and resp.version == answer.version and resp.target == answer.label
    direct = rig.stub.Explain(explain_pb2.ExplainRequest(model=rig.model, features=rig.features(2),
                                                         target=answer.label), timeout=30)
    assert [(a.feature, a.value) for a in direct.attributions] == [(a.feature, a.value) for a in resp.attributions]
    assert "customer-7" not in str(resp)


def test_repeat_explanation_is_served_from_the_redis_cache(rig: Rig) -> None:
    req = explain_pb2.ExplainRequest(model=rig.model, version=rig.v1.version, features=rig.features(3), steps=64)
    first = rig.stub.Explain(req, timeout=30)
    second = rig.stub.Explain(req, timeout=30)
    assert not first.cached and second.cached
    assert list(first.attributions) == list(second.attributions) and first.convergence == second.convergence
    cached = list(rig.redis.scan_iter(rig.keys.explanation_cache(rig.model, str(rig.v1.version),
                                                                 "integrated_gradients", "64:*")))
    assert cached and all(0 < rig.redis.ttl(k) <= 3600 for k in cached)
    rig.redis.delete(*cached)  # Redis is the cache: without the keys the explainer computes again
    assert not rig.stub.Explain(req, timeout=30).cached


def test_batch_answers_every_item_and_isolates_bad_ones(rig: Rig) -> None:
    good = [explain_pb2.ExplainRequest(model=rig.model, features=rig.features(i), request_id=f"b{i}")
            for i in (4, 5)]
    wrong_type = explain_pb2.ExplainRequest(model=rig.model, features={**rig.features(6), "amount": value("lots")},
                                            request_id="bad-type")
    gone = explain_pb2.ExplainRequest(model=rig.model, version=999, features=rig.features(6), request_id="gone")
    batch = rig.stub.ExplainBatch(explain_pb2.ExplainBatchRequest(items=[good[0], wrong_type, gone, good[1]]),
                                  timeout=60)
    assert [i.request_id for i in batch.items] == ["b4", "bad-type", "gone", "b5"]
    assert [i.error.reason for i in batch.items] == ["", "INVALID_ARGUMENT", "NOT_FOUND", ""]
    assert batch.items[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert all(batch.items[i].attributions and batch.items[i].convergence.converged for i in (0, 3))
    with pytest.raises(grpc.RpcError) as info:
        rig.stub.ExplainBatch(explain_pb2.ExplainBatchRequest(items=[good[0]] * 65), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 64" in info.value.details()


def test_sampled_inference_log_becomes_published_summaries(rig: Rig) -> None:
    for i in range(8, 8 + 2 * SUMMARY_WINDOW):
        rig.predict.Predict(inference_pb2.PredictRequest(model=rig.model, features=rig.features(i),
                                                         request_id=f"sum-{i}"), timeout=10)

    def done(events: list[Envelope]) -> bool:
        return any(e.payload["explained"] >= 2 * SUMMARY_WINDOW for e in events)

    events = collect(rig.settings, rig.settings.topics.explanations, until=done, timeout_s=60, idle_ms=300)
    assert done(events), f"summaries seen: {[e.payload['explained'] for e in events]}"
    registry = EventTypeRegistry.default()
    for e in events:
        registry.validate_payload(e.type, e.schema_version, e.payload, event_id=e.id)
        assert e.type == "explanation.summary" and e.payload["explained"] % SUMMARY_WINDOW == 0
    last = max(events, key=lambda e: e.payload["explained"])
    p = last.payload
    assert (p["model"], p["version"], p["method"]) == (rig.model, rig.v1.version, "integrated_gradients")
    rows = p["importance"]
    assert sorted(r["feature"] for r in rows) == sorted(rig.fields)
    assert [r["mean_abs"] for r in rows] == sorted((r["mean_abs"] for r in rows), reverse=True)
    assert all(v not in str(p) for v in rig.personal_values())


def test_health_is_the_standard_grpc_service(rig: Rig) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(rig.channel)
    for service in ("", SERVICE_NAME):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda r: setattr(r, "model", "no-such-model"), grpc.StatusCode.NOT_FOUND, "no-such-model"),
        (lambda r: setattr(r, "version", 999), grpc.StatusCode.NOT_FOUND, "no version 999"),
        # one field fewer, one field more (counted, never echoed), a wrong type
        (lambda r: r.features.pop("amount"), grpc.StatusCode.INVALID_ARGUMENT, "features.amount: missing"),
        (lambda r: r.features["email"].CopyFrom(value("a@b.example")), grpc.StatusCode.INVALID_ARGUMENT,
         "1 field(s) this model does not take"),
        (lambda r: r.features["device_new"].CopyFrom(value(1.0)), grpc.StatusCode.INVALID_ARGUMENT,
         "features.device_new: expected a flag"),
        (lambda r: setattr(r, "text", "a note"), grpc.StatusCode.INVALID_ARGUMENT, "send one of them"),
        (lambda r: setattr(r, "method", "kernel_shap"), grpc.StatusCode.INVALID_ARGUMENT,
         "feature_ablation, integrated_gradients"),
        (lambda r: setattr(r, "steps", 5000), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit of 1000"),
    ],
)
def test_bad_requests_get_clear_status_codes(rig: Rig, mutate, code: grpc.StatusCode, fragment: str) -> None:
    req = explain_pb2.ExplainRequest(model=rig.model, version=rig.v1.version, features=rig.features(7))
    mutate(req)
    with pytest.raises(grpc.RpcError) as info:
        rig.stub.Explain(req, timeout=30)
    assert info.value.code() == code and fragment in info.value.details()
    assert "a@b.example" not in info.value.details() and "email" not in info.value.details()


def test_tampered_artifact_is_refused(rig: Rig) -> None:
    weights = rig.v2.path / "state.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(grpc.RpcError) as info:
        rig.stub.Explain(explain_pb2.ExplainRequest(model=rig.model, version=rig.v2.version,
                                                    features=rig.features(7)), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "state.pt does not match its signed digest (tampered)" in info.value.details()
    # The version it refused is not explained from memory either: every call verifies until one load succeeds.
    with pytest.raises(grpc.RpcError) as again:
        rig.stub.Explain(explain_pb2.ExplainRequest(model=rig.model, version=rig.v2.version,
                                                    features=rig.features(7), method="feature_ablation"), timeout=30)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_explanations_differ_by_input_as_the_ground_truth_does(rig: Rig) -> None:
    # A large amount far from home on a young account is fraud by construction; its top fields say so.
    risky = {**rig.clean[9], "amount": 4000.0, "distance_from_home_km": 900.0, "account_age_days": 3}
    resp = rig.stub.Explain(explain_pb2.ExplainRequest(
        model=rig.model, version=rig.v1.version, target="fraud",
        features={k: value(v) for k, v in risky.items() if k in rig.fields}), timeout=30)
    top = {a.feature for a in resp.attributions[:3]}
    assert top == {"amount", "distance_from_home_km", "account_age_days"}, list(resp.attributions)[:5]
    assert all(a.value > 0 for a in resp.attributions[:3])
    assert np.isfinite([a.value for a in resp.attributions]).all()
