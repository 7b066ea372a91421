"""Topic, header and dead-letter names: the one place they are spelled.

Defaults are the names the architecture gives; every topic is configurable through `CommonSettings`
(`BULWARK_TOPIC_<NAME>`), so code reads names from `settings.topics`, never from these constants directly,
except to build defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

EVENTS_RAW = "events.raw"
EVENTS_CLEAN = "events.clean"
EVENTS_DLQ = "events.dlq"
TRAINING_REQUESTS = "training.requests"
MODELS_TRAINED = "models.trained"
MODELS_QUANTIZED = "models.quantized"
MODELS_VALIDATED = "models.validated"
MODELS_DEPLOYED = "models.deployed"
INFERENCE_LOG = "inference.log"
ALERTS = "alerts"
AUDIT = "audit"
# Global feature importance per model version, from the explainer's sample of inference.log.
EXPLANATIONS = "explanations"
# Spans in OTLP protobuf, as the OpenTelemetry Collector's Kafka exporter writes them.
OTLP_SPANS = "otlp_spans"

# Kafka record headers. Header values are ASCII; never payload text.
H_ENVELOPE_VERSION = "bulwark-envelope"
H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"
# Dead-letter headers: why and where a record was rejected.
H_DLQ_REASON = "bulwark-dlq-reason"
H_DLQ_STAGE = "bulwark-dlq-stage"
H_DLQ_SERVICE = "bulwark-dlq-service"
H_DLQ_SOURCE_TOPIC = "bulwark-dlq-source-topic"
H_DLQ_SOURCE_PARTITION = "bulwark-dlq-source-partition"
H_DLQ_SOURCE_OFFSET = "bulwark-dlq-source-offset"
H_DLQ_EXCEPTION = "bulwark-dlq-exception"


@dataclass(frozen=True)
class Topics:
    """The topic names in use; built from settings, defaults as the architecture names them."""

    events_raw: str = EVENTS_RAW
    events_clean: str = EVENTS_CLEAN
    events_dlq: str = EVENTS_DLQ
    training_requests: str = TRAINING_REQUESTS
    models_trained: str = MODELS_TRAINED
    models_quantized: str = MODELS_QUANTIZED
    models_validated: str = MODELS_VALIDATED
    models_deployed: str = MODELS_DEPLOYED
    inference_log: str = INFERENCE_LOG
    alerts: str = ALERTS
    audit: str = AUDIT
    explanations: str = EXPLANATIONS
    otlp_spans: str = OTLP_SPANS

    def all(self) -> list[str]:
        """Every topic name, in declaration order."""
        return [getattr(self, f.name) for f in fields(self)]
