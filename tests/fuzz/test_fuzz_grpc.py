"""Fuzzing every gRPC request parser through a real gRPC server: InferenceService (Predict, PredictBatch),
ExplainService (Explain, ExplainBatch) and ModelAdmin (every method), each over its real servicer and
error interceptor, with real Redis and Kafka behind them (Triton is an address where none listens).

Any request message, however odd, answers with a status naming the problem (INVALID_ARGUMENT, NOT_FOUND,
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNAVAILABLE...) or an answer: never INTERNAL or UNKNOWN, never a
hang, and the server keeps serving. Bytes that are not a protobuf message are refused by grpcio's own
deserializer (INTERNAL "Exception deserializing request!", documented in docs/security.md).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given
from hypothesis import strategies as st

from bulwark.api.v1 import (admin_pb2, admin_pb2_grpc, common_pb2, explain_pb2, explain_pb2_grpc, inference_pb2,
                            inference_pb2_grpc)
from bulwark.bus.producer import EventProducer, make_producer
from bulwark.crypto import load_verifier
from bulwark.features import REFERENCE_FEATURES, FeatureSpec
from bulwark.grpcx import build_server
from bulwark.live import LiveReader
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.testing.stack import TestStack
from bulwark.triton.client import TritonClient
from bulwark.triton.repository import ModelRepository
from bulwark.versions import VersionCatalog
from services.explainer.dataplane import ExplainerDataPlane
from services.explainer.servicer import ExplainServicer
from services.explainer.settings import ExplainerSettings
from services.inference.dataplane import InferenceDataPlane
from services.inference.servicer import InferenceServicer, to_input
from services.inference.settings import InferenceSettings
from services.updater.admin import ModelAdminServicer
from services.updater.rollout import RolloutController
from services.updater.settings import UpdaterSettings
from services.updater.signals import SignalStore
from tests.fuzz.conftest import budget
from tests.unit.services.test_explainer_dataplane import RECORDS, FakeLive, FakeLoader, _version

pytestmark = pytest.mark.integration
FIELD_NAMES = [f["name"] for f in REFERENCE_FEATURES]
SPEC = FeatureSpec.fit(RECORDS, REFERENCE_FEATURES)
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE,
           grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OUT_OF_RANGE}

texts = st.text(max_size=60) | st.sampled_from(["fraud", "", "x" * 200, "../../etc", "\x00", "名前"])
values = st.one_of(
    st.builds(common_pb2.Value, number=st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(common_pb2.Value, category=texts),
    st.builds(common_pb2.Value, flag=st.booleans()),
    st.just(common_pb2.Value()))  # no kind set


def messages(cls: type, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any instance of a request message: every field drawn from its type, maps of features included."""
    fields = {}
    for f in cls.DESCRIPTOR.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
            fields[f.name] = st.dictionaries(keys, values, max_size=12)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 1:
                continue
            sub = messages(message_factory.GetMessageClass(f.message_type), depth + 1)
            fields[f.name] = st.lists(sub, max_size=5) if f.label == FieldDescriptor.LABEL_REPEATED else sub
        elif f.type == FieldDescriptor.TYPE_STRING:
            fields[f.name] = texts
        elif f.type == FieldDescriptor.TYPE_BOOL:
            fields[f.name] = st.booleans()
        elif f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            fields[f.name] = st.floats(allow_nan=True)
        else:
            fields[f.name] = st.integers(-2**31, 2**31 - 1)
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: _build(cls, kw))


def _build(cls: type, kw: dict[str, Any]) -> Any:
    msg = cls()
    for name, value in kw.items():
        field = getattr(msg, name)
        if isinstance(value, dict):
            for k, v in value.items():
                field[k].CopyFrom(v)
        elif isinstance(value, list):
            field.extend(value)
        elif hasattr(value, "DESCRIPTOR"):
            field.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


class Servers:
    """One in-process gRPC server hosting the three services over real Redis and Kafka."""

    def __init__(self, stack: TestStack, tmp: Path) -> None:
        topics = stack.topics(partitions=1)
        self.prefix = "gf" + uuid.uuid4().hex[:8]
        settings = stack.settings(redis_prefix=self.prefix, home=tmp, **topics)
        client = make_redis(settings)
        keys = RedisKeys(self.prefix)
        verifier = load_verifier(stack.keys_dir)
        registry = ModelRegistry(client, keys)
        triton = TritonClient("127.0.0.1:1")  # nothing listens: calls that get this far are UNAVAILABLE
        catalog = VersionCatalog(registry, verifier)
        self.producer = EventProducer(make_producer(settings, client_id="fuzz-admin"))
        inference = InferenceDataPlane(settings, InferenceSettings(max_batch_items=50), client, triton, catalog,
                                       LiveReader(client, keys, ttl_s=0), None)
        explainer = ExplainerDataPlane(settings, ExplainerSettings(), client, FakeLoader(_version()), FakeLive())
        controller = RolloutController(UpdaterSettings(), client, keys, registry, triton,
                                       ModelRepository(tmp / "repo", verifier), catalog, verifier,
                                       SignalStore(client, keys))
        self.server = build_server(port=0, host="127.0.0.1", service_names=[], register=[
            (inference_pb2_grpc.add_InferenceServiceServicer_to_server, InferenceServicer(inference)),
            (explain_pb2_grpc.add_ExplainServiceServicer_to_server, ExplainServicer(explainer)),
            (admin_pb2_grpc.add_ModelAdminServicer_to_server, ModelAdminServicer(settings, controller, self.producer)),
        ])
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        self._planes = (inference,)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)
        self._planes[0].close()
        self.producer.close()


@pytest.fixture(scope="module")
def servers(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(stack, tmp_path_factory.mktemp("fuzz-grpc"))
    yield s
    s.close()


def _call(method: Any, request: Any) -> grpc.StatusCode:
    try:
        method(request, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"{exc.code()}: {exc.details()}"
        assert exc.details(), "a refusal must say what is wrong"
        return exc.code()


@budget(150)
@given(req=messages(inference_pb2.PredictRequest))
def test_predict_any_request_is_answered_with_a_named_status(servers: Servers, req: Any) -> None:
    _call(inference_pb2_grpc.InferenceServiceStub(servers.channel).Predict, req)


@budget(40)
@given(req=messages(inference_pb2.PredictBatchRequest))
def test_predict_batch_any_request_answers_every_item_or_a_named_status(servers: Servers, req: Any) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(servers.channel)
    try:
        out = stub.PredictBatch(req, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"{exc.code()}: {exc.details()}"
        return
    assert len(out.items) == len(req.items)
    assert all(i.error.reason != "INTERNAL" for i in out.items)


@budget(300)
@given(req=messages(inference_pb2.PredictRequest))
def test_predict_parser_and_feature_validation_raise_only_named_errors(req: Any) -> None:
    """The parser and the version's validation, where a deployed model would run them (no Triton needed)."""
    from bulwark.errors import BulwarkError

    try:
        inp = to_input(req)
        InferenceDataPlane._check_request(inp)
        record = inp.record()
        SPEC.validate(record)
        SPEC.encode([record])
    except BulwarkError as exc:
        assert exc.reason.value != "INTERNAL" and exc.message


@budget(120)
@given(req=messages(explain_pb2.ExplainRequest))
def test_explain_any_request_is_answered_with_a_named_status(servers: Servers, req: Any) -> None:
    _call(explain_pb2_grpc.ExplainServiceStub(servers.channel).Explain, req)


@budget(40)
@given(method=st.sampled_from(["GetStatus", "ListVersions", "ListModels", "Promote", "Rollback", "Pause", "Resume"]),
       data=st.data())
def test_model_admin_any_request_is_answered_with_a_named_status(servers: Servers, method: str, data: Any) -> None:
    stub = admin_pb2_grpc.ModelAdminStub(servers.channel)
    cls = {"GetStatus": admin_pb2.GetStatusRequest, "ListVersions": admin_pb2.ListVersionsRequest,
           "ListModels": admin_pb2.ListModelsRequest}.get(method, admin_pb2.ChangeRequest)
    _call(getattr(stub, method), data.draw(messages(cls)))


@budget(60)
@given(raw=st.binary(max_size=300))
def test_raw_bytes_are_refused_by_the_deserializer_or_parsed(servers: Servers, raw: bytes) -> None:
    call = servers.channel.unary_unary("/bulwark.api.v1.InferenceService/Predict",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(raw, timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.INTERNAL:
            assert "deserializ" in exc.details().lower(), exc.details()  # the one documented INTERNAL
        else:
            assert exc.code() in ALLOWED, f"{exc.code()}: {exc.details()}"
    # The server still answers afterwards.
    _call(inference_pb2_grpc.InferenceServiceStub(servers.channel).Predict, inference_pb2.PredictRequest(model="m"))
