"""The inference front door's own settings (`BULWARK_INFERENCE_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings


class InferenceSettings(ServiceSettings):
    """inference: the gRPC front door."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_INFERENCE_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    host: str = "0.0.0.0"
    """Address the gRPC server binds."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port (0 picks a free one)."""
    threads: int = Field(16, ge=1, le=256)
    """gRPC worker threads."""
    cache_ttl_s: int = Field(300, ge=0)
    """How long a response stays cached (0: no cache). Keys carry the version, so a new live version never
    serves an old answer."""
    log_sample: float = Field(1.0, ge=0, le=1)
    """Share of predictions written to inference.log."""
    default_deadline_s: float = Field(2.0, gt=0)
    """Deadline for calls that send none."""
    max_batch_items: int = Field(1000, ge=1)
    """Most items one PredictBatch may carry (more is RESOURCE_EXHAUSTED)."""
    coalesce_slots: int = Field(1, ge=0, le=64)
    """Batches of concurrent Predict calls served at once; calls arriving while every slot is busy wait and
    go to Triton together in the next batch (0: every call on its own)."""
    coalesce_max_batch: int = Field(64, ge=1, le=1024)
    """Most calls in one coalesced batch."""
    live_cache_s: float = Field(0.5, ge=0)
    """How long the live version read from Redis is reused (a promotion takes effect within this)."""
