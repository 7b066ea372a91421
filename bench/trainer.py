"""Trainer speed: MLP training samples per second in one process against two torch.distributed workers on
this machine, and the time to a model that reaches the reference data's ground-truth accuracy bound.

The data is the reference use case, encoded exactly as the trainer encodes it; the loop is the trainer's
own (`services.trainer.training`), so the figures are the service's, minus Kafka.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from _common import Row, progress, save
from _models import reference_data
from bulwark.metrics import accuracy
from bulwark.reference import bayes_accuracy
from services.trainer.distributed import builder, run_training
from services.trainer.training import LoopConfig




def time_to_bound(build, xt, yt, xv, yv, target: float, max_epochs: int = 40) -> tuple[float, int]:  # noqa: ANN001
    """Training seconds (one process, the trainer's optimizer settings) until validation accuracy first
    reaches `target`; evaluation time is not counted."""
    torch.manual_seed(7)
    torch.set_num_threads(1)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)), batch_size=256, shuffle=True)
    xvt = torch.from_numpy(xv)
    spent = 0.0
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
        spent += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            if accuracy(yv, torch.softmax(model(xvt), 1)[:, 1].numpy()) >= target:
                return spent, epoch
    return float("nan"), max_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=6, help="epochs timed for the samples/s comparison")
    args = parser.parse_args()
    progress(f"generating and encoding {args.events} reference events")
    spec, xt, yt, xv, yv = reference_data(args.events)
    build = builder("mlp", spec, {"hidden": [64, 64], "dropout": 0.0})
    fixed = LoopConfig(seed=7, max_epochs=args.epochs, patience=args.epochs, batch_size=256)
    progress("one process")
    one = run_training(build, xt, yt, xv, yv, fixed, workers=1)
    progress("two workers (gloo)")
    two = run_training(build, xt, yt, xv, yv, fixed, workers=2)
    # A wider MLP, where computation rather than the per-step gradient exchange dominates.
    wide = builder("mlp", spec, {"hidden": [512, 512, 512], "dropout": 0.0})
    short = LoopConfig(seed=7, max_epochs=2, patience=2, batch_size=256)
    progress("wide MLP: one process, then two workers")
    wide_one = run_training(wide, xt, yt, xv, yv, short, workers=1)
    wide_two = run_training(wide, xt, yt, xv, yv, short, workers=2)
    bound = bayes_accuracy(200_000)
    progress(f"time to within 1 point of the ground-truth bound ({bound:.4f})")
    seconds, epochs = time_to_bound(build, xt, yt, xv, yv, bound - 0.01)
    progress("a full run with early stopping (the trainer's loop)")
    full = run_training(build, xt, yt, xv, yv, LoopConfig(seed=7), workers=1)
    model = build()
    model.load_state_dict(full.state)
    with torch.no_grad():
        final = accuracy(yv, torch.softmax(model(torch.from_numpy(xv)), 1)[:, 1].numpy())
    rows = [
        Row("trainer", "MLP samples/s, one process", one.samples_per_s, "samples/s", "baseline"),
        Row("trainer", "MLP samples/s, two workers (gloo)", two.samples_per_s, "samples/s", "one process"),
        Row("trainer", "two workers vs one process", two.samples_per_s / one.samples_per_s, "x", "one process"),
        Row("trainer", "wide MLP (3x512) samples/s, one process", wide_one.samples_per_s, "samples/s", "baseline"),
        Row("trainer", "wide MLP, two workers vs one process", wide_two.samples_per_s / wide_one.samples_per_s, "x",
            "one process"),
        Row("trainer", "training seconds to within 1 pt of Bayes", seconds, "s", f"Bayes {bound:.4f}"),
        Row("trainer", "validation accuracy, early-stopped run", final, "", f"Bayes {bound:.4f}",
            ">= Bayes - 0.01", final >= bound - 0.01),
    ]
    save("trainer", rows, {"events": args.events, "train": len(xt), "validation": len(xv), "epochs_timed": args.epochs,
                           "epochs_to_bound": epochs, "early_stopped_epochs": full.epochs,
                           "early_stopped_seconds": round(full.seconds, 2)})


if __name__ == "__main__":
    main()
