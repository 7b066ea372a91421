"""Differentially private training (DP-SGD, Abadi et al., 2016) with Opacus.

Each step samples every training example independently with probability q (Poisson sampling), clips each
example's gradient to L2 norm C (`max_grad_norm`), adds Gaussian noise N(0, (sigma*C)^2) to the sum, and
divides by the expected batch size. The noise multiplier sigma is the smallest that keeps the whole run
(q, steps) within the target (epsilon, delta) under the RDP accountant (Mironov, 2017); the accountant's
figure after the last step is the epsilon actually spent, and the model card records it.

The privacy unit is one event: a subject with k events in the training set is protected at roughly
k*epsilon (group privacy). Forgetting (the dataset's exclusion of forgotten subjects) is what protects a
whole subject.

Distributed (N gloo workers): each worker Poisson-samples its 1/N shard at the same rate q, so the union is
a Poisson sample of the whole set at rate q; every worker clips its own examples, only rank 0 adds noise
(Opacus's DistributedDPOptimizer), and the summed gradient is divided by the global expected batch. The
released update is exactly a single-process DP-SGD step on the global batch, so one accountant with (q,
sigma, steps) is right for the run; every rank keeps the same one, rank 0 reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

ACCOUNTANT = "rdp"


@dataclass(frozen=True)
class PrivacyConfig:
    """What the training policy asks for: the budget and the clipping norm."""

    target_epsilon: float
    delta: float
    max_grad_norm: float = 1.0
    epochs: int = 10


class PrivateTraining:
    """An Opacus privacy engine bound to one run's model, optimizer and data loader."""

    def __init__(self, cfg: PrivacyConfig, dataset_size: int, world: int) -> None:
        from opacus import PrivacyEngine

        if not 0 < cfg.delta < 1 / max(dataset_size, 1):
            raise ValueError(f"delta {cfg.delta:g} must be below 1/n = {1 / max(dataset_size, 1):.2g} "
                             f"(n = {dataset_size} training events): a larger delta can release whole records")
        self.cfg = cfg
        self.dataset_size = dataset_size
        self.world = world
        self.engine = PrivacyEngine(accountant=ACCOUNTANT)
        self.optimizer: Any = None
        self.sample_rate = 0.0

    @staticmethod
    def wrap(model: nn.Module, world: int) -> nn.Module:
        """The module to hand to the optimizer: Opacus's own DDP wrapper when distributed (it syncs the
        initial weights; the DP optimizer, not DDP hooks, reduces the clipped and noised gradients)."""
        if world > 1:
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

            return DPDDP(model)
        return model

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer,
               loader: DataLoader) -> tuple[nn.Module, Any, DataLoader]:
        """Per-sample gradients, clipping, noise calibrated to the target, Poisson sampling, accounting."""
        model, optimizer, loader = self.engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=self.cfg.target_epsilon,
            target_delta=self.cfg.delta, epochs=self.cfg.epochs, max_grad_norm=self.cfg.max_grad_norm,
            poisson_sampling=True)
        self.optimizer = optimizer
        self.sample_rate = 1 / len(loader)
        return model, optimizer, loader

    def state(self) -> dict[str, Any]:
        """The accountant's history, for a checkpoint (a resumed run must not restart the count)."""
        return self.engine.accountant.state_dict()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the count from a checkpoint."""
        self.engine.accountant.load_state_dict(state)

    def report(self) -> dict[str, Any]:
        """The model card's privacy facts: the epsilon actually spent and what produced it."""
        from opacus import __version__

        history = getattr(self.engine.accountant, "history", [])
        steps = int(sum(h[2] for h in history))
        return {"mechanism": "DP-SGD", "library": f"opacus {__version__}", "accountant": ACCOUNTANT,
                "epsilon_target": self.cfg.target_epsilon,
                "epsilon_spent": round(float(self.engine.get_epsilon(self.cfg.delta)), 4) if steps else 0.0,
                "delta": self.cfg.delta, "noise_multiplier": round(float(self.optimizer.noise_multiplier), 6),
                "max_grad_norm": self.cfg.max_grad_norm, "sample_rate": round(self.sample_rate, 6),
                "expected_batch_size": round(self.sample_rate * self.dataset_size, 1), "steps": steps,
                "epochs": self.cfg.epochs, "world_size": self.world, "dataset_size": self.dataset_size,
                "privacy_unit": "event"}
