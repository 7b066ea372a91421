from bulwark.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplainRequest(_message.Message):
    __slots__ = ("model", "version", "features", "text", "request_id", "method", "steps", "target")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    features: _containers.MessageMap[str, _common_pb2.Value]
    text: str
    request_id: str
    method: str
    steps: int
    target: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., features: _Optional[_Mapping[str, _common_pb2.Value]] = ..., text: _Optional[str] = ..., request_id: _Optional[str] = ..., method: _Optional[str] = ..., steps: _Optional[int] = ..., target: _Optional[str] = ...) -> None: ...

class Attribution(_message.Message):
    __slots__ = ("feature", "value")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: float
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class Convergence(_message.Message):
    __slots__ = ("delta", "relative_delta", "converged", "steps")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_DELTA_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    delta: float
    relative_delta: float
    converged: bool
    steps: int
    def __init__(self, delta: _Optional[float] = ..., relative_delta: _Optional[float] = ..., converged: _Optional[bool] = ..., steps: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model", "version", "method", "target", "attributions", "baseline", "output", "baseline_output", "convergence", "cached", "request_id", "error", "baseline_kind", "model_form", "artifact_digest", "family")
    class BaselineEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    BASELINE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BASELINE_KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FORM_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    method: str
    target: str
    attributions: _containers.RepeatedCompositeFieldContainer[Attribution]
    baseline: _containers.ScalarMap[str, float]
    output: float
    baseline_output: float
    convergence: Convergence
    cached: bool
    request_id: str
    error: _common_pb2.ItemError
    baseline_kind: str
    model_form: str
    artifact_digest: str
    family: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., method: _Optional[str] = ..., target: _Optional[str] = ..., attributions: _Optional[_Iterable[_Union[Attribution, _Mapping]]] = ..., baseline: _Optional[_Mapping[str, float]] = ..., output: _Optional[float] = ..., baseline_output: _Optional[float] = ..., convergence: _Optional[_Union[Convergence, _Mapping]] = ..., cached: _Optional[bool] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ..., baseline_kind: _Optional[str] = ..., model_form: _Optional[str] = ..., artifact_digest: _Optional[str] = ..., family: _Optional[str] = ...) -> None: ...

class ExplainBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ExplainRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ExplainRequest, _Mapping]]] = ...) -> None: ...

class ExplainBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ExplainResponse]
    def __init__(self, items: _Optional[_Iterable[_Union[ExplainResponse, _Mapping]]] = ...) -> None: ...
