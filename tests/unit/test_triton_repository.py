"""Triton's model repository: a form that calls Bulwark's int8 kernel is refused on the libtorch backend."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from bulwark import kernels
from bulwark.artifacts import ArtifactStore, ArtifactWriter
from bulwark.crypto import KeyRing, Signer, Verifier
from bulwark.families.base import TensorSpec
from bulwark.kernels import KernelError
from bulwark.triton.repository import ModelRepository, ServingConfig

IO = ([TensorSpec("INPUT__0", "TYPE_FP32", (4,))], [TensorSpec("OUTPUT__0", "TYPE_FP32", (2,))])


class _KernelLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", kernels.pack(torch.ones(2, 4, dtype=torch.int8)))
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.bulwark.int8_linear(x, self.weight, 4, self.scale, None, False)


def _script(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


@pytest.mark.parametrize(("module", "refused"), [(torch.nn.Linear(4, 2), False), (_KernelLayer(), True)])
def test_libtorch_backend_refuses_a_form_that_calls_the_kernel(tmp_path: Path, module, refused: bool) -> None:
    kernels.load()
    signer = Signer.generate()
    verifier = Verifier({signer.key_id: signer.public_key})
    store = ArtifactStore(tmp_path / "artifacts", verifier=verifier, kek=KeyRing.generate("kek"),
                          signer=signer)
    writer = ArtifactWriter("fraud", 1, "quantized", "mlp")
    writer.add("model.pt", _script(module))
    store.publish(writer)
    repo = ModelRepository(tmp_path / "repo", verifier, ServingConfig(backend="pytorch", gpu=True))
    place = lambda: repo.place(store.path("fraud", 1, "quantized"), *IO,  # noqa: E731
                               plaintext=store.open("fraud", 1, "quantized"))
    if refused:
        with pytest.raises(KernelError, match="serve this CPU form on the python backend"):
            place()
        assert repo.versions("fraud") == []
    else:
        assert (place() / "model.pt").exists() and repo.versions("fraud") == [1]
