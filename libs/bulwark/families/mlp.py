"""The tabular MLP family: the reference use case's default model (fast on CPU).

Input: the encoded feature vector (see `bulwark.features`); output: two logits (legitimate, fraud).
`embed()` exposes the last hidden layer (used for out-of-distribution scores).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from bulwark.artifacts import Artifact
from bulwark.families.base import LoadedModel, TensorSpec
from bulwark.kernels import load_torchscript
from bulwark.features import FeatureSpec

DEFAULT_CONFIG: dict[str, Any] = {"hidden": [64, 64], "dropout": 0.1}


class TabularMLP(nn.Module):
    """Linear-ReLU-Dropout blocks, then a linear head to the class logits."""

    def __init__(self, width: int, hidden: Sequence[int] = (64, 64), dropout: float = 0.1, classes: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = width
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(prev, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.body(x))

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations."""
        return self.body(x)


class MLPFamily:
    """Tabular MLP over the feature specification."""

    name = "mlp"
    classes = ("legitimate", "fraud")

    def build(self, spec: FeatureSpec, config: dict[str, Any]) -> nn.Module:
        """A fresh TabularMLP sized for `spec`."""
        cfg = {**DEFAULT_CONFIG, **config}
        return TabularMLP(spec.width, cfg["hidden"], cfg["dropout"], len(self.classes))

    def encode(self, model: LoadedModel, records: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """Validate, then encode records into the feature matrix."""
        spec: FeatureSpec = model.spec
        for r in records:
            spec.validate(r)
        return (torch.from_numpy(spec.encode(records)),)

    def io(self, spec: FeatureSpec, config: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """One FP32 input vector; FP32 logits, and the last hidden layer (for the guard's scores)."""
        hidden = int({**DEFAULT_CONFIG, **(config or {})}["hidden"][-1])
        return ([TensorSpec("INPUT__0", "TYPE_FP32", (spec.width,))],
                [TensorSpec("OUTPUT__0", "TYPE_FP32", (len(self.classes),)),
                 TensorSpec("OUTPUT__1", "TYPE_FP32", (hidden,))])

    def load(self, artifact: Artifact) -> LoadedModel:
        """Rebuild the eager module from the artifact's config, feature spec and state_dict."""
        spec = FeatureSpec.from_dict(artifact.json("features.json"))
        config = artifact.json("config.json")
        if "state.pt" not in artifact.files:
            # A compressed form has no eager fp32 weights (they stay in its parent): run its TorchScript.
            return LoadedModel(self, load_torchscript(artifact.files["model.pt"]), config, spec, artifact)
        module = self.build(spec, config)
        module.load_state_dict(torch.load(artifact.stream("state.pt"), map_location="cpu", weights_only=True))
        return LoadedModel(self, module.eval(), config, spec, artifact)
