"""torch.distributed training (gloo, two worker processes) matches a single-process run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bulwark.metrics import classification_report
from services.trainer.distributed import builder, run_training
from services.trainer.training import LoopConfig
from tests.integration.helpers import reference_split

pytestmark = pytest.mark.integration


def _data(n: int = 6000):  # noqa: ANN202
    return reference_split(n, seed=17)


def test_two_workers_match_one_process_on_the_same_data_and_seed() -> None:
    spec, xt, yt, xv, yv = _data()
    cfg = LoopConfig(seed=5, max_epochs=8, patience=3, batch_size=128)
    build = builder("mlp", spec, {"hidden": [32, 32], "dropout": 0.0})
    one = run_training(build, xt, yt, xv, yv, cfg, workers=1)
    two = run_training(build, xt, yt, xv, yv, cfg, workers=2)
    assert two.world_size == 2 and one.world_size == 1
    assert one.epochs == two.epochs and one.best_epoch == two.best_epoch
    # Same examples per step, gradients averaged: the weights agree up to float summation order.
    for name, tensor in one.state.items():
        assert torch.allclose(tensor, two.state[name], atol=2e-4), name
    assert np.allclose(one.val_loss, two.val_loss, atol=1e-4)

    def metrics(state):
        model = build()
        model.load_state_dict(state)
        with torch.no_grad():
            p = torch.softmax(model(torch.from_numpy(xv)), 1)[:, 1].numpy()
        return classification_report(yv, p)

    m1, m2 = metrics(one.state), metrics(two.state)
    assert abs(m1["accuracy"] - m2["accuracy"]) <= 0.002 and abs(m1["auroc"] - m2["auroc"]) <= 0.001
