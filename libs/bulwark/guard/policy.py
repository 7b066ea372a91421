"""The robustness policy: attack strengths, the gate's thresholds, the online guard's thresholds, rate
limits, the extraction defence and drift limits. Read from `BULWARK_GUARD_POLICY` (a YAML file) or the
defaults below.

Epsilons are in the model's standardized input space (one unit = one training standard deviation of the
feature), on the numeric features only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bulwark.errors import BulwarkError, Reason


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackPolicy(_Section):
    """How hard the gate attacks."""

    epsilon: float = Field(0.3, gt=0)
    """L-infinity budget on the standardized numeric features."""
    pgd_steps: int = Field(20, ge=1)
    """Projected gradient descent iterations."""
    pgd_step_size: float = Field(0.06, gt=0)
    """Step size per iteration (standardized units)."""
    noise_sigma: float = Field(0.3, ge=0)
    """Gaussian noise (std, standardized units) on the numeric features."""
    missing_share: float = Field(0.2, ge=0, le=1)
    """Share of fields replaced by their training reference value (missing features)."""
    text_edit_rate: float = Field(0.1, ge=0, le=1)
    """Share of words perturbed (typo, swap or homoglyph) for the text family."""
    seed: int = 7
    """Seed for the random attacks."""


class GatePolicy(_Section):
    """What a model must hold to reach Triton (accuracies are absolute, on held-out data)."""

    min_clean_accuracy: float = Field(0.80, ge=0, le=1)
    min_fgsm_accuracy: float = Field(0.65, ge=0, le=1)
    min_pgd_accuracy: float = Field(0.65, ge=0, le=1)
    min_noise_accuracy: float = Field(0.80, ge=0, le=1)
    min_missing_accuracy: float = Field(0.75, ge=0, le=1)
    min_text_perturbed_accuracy: float = Field(0.75, ge=0, le=1)
    max_ece: float = Field(0.08, ge=0, le=1)
    """Largest expected calibration error allowed."""
    max_membership_auc: float | None = Field(None, ge=0.5, le=1)
    """Ceiling on the membership-inference attack AUC (None: reported, not enforced)."""


class OnlinePolicy(_Section):
    """Per-request decisions: thresholds on normalized scores (1.0 = the training data's 99th percentile)."""

    ood_flag: float = Field(1.5, gt=0)
    ood_reject: float = Field(4.0, gt=0)
    adversarial_flag: float = Field(0.5, gt=0, le=1)
    adversarial_reject: float = Field(0.97, gt=0, le=1)
    range_margin: float = Field(0.5, ge=0)
    """A number more than this share of the training range outside it is out of range."""
    reject_out_of_range: bool = False
    """Reject (instead of flag) values out of the training range."""
    rate_per_s: float = Field(200.0, gt=0)
    """Requests per second one client may make (sliding one-second windows)."""
    burst: int = Field(400, ge=1)
    """Requests one client may make within any one second."""


class ExtractionPolicy(_Section):
    """The front door's model-extraction defence (see `bulwark.guard.extraction`), per client."""

    enabled: bool = True
    """Count queries per client and apply the budget, hardening and detection below."""
    window_s: int = Field(3600, ge=60)
    """Length of the sliding window budgets and detection look at."""
    buckets: int = Field(12, ge=1, le=120)
    """Sub-windows the window is counted in (it slides by window_s / buckets)."""
    budget: int = Field(20000, ge=1)
    """Queries one client may make per window; more is RESOURCE_EXHAUSTED."""
    output: Literal["full", "rounded", "label"] = "full"
    """What every client sees: all probabilities, probabilities rounded to `round_digits`, or the label only."""
    round_digits: int = Field(1, ge=0, le=6)
    """Decimals kept by `output: rounded`."""
    detect: bool = True
    """Look for extraction-like traffic and throttle the clients that show it."""
    min_queries: int = Field(200, ge=1)
    """Queries in the window before a client is judged."""
    volume: int = Field(10000, ge=1)
    """Queries in the window that alone mark a client."""
    grid_bins: int = Field(4, ge=1, le=64)
    """Bins per numeric field (over its training range) of the coverage grid."""
    coverage_cells: int = Field(150, ge=1)
    """Distinct grid cells in the window that mark a client (with `coverage_share`)."""
    coverage_share: float = Field(0.5, gt=0, le=1)
    """...when distinct cells are also at least this share of its queries."""
    ood_score: float = Field(1.5, gt=0)
    """A query with the guard's out-of-distribution score at or above this counts as out of distribution."""
    ood_share: float = Field(0.3, gt=0, le=1)
    """Share of out-of-distribution queries that marks a client."""
    boundary_margin: float = Field(0.2, gt=0, le=1)
    """A query whose two highest probabilities are closer than this is near the decision boundary."""
    boundary_share: float = Field(0.3, gt=0, le=1)
    """Share of near-boundary queries that marks a client."""
    throttle_s: int = Field(3600, ge=1)
    """How long a marked client stays throttled."""
    throttle_per_minute: int = Field(60, ge=1)
    """Queries per minute a throttled client may make (answered with the label only)."""


class DriftPolicy(_Section):
    """When the live traffic no longer looks like the training data."""

    window: int = Field(500, ge=50)
    """Records per drift window (per model version)."""
    psi_threshold: float = Field(0.25, gt=0)
    """Population stability index above which a feature has drifted."""
    min_features: int = Field(1, ge=1)
    """How many features must drift in a window to raise the alert."""


class GuardPolicy(_Section):
    """The whole policy."""

    version: int = 1
    attack: AttackPolicy = AttackPolicy()
    gate: GatePolicy = GatePolicy()
    online: OnlinePolicy = OnlinePolicy()
    extraction: ExtractionPolicy = ExtractionPolicy()
    drift: DriftPolicy = DriftPolicy()


def load_guard_policy(path: Path | None) -> GuardPolicy:
    """The policy file, or the defaults; errors name the key."""
    if path is None:
        return GuardPolicy()
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        return GuardPolicy.model_validate(doc)
    except OSError as exc:
        raise BulwarkError(Reason.FAILED_PRECONDITION, f"cannot read guard policy {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise BulwarkError(Reason.FAILED_PRECONDITION, f"guard policy {path} is not valid YAML") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise BulwarkError(Reason.FAILED_PRECONDITION, f"guard policy {path} is invalid: {problems}") from None
