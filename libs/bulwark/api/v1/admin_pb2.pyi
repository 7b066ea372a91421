from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("model", "live_version", "versions", "rollout_stage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_STAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    live_version: int
    versions: int
    rollout_stage: str
    def __init__(self, model: _Optional[str] = ..., live_version: _Optional[int] = ..., versions: _Optional[int] = ..., rollout_stage: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("model", "version", "state", "family", "parent", "created_at", "metrics", "artifact_digest", "signature_ok", "dataset_digest", "quantization", "gate", "card", "forgotten_subjects", "forget_deadline")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CardEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_OK_FIELD_NUMBER: _ClassVar[int]
    DATASET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    FORGET_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    state: str
    family: str
    parent: int
    created_at: str
    metrics: _containers.ScalarMap[str, float]
    artifact_digest: str
    signature_ok: bool
    dataset_digest: str
    quantization: str
    gate: str
    card: _containers.ScalarMap[str, str]
    forgotten_subjects: int
    forget_deadline: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[str] = ..., family: _Optional[str] = ..., parent: _Optional[int] = ..., created_at: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., artifact_digest: _Optional[str] = ..., signature_ok: _Optional[bool] = ..., dataset_digest: _Optional[str] = ..., quantization: _Optional[str] = ..., gate: _Optional[str] = ..., card: _Optional[_Mapping[str, str]] = ..., forgotten_subjects: _Optional[int] = ..., forget_deadline: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class Signals(_message.Message):
    __slots__ = ("error_rate", "latency_p99_ms", "guard_flag_rate", "agreement", "accuracy", "requests", "labeled")
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    GUARD_FLAG_RATE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LABELED_FIELD_NUMBER: _ClassVar[int]
    error_rate: float
    latency_p99_ms: float
    guard_flag_rate: float
    agreement: float
    accuracy: float
    requests: int
    labeled: int
    def __init__(self, error_rate: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., guard_flag_rate: _Optional[float] = ..., agreement: _Optional[float] = ..., accuracy: _Optional[float] = ..., requests: _Optional[int] = ..., labeled: _Optional[int] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("candidate_version", "stage", "share", "started_at", "updated_at", "candidate", "live", "decision", "reason")
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    candidate_version: int
    stage: str
    share: float
    started_at: str
    updated_at: str
    candidate: Signals
    live: Signals
    decision: str
    reason: str
    def __init__(self, candidate_version: _Optional[int] = ..., stage: _Optional[str] = ..., share: _Optional[float] = ..., started_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., candidate: _Optional[_Union[Signals, _Mapping]] = ..., live: _Optional[_Union[Signals, _Mapping]] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("model", "live_version", "rollout", "loaded_versions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    live_version: int
    rollout: Rollout
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., live_version: _Optional[int] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ..., loaded_versions: _Optional[_Iterable[int]] = ...) -> None: ...

class ChangeRequest(_message.Message):
    __slots__ = ("model", "version", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
