"""The training loop: seeded, deterministic on CPU, early stopping on validation loss, checkpoints, and
the same code for one process or N torch.distributed workers.

With N workers each takes a `DistributedSampler` shard and a global-batch/N slice of every batch;
DistributedDataParallel averages gradients, so each step sees the same examples and the same averaged
gradient as one process with the global batch: the results match a single-process run up to float
summation order (the tests check N=2).

With `cfg.privacy` set the loop runs DP-SGD (`services.trainer.private`): Poisson sampling, per-example
clipping, calibrated noise, for exactly the epochs the budget was computed for (no early stopping: the
final weights are the ones the accountant covers).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from services.trainer.private import PrivacyConfig, PrivateTraining


@dataclass(frozen=True)
class LoopConfig:
    """Optimization settings."""

    seed: int = 7
    max_epochs: int = 60
    patience: int = 5
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    keep_best: bool = True
    """Return the weights of the epoch with the best validation loss (False: the last epoch's)."""
    privacy: PrivacyConfig | None = None
    """DP-SGD budget and clipping; None trains without differential privacy."""

    @classmethod
    def from_dict(cls, doc: dict) -> LoopConfig:
        """The inverse of `dataclasses.asdict` (how spawned workers receive it)."""
        privacy = doc.get("privacy")
        return cls(**{**doc, "privacy": PrivacyConfig(**privacy) if privacy else None})


@dataclass
class LoopResult:
    """What training produced and how it went."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    epochs: int
    val_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0
    world_size: int = 1
    resumed_from: int | None = None
    privacy: dict | None = None

    @property
    def samples_per_s(self) -> float:
        """Training samples processed per second (all workers together)."""
        return self.samples / self.seconds if self.seconds else 0.0


def deterministic(seed: int) -> None:
    """Seed every generator and ask torch for deterministic kernels (CPU)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_loop(build: Callable[[], nn.Module], x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
               y_val: np.ndarray, cfg: LoopConfig, *, rank: int = 0, world: int = 1,
               checkpoint: Path | None = None, progress: Callable[[int, float, float], None] | None = None,
               ) -> LoopResult:
    """Train `build()` on float features and int labels; returns the best-on-validation state."""
    deterministic(cfg.seed)
    core = build()
    dp = PrivateTraining(cfg.privacy, len(x_train), world) if cfg.privacy else None
    if dp is not None:
        model = dp.wrap(core, world)
    else:
        model = nn.parallel.DistributedDataParallel(core) if world > 1 else core
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                           weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    data = TensorDataset(torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train))
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)
    per_worker = max(1, cfg.batch_size // world)
    loader = DataLoader(data, batch_size=per_worker, sampler=sampler)
    max_epochs, patience = cfg.max_epochs, cfg.patience
    if dp is not None:
        # Opacus replaces the sampler with per-worker Poisson sampling at rate global batch / n.
        model, opt, loader = dp.attach(model, opt, loader)
        max_epochs = patience = cfg.privacy.epochs
    xv, yv = torch.from_numpy(np.ascontiguousarray(x_val)), torch.from_numpy(y_val)

    start_epoch, best_loss, best_epoch, bad_epochs = 0, float("inf"), -1, 0
    best_state: dict[str, torch.Tensor] = {k: v.clone() for k, v in core.state_dict().items()}
    result = LoopResult(best_state, -1, 0, world_size=world)
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
        core.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"])
        start_epoch, best_loss, best_epoch, bad_epochs = ck["epoch"] + 1, ck["best_loss"], ck["best_epoch"], ck["bad_epochs"]
        best_state, result.val_loss, result.train_loss = ck["best_state"], ck["val_loss"], ck["train_loss"]
        result.resumed_from = ck["epoch"]
        if dp is not None:
            dp.restore(ck["accountant"])

    started = time.perf_counter()
    for epoch in range(start_epoch, max_epochs):
        sampler.set_epoch(epoch)
        model.train()
        total, seen = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            if len(yb):  # a Poisson batch may be empty: it still steps (and is accounted), but has no loss
                total += float(loss.detach()) * len(yb)
            seen += len(yb)
        result.samples += seen * world
        model.eval()
        with torch.no_grad():
            # Every worker computes the same validation loss from the same (synchronized) weights,
            # so all of them take the same early-stopping decision without a broadcast.
            val_loss = float(loss_fn(core(xv), yv))
        result.train_loss.append(total / max(seen, 1))
        result.val_loss.append(val_loss)
        improved = val_loss < best_loss - 1e-6
        if improved:
            best_loss, bad_epochs = val_loss, 0
        else:
            bad_epochs += 1
        # A DP run releases its last weights: they are what the accountant covers.
        if improved or dp is not None or not cfg.keep_best:
            best_epoch = epoch
            best_state = {k: v.detach().clone() for k, v in core.state_dict().items()}
        if progress is not None and rank == 0:
            progress(epoch, result.train_loss[-1], val_loss)
        if checkpoint is not None and rank == 0:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"model": core.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                        "epoch": epoch, "best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                        "best_state": best_state, "val_loss": result.val_loss, "train_loss": result.train_loss,
                        "accountant": dp.state() if dp is not None else None}, tmp)
            os.replace(tmp, checkpoint)
        result.epochs = epoch + 1
        if bad_epochs >= patience:
            break
    result.seconds = time.perf_counter() - started
    result.state, result.best_epoch = best_state, best_epoch
    result.privacy = dp.report() if dp is not None else None
    return result


def init_distributed(rank: int, world: int, port: int) -> None:
    """Join a gloo process group on this machine (the spawned-workers path)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
