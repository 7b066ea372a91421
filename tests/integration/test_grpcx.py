"""Every Bulwark gRPC server: health checking, reflection, and errors mapped to clear status codes."""

from __future__ import annotations

import time

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
from bulwark.errors import BulwarkError, InvalidArgumentError, NotFoundError, Reason, UnavailableError
from bulwark.grpcx import build_server

SERVICE = "bulwark.api.v1.InferenceService"


class _Servicer(inference_pb2_grpc.InferenceServiceServicer):
    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        if request.model == "missing":
            raise NotFoundError("model 'missing' is not registered; list models with `bulwark models list`")
        if request.model == "bad":
            raise InvalidArgumentError("features.amount: expected a number")
        if request.model == "down":
            raise UnavailableError("Triton is unreachable at 127.0.0.1:1")
        if request.model == "redis-restarting":  # a raw client error from a servicer's own Redis call
            raise redis.BusyLoadingError("Redis is loading the dataset in memory")
        if request.model == "crash":
            raise RuntimeError("secret value alice@example.com")
        if request.model == "limit":
            raise BulwarkError(Reason.RESOURCE_EXHAUSTED, "batch of 5000 items exceeds the limit of 1000")
        return inference_pb2.PredictResponse(model=request.model, label="ok")

    def PredictStream(self, request_iterator, context):  # noqa: N802
        for request in request_iterator:
            if request.model == "missing":
                raise NotFoundError("model 'missing' is not registered")
            yield inference_pb2.PredictResponse(model=request.model, label="ok")
            if request.model == "forever":  # answers until the client goes away
                while context.is_active():
                    yield inference_pb2.PredictResponse(model=request.model, label="again")
                    time.sleep(0.01)


READER = InMemoryMetricReader()


@pytest.fixture(scope="module")
def channel():
    srv = build_server(port=0, host="127.0.0.1", register=[(inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                                                            _Servicer())], service_names=[SERVICE],
                       meter=MeterProvider(metric_readers=[READER]).get_meter("test"))
    srv.start()
    ch = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield ch, srv
    ch.close()
    srv.stop(0)


@pytest.mark.parametrize(
    ("model", "code", "fragment"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "bulwark models list"),
        ("bad", grpc.StatusCode.INVALID_ARGUMENT, "features.amount"),
        ("down", grpc.StatusCode.UNAVAILABLE, "Triton is unreachable"),
        ("limit", grpc.StatusCode.RESOURCE_EXHAUSTED, "limit of 1000"),
        ("redis-restarting", grpc.StatusCode.UNAVAILABLE, "Redis unreachable (BusyLoadingError); retry"),
        ("crash", grpc.StatusCode.INTERNAL, "has been logged"),
    ],
)
def test_errors_map_to_status_codes_with_actionable_messages(channel, model: str, code: grpc.StatusCode,
                                                             fragment: str) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel[0])
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(inference_pb2.PredictRequest(model=model), timeout=5)
    assert info.value.code() == code
    assert fragment in info.value.details()
    assert "alice" not in info.value.details()  # unknown errors never echo their message


def test_health_reports_serving_and_not_serving(channel) -> None:
    ch, srv = channel
    health = health_pb2_grpc.HealthStub(ch)
    assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == health_pb2.HealthCheckResponse.SERVING
    srv.set_serving(False, SERVICE)
    assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == \
        health_pb2.HealthCheckResponse.NOT_SERVING
    srv.set_serving(True, SERVICE)


def test_reflection_lets_a_client_without_our_protos_call_the_service(channel) -> None:
    from google.protobuf import descriptor_pool, json_format, message_factory

    ch, _ = channel
    db = ProtoReflectionDescriptorDatabase(ch)
    assert SERVICE in db.get_services() and "grpc.health.v1.Health" in db.get_services()
    pool = descriptor_pool.DescriptorPool(db)
    method = pool.FindServiceByName(SERVICE).FindMethodByName("Predict")
    req_cls = message_factory.GetMessageClass(method.input_type)
    resp_cls = message_factory.GetMessageClass(method.output_type)
    call = ch.unary_unary(f"/{SERVICE}/Predict", request_serializer=req_cls.SerializeToString,
                          response_deserializer=resp_cls.FromString)
    resp = call(json_format.ParseDict({"model": "fraud"}, req_cls()), timeout=5)
    assert json_format.MessageToDict(resp)["label"] == "ok"


def call_counts() -> dict[tuple[str, str, int], int]:
    """(service, method, status code) -> calls timed in rpc.server.duration so far."""
    out: dict[tuple[str, str, int], int] = {}
    data = READER.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "rpc.server.duration":
                    for p in m.data.data_points:
                        a = p.attributes
                        assert a["rpc.system"] == "grpc"
                        out[(a["rpc.service"], a["rpc.method"], a["rpc.grpc.status_code"])] = p.count
    return out


def test_every_call_is_timed_by_service_method_and_status(channel) -> None:
    stub, before = inference_pb2_grpc.InferenceServiceStub(channel[0]), call_counts()
    stub.Predict(inference_pb2.PredictRequest(model="fine"), timeout=5)
    for model in ("missing", "crash"):
        with pytest.raises(grpc.RpcError):
            stub.Predict(inference_pb2.PredictRequest(model=model), timeout=5)
    answers = stub.PredictStream(iter([inference_pb2.PredictRequest(model=m) for m in ("a", "b")]))
    assert [r.label for r in answers] == ["ok", "ok"]
    with pytest.raises(grpc.RpcError):
        list(stub.PredictStream(iter([inference_pb2.PredictRequest(model="missing")])))
    health_pb2_grpc.HealthStub(channel[0]).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    after = call_counts()
    # Only the services called here: a stream an earlier test left open (reflection's, cancelled when its
    # client is collected) may end, and be timed as CANCELLED, during this test.
    grown = {k: v - before.get(k, 0) for k, v in after.items()
             if v != before.get(k, 0) and k[0] in (SERVICE, "grpc.health.v1.Health")}
    ok, not_found, internal = (c.value[0] for c in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND,
                                                    grpc.StatusCode.INTERNAL))
    assert grown == {(SERVICE, "Predict", ok): 1, (SERVICE, "Predict", not_found): 1,
                     (SERVICE, "Predict", internal): 1, (SERVICE, "PredictStream", ok): 1,
                     (SERVICE, "PredictStream", not_found): 1,
                     ("grpc.health.v1.Health", "Check", ok): 1}


def test_a_stream_the_client_cancels_is_timed_as_cancelled(channel) -> None:
    stub, before = inference_pb2_grpc.InferenceServiceStub(channel[0]), call_counts()
    key = (SERVICE, "PredictStream", grpc.StatusCode.CANCELLED.value[0])
    call = stub.PredictStream(iter([inference_pb2.PredictRequest(model="forever")]))
    assert next(call).label == "ok"
    call.cancel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and call_counts().get(key, 0) == before.get(key, 0):
        time.sleep(0.05)
    assert call_counts().get(key, 0) == before.get(key, 0) + 1
