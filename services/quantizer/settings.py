"""The quantizer's own settings (`BULWARK_QUANTIZER_*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings

# The forms `services.quantizer.candidates.FORMS` registers (a unit test keeps the two in step); spelled here
# so that reading settings never imports torch.
FormName = Literal["dynamic-int8", "dynamic-int8-tensor", "dynamic-int8-vnni", "dynamic-int8-vnni-tensor",
                   "static-int8", "fp16", "pruned-int8"]
DEFAULT_CANDIDATES: list[FormName] = ["dynamic-int8", "dynamic-int8-tensor", "dynamic-int8-vnni",
                                      "dynamic-int8-vnni-tensor", "static-int8", "fp16"]


class QuantizerSettings(ServiceSettings):
    """quantizer: which compressed forms to try, the accuracy they may cost, where they will serve."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_QUANTIZER_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    accuracy_budget: float = Field(0.005, ge=0, le=1)
    """Most accuracy a compressed form may lose against fp32 on the held-out set (0.005 = 0.5 points)."""
    auroc_budget: float = Field(0.005, ge=0, le=1)
    """Most AUROC a compressed form may lose against fp32 on the held-out set."""
    serving_target: Literal["cpu", "gpu"] = "cpu"
    """Where the chosen form will serve: cpu (int8 forms) or gpu (fp16; int8 kernels here are CPU-only)."""
    candidates: list[FormName] = Field(DEFAULT_CANDIDATES, min_length=1)
    """Compressed forms to try (JSON list): dynamic-int8, dynamic-int8-tensor, dynamic-int8-vnni,
    dynamic-int8-vnni-tensor, static-int8, fp16, pruned-int8."""
    min_speedup: float = Field(1.0, ge=0)
    """On cpu, a form must be at least this many times faster than fp32 at batch 64 to be chosen (0: off)."""
    latency_tie: float = Field(0.1, ge=0, le=1)
    """On cpu, forms within this share of the fastest batch-64 latency count as equally fast; the one that
    loses least accuracy among them is chosen."""
    pruning_amount: float = Field(0.3, gt=0, lt=1)
    """Share of each pruned hidden layer's units that pruned-int8 removes (smallest L1 norm first)."""
    calibration_records: int = Field(512, ge=8)
    """Training-sample records static-int8 calibrates its activation ranges on."""
    eval_records: int = Field(2000, ge=50)
    """Most held-out validation records each form is evaluated on."""
    eval_batch: int = Field(1, ge=1)
    """Records scored together when measuring the accuracy cost (1: each alone, as one request is served;
    64: as a busy batched server scores them, where per-batch activation scales make scores wobble)."""
    latency_repeats: int = Field(50, ge=3)
    """Timed calls per form and batch size (after warm-up); the median is reported."""
    latency_warmup: int = Field(5, ge=0)
    """Untimed calls per form and batch size before timing."""
    latency_max_s: float = Field(20.0, gt=0)
    """Stop timing one batch size after this many seconds (at least 3 calls per form are always timed)."""
    latency_process: Literal["fresh", "same"] = "fresh"
    """Where forms are timed: fresh, a new Python process that loads only them, as Triton's Python backend
    serves a model; same, the quantizer's own process (no start-up cost, but whatever the process ran before
    moves a small model's figures: a 2x64 MLP's int8 speed-up read 1.2x there and 1.4x in a fresh process)."""

    @field_validator("candidates")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a form is listed twice")
        return value
