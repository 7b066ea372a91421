"""The inference front door against a real tritonserver, Kafka and Redis."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest

from bulwark.api.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from bulwark.artifacts import ArtifactStore
from bulwark.auth import Credentials, save_credentials
from bulwark.bus.reader import read_topic
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.families import FAMILIES
from bulwark.live import LiveState, write_live
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import PERSONAL_FIELDS, ReferenceGenerator
from bulwark.testing.services import ServiceProcess
from bulwark.testing.stack import TestStack, topic_env
from tests.integration.helpers import deploy, train_version

pytestmark = pytest.mark.integration
SERVICE_NAME = "bulwark.api.v1.InferenceService"


class FrontDoor:
    """A trained, deployed model and a running front door for this module's tests."""

    def __init__(self, stack: TestStack, tmp: Path, logs: Path) -> None:
        self.stack = stack
        self.model = "fraud-" + uuid.uuid4().hex[:6]
        self.topics = stack.topics(partitions=2)
        self.prefix = "in" + uuid.uuid4().hex[:8]
        self.home = tmp / "home"
        self.settings = stack.settings(triton=True, redis_prefix=self.prefix, home=self.home, **self.topics)
        self.env = {**stack.env(triton=True), **topic_env(self.topics), "BULWARK_REDIS_PREFIX": self.prefix,
                    "BULWARK_HOME": str(self.home), "BULWARK_INFERENCE_PORT": "0"}
        self.logs = logs
        self.v1 = train_version(stack, self.settings, model=self.model, seed=11)
        self.v2 = train_version(stack, self.settings, model=self.model, publish_events=False, hidden=[32])
        deploy(stack, self.settings, self.model, [self.v1.version], live=self.v1.version)
        self.svc, self.channel = self.start()

    def start(self, **env: str) -> tuple[ServiceProcess, grpc.Channel]:
        svc = ServiceProcess("services.inference", "inference", {**self.env, **env}, self.logs).start()
        port = make_redis(self.settings).hget(RedisKeys(self.prefix).heartbeat("inference", svc.instance), "x_grpc_port")
        return svc, grpc.insecure_channel(f"127.0.0.1:{int(port)}")

    @property
    def stub(self) -> inference_pb2_grpc.InferenceServiceStub:
        return inference_pb2_grpc.InferenceServiceStub(self.channel)

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.artifacts_path, verifier=load_verifier(self.stack.keys_dir),
                             kek=load_ring(RING_KEK, self.stack.keys_dir))


def features(payload: dict) -> dict[str, common_pb2.Value]:
    """A clean-event payload's model features as proto values."""
    out = {}
    for k in ("amount", "avg_amount_30d", "distance_from_home_km", "account_age_days", "txn_count_24h", "hour_of_day"):
        out[k] = common_pb2.Value(number=float(payload[k]))
    for k in ("card_present", "device_new"):
        out[k] = common_pb2.Value(flag=bool(payload[k]))
    for k in ("currency", "merchant_category", "country"):
        out[k] = common_pb2.Value(category=str(payload[k]))
    return out


@pytest.fixture(scope="module")
def door(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    d = FrontDoor(stack, tmp_path_factory.mktemp("inference"), tmp_path_factory.mktemp("inference-logs"))
    yield d
    d.channel.close()
    d.svc.terminate()


@pytest.fixture(autouse=True)
def _keep_module_services() -> Iterator[None]:
    # The module's front door must outlive each test (the session-wide orphan killer runs per test).
    from bulwark.testing import services

    started = list(services._STARTED)
    yield
    services._STARTED[:] = [s for s in services._STARTED if s not in started]


PAYLOADS = [e.payload for e in ReferenceGenerator(seed=77).events(64)]


def test_predict_equals_a_direct_torch_call_on_the_same_artifact(door: FrontDoor) -> None:
    loaded = FAMILIES.get("mlp").load(door.store().open(door.model, door.v1.version, "trained"))
    direct = loaded.predict(PAYLOADS)
    for payload, expected in zip(PAYLOADS[:20], direct[:20]):
        resp = door.stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(payload)), timeout=10)
        assert resp.version == door.v1.version and resp.model == door.model
        assert np.allclose(resp.probabilities, expected, atol=1e-5)
        assert list(resp.classes) == ["legitimate", "fraud"] and resp.label in resp.classes
        assert resp.guard.action == "allow" and resp.request_id


def test_concurrent_calls_from_many_clients_each_get_their_own_answer(door: FrontDoor) -> None:
    # Sixteen callers at once: the front door coalesces calls that arrive while a batch is in flight into one
    # Triton request (coalesce.py). Each answer must still be its own input's, under its own request id.
    payloads = [e.payload for e in ReferenceGenerator(seed=78).events(96)]
    loaded = FAMILIES.get("mlp").load(door.store().open(door.model, door.v1.version, "trained"))
    direct = loaded.predict(payloads)
    answers: dict[str, inference_pb2.PredictResponse] = {}

    def ask(i: int) -> None:
        req = inference_pb2.PredictRequest(model=door.model, features=features(payloads[i]), request_id=f"call-{i}",
                                           client_key=f"client-{i % 4}")
        answers[f"call-{i}"] = door.stub.Predict(req, timeout=10)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(ask, range(len(payloads))))
    for i, expected in enumerate(direct):
        resp = answers[f"call-{i}"]
        assert resp.request_id == f"call-{i}" and not resp.cached
        assert np.allclose(resp.probabilities, expected, atol=1e-5), i


def test_repeat_request_is_served_from_the_cache(door: FrontDoor) -> None:
    req = inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[30]))
    first = door.stub.Predict(req, timeout=10)
    for _ in range(40):  # the cache is written off the request path, a moment after the first answer
        second = door.stub.Predict(req, timeout=10)
        if second.cached:
            break
        time.sleep(0.05)
    assert not first.cached and second.cached
    assert list(first.probabilities) == list(second.probabilities)


def test_reflection_client_without_our_protos_gets_the_same_answer(door: FrontDoor) -> None:
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(door.channel))
    method = pool.FindServiceByName(SERVICE_NAME).FindMethodByName("Predict")
    req_cls, resp_cls = (message_factory.GetMessageClass(t) for t in (method.input_type, method.output_type))
    body = {"model": door.model, "features": {k: json_format.MessageToDict(v) for k, v in features(PAYLOADS[5]).items()}}
    call = door.channel.unary_unary(f"/{SERVICE_NAME}/Predict", request_serializer=req_cls.SerializeToString,
                                    response_deserializer=resp_cls.FromString)
    answer = json_format.MessageToDict(call(json_format.ParseDict(body, req_cls()), timeout=10))
    typed = door.stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[5])), timeout=10)
    assert np.allclose(answer["probabilities"], list(typed.probabilities))


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda r: r.features.pop("amount"), grpc.StatusCode.INVALID_ARGUMENT, "features.amount: missing"),
        (lambda r: r.features["amount"].CopyFrom(common_pb2.Value(category="lots")), grpc.StatusCode.INVALID_ARGUMENT,
         "features.amount: expected a number"),
        (lambda r: r.features["device_new"].CopyFrom(common_pb2.Value(number=1)), grpc.StatusCode.INVALID_ARGUMENT,
         "features.device_new: expected a flag"),
        (lambda r: setattr(r, "model", "no-such-model"), grpc.StatusCode.NOT_FOUND, "no-such-model"),
        (lambda r: setattr(r, "version", 999), grpc.StatusCode.NOT_FOUND, "no version 999"),
        (lambda r: setattr(r, "model", ""), grpc.StatusCode.INVALID_ARGUMENT, "model: required"),
    ],
)
def test_bad_requests_get_clear_status_codes(door: FrontDoor, mutate, code: grpc.StatusCode, fragment: str) -> None:
    req = inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[1]))
    mutate(req)
    with pytest.raises(grpc.RpcError) as info:
        door.stub.Predict(req, timeout=10)
    assert info.value.code() == code and fragment in info.value.details()


def test_batch_and_stream_answer_every_item_and_isolate_bad_ones(door: FrontDoor) -> None:
    good = [inference_pb2.PredictRequest(model=door.model, features=features(p), request_id=f"r{i}")
            for i, p in enumerate(PAYLOADS[:6])]
    bad = inference_pb2.PredictRequest(model=door.model, request_id="bad")
    batch = door.stub.PredictBatch(inference_pb2.PredictBatchRequest(items=[*good[:3], bad, *good[3:]]), timeout=10)
    assert [i.request_id for i in batch.items] == ["r0", "r1", "r2", "bad", "r3", "r4", "r5"]
    assert batch.items[3].error.reason == "INVALID_ARGUMENT" and not batch.items[0].error.reason
    streamed = list(door.stub.PredictStream(iter([good[0], bad, good[1]]), timeout=10))
    assert [s.request_id for s in streamed] == ["r0", "bad", "r1"]
    assert streamed[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert np.allclose(streamed[0].probabilities, batch.items[0].probabilities)
    with pytest.raises(grpc.RpcError) as info:
        door.stub.PredictBatch(inference_pb2.PredictBatchRequest(items=[good[0]] * 1001), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 1000" in info.value.details()


def test_inference_log_records_are_pseudonymous(door: FrontDoor) -> None:
    rid = "log-" + uuid.uuid4().hex[:8]
    door.stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[2]), request_id=rid,
                                                   client_key="customer-42"), timeout=10)
    deadline = time.monotonic() + 20
    record = None
    while record is None and time.monotonic() < deadline:
        record = next((e for _, e in read_topic(door.settings, door.settings.topics.inference_log, idle_ms=300)
                       if e and e.payload["request_id"] == rid), None)
    assert record is not None
    p = record.payload
    assert p["version"] == door.v1.version and set(p["features"]) >= {"amount", "country"}
    assert "customer-42" not in str(p) and not set(PERSONAL_FIELDS) & set(p["features"])


def prediction_series(path: Path) -> dict[tuple, float]:
    """The newest export's `bulwark.predictions` series: sorted (key, value) attribute pairs -> count."""
    lines = path.read_text().splitlines() if path.exists() else []
    out: dict[tuple, float] = {}
    for rm in json.loads(lines[-1])["resourceMetrics"] if lines else []:
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                if m["name"] == "bulwark.predictions":
                    for dp in m["sum"]["dataPoints"]:
                        pairs = ((a["key"], next(iter(a["value"].values()))) for a in dp["attributes"])
                        attrs = tuple(sorted(pairs))
                        out[attrs] = float(dp["asInt"])
    return out


def test_predictions_are_counted_by_outcome_in_metrics_and_the_heartbeat(door: FrontDoor,
                                                                         tmp_path: Path) -> None:
    # A door of its own, exporting metrics to a file every half second, so the counts are this test's alone.
    home = tmp_path / "home"
    svc, channel = door.start(BULWARK_TRACES_SINK="file", BULWARK_HOME=str(home),
                              OTEL_METRIC_EXPORT_INTERVAL="500")
    try:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        req = inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[40]),
                                           client_key="m-1")
        # A fresh cache key: another door of this module may have answered PAYLOADS[40] already.
        req.features["amount"].number += 0.123
        misses, hits = 1, 0
        assert not stub.Predict(req, timeout=10).cached
        for _ in range(40):  # the cache is written a moment after the answer
            if stub.Predict(req, timeout=10).cached:
                hits = 1
                break
            misses += 1
            time.sleep(0.05)
        assert hits == 1, "the repeat was never served from the cache"
        bad = inference_pb2.PredictRequest(model="no-such-" + uuid.uuid4().hex[:6],
                                           features=features(PAYLOADS[40]))
        with pytest.raises(grpc.RpcError):
            stub.Predict(bad, timeout=10)
        path = home / "metrics" / "inference.jsonl"
        want = {("ok", False): misses, ("ok", True): hits, ("NOT_FOUND", None): 1}
        seen: dict = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and seen != want:
            series = prediction_series(path)
            seen = {(dict(k)["bulwark.outcome"], dict(k).get("bulwark.cached")): v for k, v in series.items()}
            time.sleep(0.3)
        assert seen == want
        for attrs in series:
            a = dict(attrs)
            # The made-up model name never becomes a series; answers name the model they came from.
            assert bad.model not in a.values()
            assert a["bulwark.outcome"] != "ok" or a["bulwark.model"] == door.model
        # The heartbeat (`bulwark status`, the doctor) counts the same answers; it beats on its own clock.
        key, handled = RedisKeys(door.prefix).heartbeat("inference", svc.instance), -1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and handled != misses + hits:
            handled = int(make_redis(door.settings, decode=True).hget(key, "handled") or 0)
            time.sleep(0.3)
        assert handled == misses + hits
    finally:
        channel.close()
        svc.terminate()


def test_new_version_goes_live_without_a_failed_request(door: FrontDoor) -> None:
    errors: list[str] = []
    versions: set[int] = set()
    stop = threading.Event()

    def load() -> None:
        stub = door.stub
        i = 0
        while not stop.is_set():
            try:
                # Many callers (distinct client keys), so the guard's per-client rate limit is not what is tested.
                r = stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[i % 64]),
                                                              request_id=f"load-{i}", client_key=f"c{i}"), timeout=5)
                versions.add(r.version)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code()}: {exc.details()}")
            i += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(1)
        deploy(door.stack, door.settings, door.model, [door.v1.version, door.v2.version], live=door.v1.version)
        time.sleep(1)
        write_live(make_redis(door.settings), RedisKeys(door.prefix),
                   LiveState(model=door.model, live_version=door.v2.version, loaded=[door.v1.version, door.v2.version]))
        time.sleep(2)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert versions == {door.v1.version, door.v2.version}
    last = door.stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[9])), timeout=5)
    assert last.version == door.v2.version


def test_credentials_required_means_unauthenticated_then_permission_denied(door: FrontDoor, tmp_path: Path) -> None:
    import shutil

    keys = tmp_path / "keys"
    shutil.copytree(door.stack.keys_dir, keys)
    creds = Credentials()
    good = creds.add_token("payments-api", ["predict"])
    wrong = creds.add_token("dashboards", ["explain"])
    save_credentials(creds, keys)
    svc, channel = door.start(BULWARK_AUTH_REQUIRED="true", BULWARK_KEYS_DIR=str(keys))
    try:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        req = inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[3]))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req, timeout=10, metadata=[("authorization", f"Bearer {wrong}")])
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "predict" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req, timeout=10, metadata=[("authorization", "Bearer bwk_forged")])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.Predict(req, timeout=10, metadata=[("authorization", f"Bearer {good}")])
        assert ok.label
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # health never needs credentials
    finally:
        channel.close()
        svc.terminate()


def test_triton_down_is_unavailable_within_the_deadline_and_recovers(door: FrontDoor) -> None:
    from bulwark.triton.client import TritonClient

    req = inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[40]))
    door.stub.Predict(req, timeout=5)
    door.stack.triton.kill()
    try:
        unseen = next(ReferenceGenerator(seed=4242).events(1)).payload  # not in the response cache
        fresh = inference_pb2.PredictRequest(model=door.model, features=features(unseen))
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            door.stub.Predict(fresh, timeout=2)
        assert time.monotonic() - started < 2.0
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "Triton" in info.value.details()
    finally:
        door.stack.triton.start()
        TritonClient(door.stack.triton.spec.endpoints["grpc"]).load(door.model)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert door.stub.Predict(fresh, timeout=5).label
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_guard_rejects_a_client_over_its_rate_and_flags_an_out_of_range_input(door: FrontDoor) -> None:
    burst = 400  # the default policy's burst per client per second; items of a batch count one each
    items = [inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[i % 64]), client_key="greedy")
             for i in range(burst + 50)]
    batch = door.stub.PredictBatch(inference_pb2.PredictBatchRequest(items=items), timeout=10)
    assert all(i.error.reason == "RESOURCE_EXHAUSTED" and "rate limit" in i.error.message for i in batch.items)
    polite = door.stub.PredictBatch(inference_pb2.PredictBatchRequest(items=[
        inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[1]), client_key="polite")]), timeout=10)
    assert not polite.items[0].error.reason  # other clients are not affected
    odd = dict(PAYLOADS[8], amount=5e7)  # far beyond anything in training: out of range and out of distribution
    with pytest.raises(grpc.RpcError) as err:
        door.stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(odd),
                                                       client_key="careful"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().count("amount is far outside the training range") == 1  # said once, with the range
    again = door.stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(PAYLOADS[8]),
                                                           client_key="careful"), timeout=5)
    assert again.guard.action == "allow"  # the same client's ordinary input is still served
    fractional = dict(PAYLOADS[9], txn_count_24h=2.5)  # training only saw whole counts: served, but flagged
    resp = door.stub.Predict(inference_pb2.PredictRequest(model=door.model, features=features(fractional),
                                                          client_key="careful"), timeout=5)
    assert resp.guard.action == "flag"
    assert any("txn_count_24h is fractional" in r for r in resp.guard.reasons)
