from bulwark.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "features", "text", "request_id", "client_key")
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
    CLIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    features: _containers.MessageMap[str, _common_pb2.Value]
    text: str
    request_id: str
    client_key: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., features: _Optional[_Mapping[str, _common_pb2.Value]] = ..., text: _Optional[str] = ..., request_id: _Optional[str] = ..., client_key: _Optional[str] = ...) -> None: ...

class GuardVerdict(_message.Message):
    __slots__ = ("action", "ood_score", "adversarial_score", "reasons")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OOD_SCORE_FIELD_NUMBER: _ClassVar[int]
    ADVERSARIAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    action: str
    ood_score: float
    adversarial_score: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, action: _Optional[str] = ..., ood_score: _Optional[float] = ..., adversarial_score: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("request_id", "model", "version", "label", "score", "probabilities", "classes", "cached", "guard", "trace_id", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    version: int
    label: str
    score: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    classes: _containers.RepeatedScalarFieldContainer[str]
    cached: bool
    guard: GuardVerdict
    trace_id: str
    error: _common_pb2.ItemError
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., classes: _Optional[_Iterable[str]] = ..., cached: _Optional[bool] = ..., guard: _Optional[_Union[GuardVerdict, _Mapping]] = ..., trace_id: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PredictRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[PredictRequest, _Mapping]]] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PredictResponse]
    def __init__(self, items: _Optional[_Iterable[_Union[PredictResponse, _Mapping]]] = ...) -> None: ...
