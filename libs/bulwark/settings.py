"""Settings from the environment, validated once at start.

One prefix, `BULWARK_`, for everything Bulwark owns; each service adds its own class with the prefix
`BULWARK_<SERVICE>_`. Infrastructure also honours its conventional names (KAFKA_BOOTSTRAP_SERVERS,
REDIS_URL, TRITON_GRPC_URL, OTEL_*). Only this module and the services' settings modules read the
environment, and only when `load_settings()` is called from a `main()`, never at import time.

A bad value stops the process with a `SettingsError` that names the environment variable to fix.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bulwark import topics as t
from bulwark.errors import SettingsError

S = TypeVar("S", bound=BaseSettings)


def _env(*names: str) -> AliasChoices:
    """Accept the first of several environment variable names."""
    return AliasChoices(*names)


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class CommonSettings(BaseSettings):
    """What every Bulwark process needs: where the infrastructure is, keys, topics, limits."""

    model_config = SettingsConfigDict(
        env_prefix="BULWARK_", frozen=True, extra="ignore", use_attribute_docstrings=True, populate_by_name=True
    )

    # --- Kafka -----------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=_env("BULWARK_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")
    )
    """Comma-separated host:port list of Kafka brokers."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=_env("BULWARK_KAFKA_SECURITY_PROTOCOL", "KAFKA_SECURITY_PROTOCOL")
    )
    """How clients talk to the brokers."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism when the protocol is SASL_*."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password."""
    kafka_ssl_cafile: Path | None = None
    """CA bundle that signed the brokers' certificates."""
    kafka_ssl_certfile: Path | None = None
    """Client certificate for mutual TLS with the brokers."""
    kafka_ssl_keyfile: Path | None = None
    """Private key of the client certificate."""
    kafka_partitions: int = Field(4, ge=1, le=1024)
    """Partitions for topics Bulwark creates."""
    kafka_replication_factor: int = Field(1, ge=1, le=7)
    """Replication factor for topics Bulwark creates (3 on a production cluster)."""
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000)
    """Consumer-group session timeout; a dead member is replaced after about this long."""
    kafka_heartbeat_interval_ms: int = Field(1_000, ge=100)
    """Consumer-group heartbeat interval; keep it under a third of the session timeout."""

    # --- Redis -----------------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("BULWARK_REDIS_URL", "REDIS_URL"))
    """Redis URL; rediss:// for TLS."""
    redis_password: SecretStr | None = Field(None, validation_alias=_env("BULWARK_REDIS_PASSWORD", "REDIS_PASSWORD"))
    """Redis AUTH password, when not in the URL."""
    redis_tls_ca: Path | None = None
    """CA bundle for a rediss:// server."""
    redis_tls_cert: Path | None = None
    """Client certificate for Redis mutual TLS."""
    redis_tls_key: Path | None = None
    """Private key for the Redis client certificate."""
    redis_prefix: str = Field("bulwark", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    """Prefix of every Redis key Bulwark writes, so several platforms can share one Redis."""

    # --- Triton ----------------------------------------------------------------------------------
    triton_grpc_url: str = Field("127.0.0.1:8001", validation_alias=_env("BULWARK_TRITON_GRPC_URL", "TRITON_GRPC_URL"))
    """host:port of Triton's KServe v2 gRPC endpoint."""
    triton_http_url: str = Field("127.0.0.1:8000", validation_alias=_env("BULWARK_TRITON_HTTP_URL", "TRITON_HTTP_URL"))
    """host:port of Triton's HTTP endpoint (health, metrics)."""

    # --- Bulwark's own gRPC APIs, as clients (the CLI, the console) reach them --------------------
    inference_url: str = "127.0.0.1:50051"
    """host:port of InferenceService."""
    explainer_url: str = "127.0.0.1:50052"
    """host:port of ExplainService."""
    admin_url: str = "127.0.0.1:50053"
    """host:port of ModelAdmin (the updater)."""
    client_token: SecretStr | None = Field(None, validation_alias=_env("BULWARK_CLIENT_TOKEN", "BULWARK_TOKEN"))
    """Bearer token the CLI and console send to Bulwark's APIs when credentials are required."""
    client_tls_ca: Path | None = None
    """CA bundle to verify Bulwark's gRPC servers (TLS); unset connects in plaintext."""

    # --- Files and keys --------------------------------------------------------------------------
    home: Path = Path("var")
    """State folder for the local stack: logs, artifacts, model repository, keys."""
    keys_dir: Path | None = None
    """Folder of key files (`bulwark keys init` writes one); default `<home>/keys`."""
    artifact_store: str | None = None
    """Where model artifacts live: a folder path or file:// URL; default `<home>/artifacts`."""
    model_repository: Path | None = None
    """Triton's model repository folder; default `<home>/model-repository`."""

    # --- gRPC servers ----------------------------------------------------------------------------
    auth_required: bool = False
    """Every gRPC API demands credentials (bearer token or client certificate) with the method's scope."""
    grpc_tls_cert: Path | None = None
    """Server certificate for gRPC TLS (with the key); unset serves plaintext gRPC."""
    grpc_tls_key: Path | None = None
    """Private key of the server certificate."""
    grpc_tls_client_ca: Path | None = None
    """CA that signs client certificates: set it to require mutual TLS."""

    # --- Events ----------------------------------------------------------------------------------
    max_event_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    """Largest record value accepted; a larger one goes to the dead-letter topic."""
    idempotence_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    """How long a handled event id is remembered, so a redelivery has no second effect."""

    # --- Health and tracing ----------------------------------------------------------------------
    instance_id: str = Field(default_factory=_default_instance)
    """This process's instance name in heartbeats (a pod name in Kubernetes)."""
    heartbeat_interval_s: float = Field(2.0, gt=0, le=60)
    """How often each service writes its heartbeat."""
    heartbeat_ttl_s: float = Field(10.0, gt=0, le=600)
    """A heartbeat older than this means the instance is down."""
    traces_sample_ratio: float = Field(0.1, ge=0.0, le=1.0)
    """Share of new traces recorded (parent-based: a child follows its parent's decision, so a sampled
    event is traced end to end; the doctor's probes are always sampled). OTEL_TRACES_SAMPLER overrides."""
    traces_sink: Literal["auto", "otlp", "kafka", "file", "none"] = "auto"
    """Where spans go: auto is OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else the otlp_spans topic."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of every Bulwark logger."""

    # --- Topics ----------------------------------------------------------------------------------
    topic_events_raw: str = t.EVENTS_RAW
    """Producers' data events; the only topic that may hold personal data."""
    topic_events_clean: str = t.EVENTS_CLEAN
    """Anonymized events."""
    topic_events_dlq: str = t.EVENTS_DLQ
    """Rejected records with their reason; payloads encrypted."""
    topic_training_requests: str = t.TRAINING_REQUESTS
    """Requests to train (drift, schedule, forgetting, people)."""
    topic_models_trained: str = t.MODELS_TRAINED
    """Trained, signed model versions."""
    topic_models_quantized: str = t.MODELS_QUANTIZED
    """Compressed model versions with their report."""
    topic_models_validated: str = t.MODELS_VALIDATED
    """Gate verdicts."""
    topic_models_deployed: str = t.MODELS_DEPLOYED
    """Rollout changes."""
    topic_inference_log: str = t.INFERENCE_LOG
    """Sampled, pseudonymous prediction records."""
    topic_alerts: str = t.ALERTS
    """Typed alerts with evidence."""
    topic_audit: str = t.AUDIT
    """Audit trail of admin and re-identification actions."""
    topic_explanations: str = t.EXPLANATIONS
    """Global feature importance per model version (`explanation.summary`), from the explainer."""
    topic_otlp_spans: str = t.OTLP_SPANS
    """Spans in OTLP protobuf when no collector is configured."""

    @property
    def topics(self) -> t.Topics:
        """The topic names in use."""
        return t.Topics(
            events_raw=self.topic_events_raw,
            events_clean=self.topic_events_clean,
            events_dlq=self.topic_events_dlq,
            training_requests=self.topic_training_requests,
            models_trained=self.topic_models_trained,
            models_quantized=self.topic_models_quantized,
            models_validated=self.topic_models_validated,
            models_deployed=self.topic_models_deployed,
            inference_log=self.topic_inference_log,
            alerts=self.topic_alerts,
            audit=self.topic_audit,
            explanations=self.topic_explanations,
            otlp_spans=self.topic_otlp_spans,
        )

    @property
    def keys_path(self) -> Path:
        """The key folder in use."""
        return self.keys_dir or self.home / "keys"

    @property
    def artifacts_path(self) -> Path:
        """The artifact store folder in use."""
        store = self.artifact_store or str(self.home / "artifacts")
        return Path(store.removeprefix("file://"))

    @property
    def model_repository_path(self) -> Path:
        """Triton's model repository folder in use."""
        return self.model_repository or self.home / "model-repository"


class ServiceSettings(BaseSettings):
    """Base of each service's own settings; subclasses set `env_prefix="BULWARK_<SERVICE>_"`."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets `field` of `cls` (the first name where several are accepted)."""
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def load_settings(cls: type[S], **overrides: object) -> S:
    """Read `cls` from the environment; a bad value raises `SettingsError` naming the variable.

    `overrides` take precedence over the environment (tests and command-line flags use them).
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            if field not in cls.model_fields:
                # Aliased fields report their alias; map it back to the field.
                field = next(
                    (n for n, f in cls.model_fields.items()
                     if isinstance(f.validation_alias, AliasChoices) and field in f.validation_alias.choices),
                    field,
                )
            secret = cls.model_fields.get(field) is not None and "Secret" in str(cls.model_fields[field].annotation)
            got = "" if secret or err["type"] == "missing" else f" (got {err.get('input')!r})"
            problems.append(f"{env_name(cls, field)}: {err['msg']}{got}")
        raise SettingsError("invalid settings; fix these environment variables: " + "; ".join(problems)) from None


def describe(settings: BaseSettings) -> dict[str, object]:
    """Settings as a printable dict, secrets masked (for `bulwark status --json` and start-up logs)."""
    out: dict[str, object] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        out[env_name(type(settings), name)] = "**********" if isinstance(value, SecretStr) else (
            str(value) if isinstance(value, Path) else value
        )
    return out
