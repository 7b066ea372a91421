"""Private training's cost: accuracy and AUROC of the MLP family trained with DP-SGD at epsilon 1, 3 and 8
and without DP, on the same data and seed in one run, with the training time of each.

The data is the reference use case encoded as the trainer encodes it, and the loop is the trainer's own
(`services.trainer.training` with `services.trainer.private`), so the figures are the service's minus Kafka.
The baseline is the non-DP run of the same loop for the same number of epochs (DP-SGD trains a fixed
number of epochs; an early-stopped non-DP run is shown too). Each run also gets the gate's
membership-inference audit (strongest attack's AUC, members vs held-out non-members).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import Row, progress, save
from _models import reference_data
from bulwark.guard.membership import membership_audit
from bulwark.metrics import classification_report
from bulwark.reference import bayes_accuracy
from services.trainer.distributed import builder, run_training
from services.trainer.private import PrivacyConfig
from services.trainer.training import LoopConfig




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every fixed-length run")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    args = parser.parse_args()
    progress(f"generating and encoding {args.events} reference events")
    spec, xt, yt, xv, yv = reference_data(args.events)
    build = builder("mlp", spec, {"hidden": [64, 64], "dropout": 0.0})
    runs: dict[str, LoopConfig] = {
        "no DP": LoopConfig(seed=7, max_epochs=args.epochs, patience=args.epochs, keep_best=False),
        "no DP, early stopping": LoopConfig(seed=7),
    }
    for eps in (8.0, 3.0, 1.0):
        runs[f"epsilon {eps:g}"] = LoopConfig(seed=7, privacy=PrivacyConfig(eps, args.delta, args.max_grad_norm,
                                                                            args.epochs))
    results = {}
    for name, cfg in runs.items():
        progress(f"training: {name}")
        r = run_training(build, xt, yt, xv, yv, cfg, workers=1)
        model = build()
        model.load_state_dict(r.state)
        model.eval()
        logits = lambda x: model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).detach().numpy()  # noqa: E731
        metrics = classification_report(yv, torch.softmax(torch.from_numpy(logits(xv)), 1)[:, 1].numpy())
        audit = membership_audit(logits, xt, yt, xv, yv)
        results[name] = {"metrics": metrics, "seconds": r.seconds, "epochs": r.epochs, "privacy": r.privacy,
                         "membership_auc": audit["auc"], "membership": audit}
    base = results["no DP"]
    rows = []
    for name, res in results.items():
        m = res["metrics"]
        rows += [Row("privacy", f"accuracy, {name}", m["accuracy"], "", "no DP" if name != "no DP" else "baseline"),
                 Row("privacy", f"AUROC, {name}", m["auroc"], "", "no DP" if name != "no DP" else "baseline"),
                 Row("privacy", f"training seconds, {name} ({res['epochs']} epochs)", res["seconds"], "s", "no DP"),
                 Row("privacy", f"membership attack AUC, {name}", res["membership_auc"], "", "0.5 = chance")]
        if res["privacy"]:
            rows.append(Row("privacy", f"time cost vs no DP, {name}", res["seconds"] / base["seconds"], "x", "no DP"))
            rows.append(Row("privacy", f"epsilon spent (target {res['privacy']['epsilon_target']:g})",
                            res["privacy"]["epsilon_spent"], "", f"delta {args.delta:g}",
                            f"<= {res['privacy']['epsilon_target']:g}",
                            res["privacy"]["epsilon_spent"] <= res["privacy"]["epsilon_target"]))
    save("privacy", rows, {"events": args.events, "train": len(xt), "validation": len(xv), "epochs": args.epochs,
                           "bayes_accuracy": bayes_accuracy(200_000),
                           "runs": {k: {"privacy": v["privacy"], "membership": v["membership"], "epochs": v["epochs"]}
                                    for k, v in results.items()}})


if __name__ == "__main__":
    main()
