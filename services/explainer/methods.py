"""Attribution methods: how much each input group moved the model's output away from a baseline.

Each method is a small class in Captum's shape: the constructor takes the model (an `ExplainModel`), and one
verb, `attribute`, takes the inputs, the baseline and per-call parameters and returns one value per input
group (a field's encoded columns, or one token).

The explained output is the target class's logit in the statistical sense,

    F(x) = log(p_t / (1 - p_t)) = z_t - logsumexp(z_j, j != t),

computed from the model's raw outputs z. Cross-entropy training fixes only differences between class
logits, so a single raw logit may carry any shared offset the loss never sees; the log-odds do not, and
they are on the same scale as the reference data's ground truth (stated as a logit). For two classes,
F = z_t - z_other.

`METHODS` is the one place methods are registered.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from captum.attr import FeatureAblation as CaptumFeatureAblation
from captum.attr import LayerIntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from bulwark.plugins import Registry

QUADRATURE = "gausslegendre"  # Captum's default rule for integrated gradients


@functools.lru_cache(maxsize=64)
def quadrature(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre weights and nodes on [0, 1] as [steps, 1] float32 columns, Captum's own, computed once
    per step count: numpy's `leggauss` costs several times the integration itself on a small MLP."""
    step_sizes, alphas = approximation_parameters(QUADRATURE)
    return (torch.tensor(step_sizes(steps), dtype=torch.float32).unsqueeze(1),
            torch.tensor(alphas(steps), dtype=torch.float32).unsqueeze(1))


def log_odds(z: torch.Tensor, target: int) -> torch.Tensor:
    """The target class's log-odds per row of logits `z` [n, classes]."""
    others = torch.cat([z[:, :target], z[:, target + 1:]], dim=1)
    return z[:, target] - torch.logsumexp(others, dim=1)


@dataclass(eq=False)
class ExplainModel:
    """One loaded form of a model version, as the methods see it."""

    family: str
    module: nn.Module
    form: str
    digest: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def logits(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Class logits [n, classes] (the first output when the module returns several)."""
        out = self.module(*inputs)
        return out[0] if isinstance(out, (tuple, list)) else out

    def log_odds(self, *inputs: torch.Tensor, target: int) -> torch.Tensor:
        """F(inputs) for the target class, one value per row."""
        return log_odds(self.logits(*inputs).float(), target)

    @property
    def embedding(self) -> nn.Module:
        """The token embedding layer of a text model (where text attributions integrate)."""
        return self.module.encoder.get_input_embeddings()


@dataclass
class AttributionResult:
    """Values per input group, the outputs they explain, and how well they add up."""

    values: np.ndarray
    output: float
    baseline_output: float
    delta: float
    steps: int

    @property
    def change(self) -> float:
        """F(input) - F(baseline): what the attributions decompose."""
        return self.output - self.baseline_output


class AttributionMethod(Protocol):
    """What every method provides."""

    name: str
    needs_gradients: bool
    integrates: bool

    def attribute(self, inputs: tuple[torch.Tensor, ...], baselines: tuple[torch.Tensor, ...], *, target: int,
                  steps: int, groups: torch.Tensor, n_groups: int) -> AttributionResult:
        """Values per group for one input (batch of one)."""
        ...


def _group_sum(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> np.ndarray:
    out = torch.zeros(n_groups, dtype=torch.float64)
    out.index_add_(0, groups, values.detach().to(torch.float64))
    return out.numpy()


class IntegratedGradients:
    """Integrated gradients (Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017):

        IG_i(x) = (x_i - x'_i) * integral over a in [0, 1] of dF(x' + a (x - x')) / dx_i da,

    approximated by Gauss-Legendre quadrature on `steps` nodes (Captum's default rule and nodes). By
    completeness, sum_i IG_i = F(x) - F(x'); the quadrature's shortfall is returned as `delta`, exactly as
    Captum's `return_convergence_delta=True` defines it.

    Tabular models: every node, the input and the baseline go through the model as one batch, with one
    backward pass. This is Captum's `IntegratedGradients` to float precision (a unit test compares them) with
    a fraction of its per-call overhead (bench/explainer.py measures both). Text models: token ids are not
    differentiable, so Captum's `LayerIntegratedGradients` integrates over the token embedding layer, from the
    baseline's [PAD] embeddings to the input's, and a token's value is the sum over its embedding dimensions.
    """

    name = "integrated_gradients"
    needs_gradients = True
    integrates = True

    def __init__(self, model: ExplainModel) -> None:
        self.model = model

    def attribute(self, inputs: tuple[torch.Tensor, ...], baselines: tuple[torch.Tensor, ...], *, target: int,
                  steps: int, groups: torch.Tensor, n_groups: int) -> AttributionResult:
        """IG per group for one input; `steps` quadrature nodes."""
        if self.model.family == "text":
            return self._layer(inputs, baselines, target, steps, groups, n_groups)
        return self._batched(inputs[0], baselines[0], target, steps, groups, n_groups)

    def _batched(self, x: torch.Tensor, b: torch.Tensor, target: int, steps: int, groups: torch.Tensor,
                 n_groups: int) -> AttributionResult:
        w, a = (t.to(x.dtype) for t in quadrature(steps))
        diff = x - b
        with torch.enable_grad():
            points = torch.cat([b + a * diff, x, b]).requires_grad_(True)
            f = self.model.log_odds(points, target=target)
            (grad,) = torch.autograd.grad(f.sum(), points)
        per_column = (grad[:steps] * w).sum(0) * diff[0]
        output, baseline_output = float(f[steps].detach()), float(f[steps + 1].detach())
        delta = float(per_column.double().sum()) - (output - baseline_output)
        return AttributionResult(_group_sum(per_column, groups, n_groups), output, baseline_output, delta, steps)

    def _layer(self, inputs: tuple[torch.Tensor, ...], baselines: tuple[torch.Tensor, ...], target: int, steps: int,
               groups: torch.Tensor, n_groups: int) -> AttributionResult:
        ids, mask = inputs
        model = self.model

        def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return model.log_odds(input_ids, attention_mask, target=target)

        # Captum hooks the embedding layer for the call's duration: calls on one model take turns.
        with model.lock, torch.enable_grad():
            lig = LayerIntegratedGradients(forward, model.embedding)
            attr, delta = lig.attribute(ids, baselines[0], additional_forward_args=(mask,), n_steps=steps,
                                        method=QUADRATURE, internal_batch_size=min(steps, 32),
                                        return_convergence_delta=True)
        with torch.no_grad():
            f = forward(torch.cat([ids, baselines[0]]), torch.cat([mask, mask]))
        per_token = attr.sum(-1)[0]
        return AttributionResult(_group_sum(per_token, groups, n_groups), float(f[0]), float(f[1]),
                                 float(delta.sum()), steps)


class FeatureAblation:
    """Feature ablation by groups (occlusion: Zeiler and Fergus, "Visualizing and Understanding Convolutional
    Networks", ECCV 2014), with Captum's `FeatureAblation`:

        A_g(x) = F(x) - F(x with group g's inputs set to the baseline's),

    one forward per group, all groups in one batch. It needs no gradients, so it runs on the form Triton
    serves (a quantized TorchScript included). Nothing makes the values add up to F(x) - F(x') when groups
    interact; `delta` reports that gap and `steps` is 0 (nothing is integrated).
    """

    name = "feature_ablation"
    needs_gradients = False
    integrates = False

    def __init__(self, model: ExplainModel) -> None:
        self.model = model

    def attribute(self, inputs: tuple[torch.Tensor, ...], baselines: tuple[torch.Tensor, ...], *, target: int,
                  steps: int, groups: torch.Tensor, n_groups: int) -> AttributionResult:
        """Ablation value per group for one input (`steps` is ignored)."""
        model = self.model
        extra = inputs[1:]

        def forward(first: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            # Captum stacks perturbed copies of the first input only; repeat the others to match.
            rest = tuple(r.expand(first.shape[0], *r.shape[1:]) for r in rest)
            return model.log_odds(first, *rest, target=target)

        with torch.no_grad():
            attr = CaptumFeatureAblation(forward).attribute(
                inputs[0], baselines=baselines[0], additional_forward_args=extra or None,
                feature_mask=groups.unsqueeze(0), perturbations_per_eval=n_groups)
            f = forward(torch.cat([inputs[0], baselines[0]]), *extra)
        # Captum writes a group's value into each of its elements: average them back to one per group.
        counts = np.bincount(groups.numpy(), minlength=n_groups).astype(np.float64)
        values = _group_sum(attr[0], groups, n_groups) / np.maximum(counts, 1)
        output, baseline_output = float(f[0]), float(f[1])
        return AttributionResult(values, output, baseline_output, float(values.sum()) - (output - baseline_output), 0)


METHODS: Registry[type] = Registry("attribution method")
METHODS.register(IntegratedGradients)
METHODS.register(FeatureAblation)
