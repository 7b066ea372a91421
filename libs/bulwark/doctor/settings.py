"""The doctor's thresholds (`BULWARK_DOCTOR_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings


class DoctorSettings(ServiceSettings):
    """How the doctor judges parts and how long a probe waits (`BULWARK_DOCTOR_*`)."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_DOCTOR_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    probe_timeout_s: float = Field(6.0, gt=0, le=300)
    """How long a probe waits for every hop to see its canary before naming the first that did not."""
    latency_factor: float = Field(4.0, gt=1)
    """A service is degraded when its recent latency exceeds this multiple of its own baseline..."""
    latency_margin_ms: float = Field(250.0, ge=0)
    """...and exceeds the baseline by at least this much (so a 1 ms part is not degraded at 5 ms)."""
    baseline_min_samples: int = Field(5, ge=1)
    """Latency samples a service needs in its history before its baseline is trusted."""
    max_lag: int = Field(10_000, ge=0)
    """Consumer lag (records) above which a service is degraded; approximate on Tansu."""
    check_timeout_s: float = Field(1.5, gt=0, le=30)
    """Timeout of each health check (gRPC health, Triton, Redis)."""
    forget_after_s: float = Field(900.0, gt=0)
    """An instance whose heartbeat expired without a graceful stop is named down for this long (unless a
    newer instance of its service replaced it); then it is forgotten."""
    span_records: int = Field(2000, ge=10)
    """How many of the newest span records per partition (or lines per file) `doctor trace` and the
    error-span check read."""
