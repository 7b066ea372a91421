"""The trainer's own settings (`BULWARK_TRAINER_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """trainer: which model, when to train, how."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_TRAINER_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    model: str = Field("fraud", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    """The Bulwark model this trainer trains."""
    family: str = "mlp"
    """Model family: mlp (tabular) or text (MiniLM over the free-text field)."""
    event_type: str = "payment.transaction.clean"
    """Clean event type the training set is built from."""
    label: str = "is_fraud"
    """Label field (events without it count toward nothing)."""
    features: list[dict[str, Any]] | None = None
    """Tabular feature list as JSON (default: the reference use case's features)."""
    min_labeled: int = Field(1000, ge=10)
    """Fewest labeled events a training set may have; fewer raises an alert and trains nothing."""
    trigger_every: int = Field(5000, ge=0)
    """Train after this many new labeled events (0: off)."""
    interval_s: float = Field(0.0, ge=0)
    """Train at this interval when new labeled events arrived (0: off)."""
    max_events: int = Field(100_000, ge=100)
    """Most recent labeled events a training set uses."""
    validation_share: float = Field(0.2, gt=0, lt=0.5)
    """Share of events held out for validation (chosen by a hash of the event id: never trains)."""
    seed: int = 7
    """Seed for initialization and data order: the same data and seed give the same model."""
    max_epochs: int = Field(60, ge=1)
    """Upper bound on epochs."""
    patience: int = Field(5, ge=1)
    """Early stopping: epochs without a better validation loss before stopping."""
    batch_size: int = Field(256, ge=2)
    """Global batch size (split across workers)."""
    learning_rate: float = Field(3e-3, gt=0)
    """Adam learning rate."""
    weight_decay: float = Field(1e-4, ge=0)
    """Adam weight decay."""
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    """MLP hidden layer sizes (JSON list)."""
    keep_best: bool = True
    """Keep the weights of the epoch with the best validation loss (False: the last epoch's)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """MLP dropout (0 keeps a distributed run identical to a single-process one)."""
    workers: int = Field(1, ge=1, le=64)
    """Training processes (torch.distributed, gloo); `--workers` overrides."""
    checkpoint_dir: Path | None = None
    """Where in-progress training checkpoints go; default <home>/trainer/checkpoints."""
    personal_data: bool = True
    """The events describe people: the gate then enforces its membership-inference ceiling on this model."""
    dp_epsilon: float | None = Field(None, gt=0)
    """DP-SGD target epsilon (differentially private training); unset trains without DP."""
    dp_delta: float = Field(1e-5, gt=0, lt=1)
    """DP-SGD delta; must be below 1 / the number of training events."""
    dp_max_grad_norm: float = Field(1.0, gt=0)
    """DP-SGD per-example gradient clipping norm (L2)."""
    dp_epochs: int = Field(10, ge=1)
    """Epochs a DP-SGD run trains (the noise is calibrated for exactly these; no early stopping)."""
