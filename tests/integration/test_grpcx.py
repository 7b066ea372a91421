"""Every Bulwark gRPC server: health checking, reflection, and errors mapped to clear status codes."""

from __future__ import annotations

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

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


@pytest.fixture(scope="module")
def channel():
    srv = build_server(port=0, host="127.0.0.1", register=[(inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                                                            _Servicer())], service_names=[SERVICE])
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
