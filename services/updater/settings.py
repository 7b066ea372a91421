"""The updater's own settings (`BULWARK_UPDATER_*`): rollout policy, bounds, maintenance."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings


class UpdaterSettings(ServiceSettings):
    """updater: how versions roll out, what counts as a regression, how many stay loaded."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_UPDATER_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    host: str = "0.0.0.0"
    """Address the ModelAdmin gRPC server binds."""
    port: int = Field(50053, ge=0, le=65535)
    """ModelAdmin gRPC port (0 picks a free one)."""
    tick_s: float = Field(0.5, gt=0)
    """How often rollouts are evaluated."""
    shadow_s: float = Field(2.0, ge=0)
    """How long a candidate only shadows the live version (0: straight to canary)."""
    shadow_min_compared: int = Field(10, ge=0)
    """Shadow comparisons needed before the canary starts."""
    canary_share: float = Field(0.2, gt=0, le=1)
    """Share of clients (sticky by client key) the candidate answers during the canary."""
    canary_s: float = Field(15.0, ge=0)
    """How long the canary runs before promotion (if it holds every bound)."""
    canary_min_requests: int = Field(30, ge=0)
    """Candidate answers needed before promotion."""
    min_agreement: float = Field(0.9, ge=0, le=1)
    """Lowest share of shadow answers that must agree with the live version."""
    max_error_rate_increase: float = Field(0.02, ge=0, le=1)
    """Largest allowed candidate error rate above the live version's."""
    max_p99_ratio: float = Field(3.0, ge=1)
    """Largest allowed candidate latency p99 relative to the live version's."""
    max_flag_rate_increase: float = Field(0.05, ge=0, le=1)
    """Largest allowed guard flag rate above the live version's."""
    max_accuracy_drop: float = Field(0.05, ge=0, le=1)
    """Largest allowed accuracy drop on labeled events (once `min_labeled` have arrived)."""
    min_signal_requests: int = Field(20, ge=1)
    """Candidate requests needed before a bound is judged (fewer is not evidence)."""
    min_labeled: int = Field(30, ge=1)
    """Labeled events needed before accuracy is compared."""
    max_loaded: int = Field(3, ge=1)
    """Versions of a model kept loaded in Triton (live, candidate, and the latest others)."""
    max_on_disk: int = Field(5, ge=1)
    """Versions kept in Triton's model repository; older retired ones are removed."""
    retrain_interval_s: float = Field(0.0, ge=0)
    """Ask for retraining at this interval (0: off; drift requests come from the guard)."""
    warmup_requests: int = Field(3, ge=0)
    """Requests sent to a newly loaded version before it takes traffic."""
    forget_deadline_s: float = Field(86400.0, gt=0)
    """A version trained on a forgotten subject is replaced and purged within this long after the forget."""
    forget_check_s: float = Field(5.0, gt=0)
    """How often versions are checked against the forgotten list."""
