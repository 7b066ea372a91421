"""The explainer's own settings (`BULWARK_EXPLAINER_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings


class ExplainerSettings(ServiceSettings):
    """explainer: attributions for predictions over gRPC, and global importance from inference.log."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_EXPLAINER_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    host: str = "0.0.0.0"
    """Address the gRPC server binds."""
    port: int = Field(50052, ge=0, le=65535)
    """gRPC port (0 picks a free one)."""
    threads: int = Field(8, ge=1, le=256)
    """gRPC worker threads."""
    torch_threads: int = Field(1, ge=1, le=64)
    """Intra-op threads per attribution; one keeps concurrent calls from fighting over cores."""
    default_deadline_s: float = Field(30.0, gt=0)
    """Deadline for calls that send none; step refinement stops early rather than overrun it."""
    cache_ttl_s: int = Field(3600, ge=0)
    """How long an explanation stays cached (0: no cache). Keys carry the version, method, steps, target and
    a hash of the encoded input."""
    default_method: str = "integrated_gradients"
    """Method used when a request names none."""
    default_steps: int = Field(50, ge=1)
    """Integration steps when a request sends none."""
    max_steps: int = Field(1000, ge=1)
    """Most integration steps a request may ask for (more is RESOURCE_EXHAUSTED)."""
    refine_max_steps: int = Field(800, ge=0)
    """When integrated gradients miss the convergence bound, steps double up to this many (0: never refine)."""
    tolerance: float = Field(0.01, gt=0, lt=1)
    """Convergence bound on the relative delta |sum(attributions) - (f(input) - f(baseline))| /
    |f(input) - f(baseline)|."""
    tolerance_abs: float = Field(1e-3, ge=0)
    """Absolute slack added to the bound, in logits (numpy.isclose's rule): a change of the output too small to
    decompose (float rounding) never reads as unconverged."""
    max_batch_items: int = Field(64, ge=1)
    """Most items one ExplainBatch may carry (more is RESOURCE_EXHAUSTED)."""
    max_loaded_versions: int = Field(4, ge=1)
    """Model versions kept loaded in memory (least recently used ones are dropped)."""
    live_cache_s: float = Field(0.5, ge=0)
    """How long the live version read from Redis is reused."""
    summaries: bool = True
    """Consume inference.log: keep each record for request-id lookups, explain a sample, publish summaries."""
    request_ttl_s: int = Field(86_400, ge=60)
    """How long a logged request stays retrievable by its request id."""
    sample_share: float = Field(0.05, ge=0, le=1)
    """Share of inference.log records explained for the global summaries (chosen by a hash of the request
    id, so a redelivered record is chosen the same way)."""
    summary_window: int = Field(100, ge=1)
    """Explained records per version between two published `explanation.summary` events."""
    summary_method: str = "integrated_gradients"
    """Method the summaries use."""
    summary_ttl_s: int = Field(30 * 86_400, ge=60)
    """How long a version's running summary lives after its last update."""
    summary_top: int = Field(50, ge=1, le=1000)
    """Most features (or tokens) listed in a published summary."""
