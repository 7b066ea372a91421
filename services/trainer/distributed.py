"""Running the training loop in one process or N torch.distributed (gloo) workers.

- `--workers N` on one machine: this process spawns N workers (torch.multiprocessing), hands them the
  encoded data through a temporary file, and rank 0 returns the result through another.
- torchrun or a Kubernetes indexed Job: the environment already names RANK, WORLD_SIZE, MASTER_ADDR and
  MASTER_PORT; `services.trainer.job` joins that group with `init_process_group("gloo")` and calls the same
  loop, so one code path serves both.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from services.trainer.training import LoopConfig, LoopResult, init_distributed, train_loop


def builder(family: str, spec: Any, config: dict[str, Any]) -> Callable[[], nn.Module]:
    """A picklable recipe for the module to train (workers rebuild it from the family registry)."""
    return _Builder(family, spec, config)


class _Builder:
    def __init__(self, family: str, spec: Any, config: dict[str, Any]) -> None:
        self.family, self.spec, self.config = family, spec, config

    def __call__(self) -> nn.Module:
        if self.family == "text-head":
            # The text family trains only its head on frozen-encoder embeddings: a linear layer.
            return nn.Linear(int(self.config["hidden"]), int(self.config["classes"]))
        from bulwark.families import FAMILIES

        return FAMILIES.get(self.family).build(self.spec, self.config)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, folder: str, build: Callable[[], nn.Module], cfg: dict[str, Any],
            checkpoint: str | None) -> None:
    torch.set_num_threads(1)  # one core per worker: N workers on N cores, no oversubscription
    init_distributed(rank, world, port)
    try:
        data = np.load(Path(folder) / "data.npz")
        result = train_loop(build, data["xt"], data["yt"], data["xv"], data["yv"], LoopConfig.from_dict(cfg), rank=rank,
                            world=world, checkpoint=Path(checkpoint) if checkpoint else None)
        if rank == 0:
            torch.save(asdict(result), Path(folder) / "result.pt")
        # Tear down together: a rank that left while another still talked to it killed that one's gloo
        # threads ("terminate called without an active exception", SIGABRT), seen once in a clean test run.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without interpreter teardown: with the barrier alone, one run in ~17 still aborted at exit
    # ("terminate called without an active exception": a C++ thread still joinable when static destructors
    # ran). The result is on disk and the group is gone, so nothing is left to clean up; a failure above
    # raised before this point and reaches mp.spawn as usual.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_training(build: Callable[[], nn.Module], x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, cfg: LoopConfig, *, workers: int = 1, checkpoint: Path | None = None,
                 progress: Callable[[int, float, float], None] | None = None) -> LoopResult:
    """Train with `workers` processes (1: in this process); returns rank 0's result.

    Inside an existing process group (torchrun, a Kubernetes indexed Job) this process is one worker of it."""
    if dist.is_available() and dist.is_initialized():
        return train_loop(build, x_train, y_train, x_val, y_val, cfg, rank=dist.get_rank(),
                          world=dist.get_world_size(), checkpoint=checkpoint if dist.get_rank() == 0 else None,
                          progress=progress)
    if workers == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same per-worker threading as the distributed path, for fair figures
        try:
            return train_loop(build, x_train, y_train, x_val, y_val, cfg, checkpoint=checkpoint, progress=progress)
        finally:
            torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bulwark-train-") as folder:
        np.savez(Path(folder) / "data.npz", xt=x_train, yt=y_train, xv=x_val, yv=y_val)
        mp.spawn(_worker, args=(workers, _free_port(), folder, build, asdict(cfg),
                                str(checkpoint) if checkpoint else None), nprocs=workers, join=True)
        return LoopResult(**torch.load(Path(folder) / "result.pt", weights_only=False))
