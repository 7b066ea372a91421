"""Attribution methods on small in-memory models: the formulas, Captum agreement, grouping, the registry."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from torch import nn

from bulwark.errors import Reason
from bulwark.families.mlp import TabularMLP
from bulwark.plugins import UnknownPluginError
from services.explainer.methods import METHODS, ExplainModel, FeatureAblation, IntegratedGradients, log_odds


def _linear(width: int = 5) -> nn.Linear:
    torch.manual_seed(3)
    return nn.Linear(width, 2).eval()


def test_log_odds_is_the_target_probability_logit() -> None:
    z = torch.tensor([[1.0, 2.0, 3.0]])
    p = torch.softmax(z, 1)[0, 2]
    assert math.isclose(float(log_odds(z, 2)[0]), math.log(p / (1 - p)), rel_tol=1e-6)
    assert math.isclose(float(log_odds(z[:, :2], 1)[0]), 1.0, rel_tol=1e-6)  # two classes: z_t - z_other


def test_integrated_gradients_equal_captum_on_a_tabular_mlp() -> None:
    torch.manual_seed(0)
    module = TabularMLP(12, (32, 16), 0.0).eval()
    x, b = torch.randn(1, 12), torch.randn(1, 12) * 0.1
    ours = IntegratedGradients(ExplainModel("mlp", module, "trained", "d")).attribute(
        (x,), (b,), target=1, steps=50, groups=torch.arange(12), n_groups=12)
    captum = CaptumIntegratedGradients(lambda inp: log_odds(module(inp), 1))
    attr, delta = captum.attribute(x, b, n_steps=50, method="gausslegendre", return_convergence_delta=True)
    assert torch.allclose(torch.from_numpy(ours.values).float(), attr[0], atol=1e-5)
    assert math.isclose(ours.delta, float(delta[0]), abs_tol=1e-5)
    assert ours.steps == 50


def test_integrated_gradients_of_a_linear_model_are_weight_times_distance_and_complete() -> None:
    lin = _linear()
    x, b = torch.randn(1, 5), torch.zeros(1, 5)
    r = IntegratedGradients(ExplainModel("mlp", lin, "trained", "d")).attribute(
        (x,), (b,), target=1, steps=8, groups=torch.tensor([0, 0, 1, 2, 2]), n_groups=3)
    per_column = ((lin.weight[1] - lin.weight[0]) * (x - b)[0]).detach().double()
    expected = [per_column[:2].sum(), per_column[2], per_column[3:].sum()]
    assert torch.allclose(torch.from_numpy(r.values), torch.stack(expected), atol=1e-5)
    assert abs(r.delta) < 1e-5 and math.isclose(r.values.sum(), r.change, abs_tol=1e-5)


def test_feature_ablation_gives_one_value_per_group_and_needs_no_gradients() -> None:
    lin = _linear()
    x, b = torch.randn(1, 5), torch.zeros(1, 5)
    groups = torch.tensor([0, 0, 1, 2, 2])
    model = ExplainModel("mlp", torch.jit.script(lin), "quantized", "d")
    r = FeatureAblation(model).attribute((x,), (b,), target=1, steps=0, groups=groups, n_groups=3)
    ig = IntegratedGradients(ExplainModel("mlp", lin, "trained", "d")).attribute(
        (x,), (b,), target=1, steps=8, groups=groups, n_groups=3)
    # On an additive model, removing a group costs exactly its integrated gradient.
    assert torch.allclose(torch.from_numpy(r.values), torch.from_numpy(ig.values), atol=1e-5)
    assert r.steps == 0 and abs(r.delta) < 1e-5
    assert not FeatureAblation.needs_gradients and IntegratedGradients.needs_gradients


def test_feature_ablation_shows_interactions_as_a_gap() -> None:
    class Product(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch.zeros(len(x)), x[:, 0] * x[:, 1]], dim=1)

    r = FeatureAblation(ExplainModel("mlp", Product(), "trained", "d")).attribute(
        (torch.tensor([[2.0, 3.0]]),), (torch.zeros(1, 2),), target=1, steps=0, groups=torch.arange(2), n_groups=2)
    assert r.values.tolist() == [6.0, 6.0] and r.change == 6.0 and r.delta == 6.0


def test_methods_registry_lists_the_valid_names_for_an_unknown_one() -> None:
    assert METHODS.names() == ["feature_ablation", "integrated_gradients"]
    with pytest.raises(UnknownPluginError) as info:
        METHODS.get("kernel_shap")
    assert info.value.reason == Reason.INVALID_ARGUMENT
    assert "feature_ablation, integrated_gradients" in info.value.message
