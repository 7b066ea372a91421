"""Settings shared by the guard's two halves, the gate service and the online checks (`BULWARK_GUARD_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings


class GuardSettings(ServiceSettings):
    """robustness-guard: the policy file, and whether the front door runs the online checks."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_GUARD_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    policy: Path | None = None
    """Robustness policy (YAML): attack strengths, gate thresholds, online thresholds, rate limits, drift."""
    online: bool = True
    """Run the online checks in the inference front door."""
    alert_interval_s: float = 1.0
    """At most one `guard.flagged` alert per model per this many seconds (the rest are counted in it)."""
