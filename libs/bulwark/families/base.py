"""What every model family provides: build, export for Triton, load from an artifact, predict.

A family is one kind of model (a tabular MLP, a text classifier). Every Bulwark stage that touches a model
(trainer, quantizer, gate, explainer, guard, front door) goes through its family, so a version trained by one
is loaded the same way by all the others.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from bulwark.artifacts import Artifact


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the served model (Triton's config.pbtxt is generated from these)."""

    name: str
    dtype: str          # Triton dtype: TYPE_FP32, TYPE_INT64, ...
    dims: tuple[int, ...]


@dataclass
class LoadedModel:
    """A model ready to predict: the eager module, how to turn records into its inputs, its metadata."""

    family: "Family"
    module: torch.nn.Module
    config: dict[str, Any]
    spec: Any
    artifact: Artifact | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def inputs(self, records: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """The module's input tensors for `records` (validated first)."""
        return self.family.encode(self, records)

    @torch.no_grad()
    def logits(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """Class logits [n, classes]."""
        return self.module(*self.inputs(records)).float().numpy()

    def predict(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """Class probabilities [n, classes]."""
        z = self.logits(records)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    @property
    def ready(self) -> bool:
        """True once loaded (always, for an in-process model)."""
        return True


class Family(Protocol):
    """A model family."""

    name: str
    classes: tuple[str, ...]

    def build(self, spec: Any, config: dict[str, Any]) -> torch.nn.Module:
        """A fresh, untrained module."""
        ...

    def encode(self, model: LoadedModel, records: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """Validated input tensors for records (raises InvalidArgumentError naming the bad field)."""
        ...

    def io(self, spec: Any, config: dict[str, Any] | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Served inputs and outputs (OUTPUT__0 is always the class logits)."""
        ...

    def load(self, artifact: Artifact) -> LoadedModel:
        """The eager model from a verified, decrypted artifact."""
        ...


def script_bytes(module: torch.nn.Module, example: tuple[torch.Tensor, ...] | None = None) -> bytes:
    """TorchScript of `module` as bytes (scripted; traced with `example` when scripting is not possible)."""
    module = module.eval()
    try:
        scripted = torch.jit.script(module)
    except Exception:  # noqa: BLE001 - some modules (HF transformers) only trace
        if example is None:
            raise
        scripted = torch.jit.trace(module, example, strict=False)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    return buf.getvalue()


def state_bytes(module: torch.nn.Module) -> bytes:
    """The module's state_dict as bytes."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()
