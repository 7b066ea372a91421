"""The quantizer service with one more model family installed, whose model neither scripts nor traces: how
the quantizer's tests present it with "a model that fails to trace" (a family is a plugin; a third-party one
may well build such a module). `python -m tests.integration.untraceable_family` runs the real service."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bulwark.artifacts import Artifact
from bulwark.families import FAMILIES, LoadedModel
from bulwark.families.mlp import MLPFamily


class _DictOutput(nn.Module):
    """Wraps an MLP but returns a dict holding a Python object: TorchScript can neither script nor trace it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        """Logits, plus something only Python understands."""
        return {"logits": self.inner(x), "provenance": [object()]}


class UntraceableFamily(MLPFamily):
    """The MLP family's inputs and weights, behind a module that does not trace."""

    name = "untraceable"

    def load(self, artifact: Artifact) -> LoadedModel:
        """The MLP, wrapped."""
        loaded = super().load(artifact)
        return LoadedModel(self, _DictOutput(loaded.module).eval(), loaded.config, loaded.spec, artifact)


if __name__ == "__main__":
    FAMILIES.register(UntraceableFamily())
    from services.quantizer.__main__ import main

    main()
