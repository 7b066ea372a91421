"""Triton's model repository, built from verified Bulwark artifacts.

Layout (one Triton model per Bulwark model, one numbered folder per version):

    <repository>/<model>/config.pbtxt
    <repository>/<model>/<version>/model.py          Python backend entry (CPU; decrypts in memory)
    <repository>/<model>/<version>/manifest.json     the artifact, copied as stored: signed and encrypted
    <repository>/<model>/<version>/manifest.sig
    <repository>/<model>/<version>/model.pt ...

`config.pbtxt` comes from the family's served inputs and outputs, with dynamic batching and the `all`
version policy: the versions Triton loads are exactly the numbered folders present. Adding a version is a new
folder plus a load call, and only that version loads (a changed config would reload every version); taking
one out of service renames its folder to `retired-<version>` (Triton ignores it) and calls load again.
Triton runs in explicit model-control mode, so the updater does all this through the repository API
without a restart.

Backends: `python` (default; the artifact stays encrypted on disk and `model.py` decrypts it at load) and
`pytorch` (libtorch, for GPU images: Triton's libtorch backend reads `model.pt` from disk, so the weights are
written in clear; put the repository on a memory-backed volume, see docs/deployment.md). A form that calls
Bulwark's int8 kernel (`bulwark.kernels`, the quantizer's CPU `*-vnni` forms) serves on the python backend
only: the libtorch backend cannot load the kernel library, and placing one there is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from bulwark.artifacts import MANIFEST, SIGNATURE, Artifact, verify_folder
from bulwark.crypto.signing import Verifier
from bulwark.families.base import TensorSpec
from bulwark.kernels import KernelError, needed_by

Backend = Literal["python", "pytorch"]
MODEL_PY = Path(__file__).with_name("python_model.py")


@dataclass(frozen=True)
class ServingConfig:
    """How a model is served: backend, batching, instances, device."""

    backend: Backend = "python"
    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32, 64)
    max_queue_delay_us: int = 500
    instances: int = 1
    gpu: bool = False


def _dims(spec: TensorSpec) -> str:
    return ", ".join(str(d) for d in spec.dims)


def render_config(model: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                  cfg: ServingConfig = ServingConfig()) -> str:
    """config.pbtxt text for a model."""
    lines = [f'name: "{model}"']
    lines.append('backend: "python"' if cfg.backend == "python" else 'platform: "pytorch_libtorch"')
    lines.append(f"max_batch_size: {cfg.max_batch_size}")
    for kind, specs in (("input", inputs), ("output", outputs)):
        lines.append(f"{kind} [")
        lines.append(",\n".join(f'  {{ name: "{s.name}" data_type: {s.dtype} dims: [ {_dims(s)} ] }}' for s in specs))
        lines.append("]")
    lines.append("dynamic_batching {")
    lines.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in cfg.preferred_batch_sizes)} ]")
    lines.append(f"  max_queue_delay_microseconds: {cfg.max_queue_delay_us}")
    lines.append("}")
    lines.append("version_policy: { all: {} }")
    kind = "KIND_GPU" if cfg.gpu else "KIND_CPU"
    lines.append(f"instance_group [ {{ kind: {kind} count: {cfg.instances} }} ]")
    if cfg.backend == "python":
        # One model instance handles one batch at a time; torch threads are set in model.py.
        lines.append('parameters: { key: "bulwark_format" value: { string_value: "artifact/1" } }')
    return "\n".join(lines) + "\n"


class ModelRepository:
    """Places verified artifacts into a Triton model repository and keeps config.pbtxt in step."""

    def __init__(self, root: Path, verifier: Verifier, cfg: ServingConfig = ServingConfig()) -> None:
        self.root = root
        self._verifier = verifier
        self.cfg = cfg

    def version_dir(self, model: str, version: int) -> Path:
        """A version's folder."""
        return self.root / model / str(version)

    def versions(self, model: str) -> list[int]:
        """Versions in service (numbered folders: what Triton loads)."""
        d = self.root / model
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []

    def retired(self, model: str) -> list[int]:
        """Versions taken out of service but still on disk."""
        d = self.root / model
        return sorted(int(p.name.split("-", 1)[1]) for p in d.glob("retired-*")) if d.exists() else []

    def retire(self, model: str, version: int) -> None:
        """Take a version out of service (Triton unloads it on the next load call)."""
        src = self.version_dir(model, version)
        if src.exists():
            dst = self.root / model / f"retired-{version}"
            shutil.rmtree(dst, ignore_errors=True)
            os.replace(src, dst)

    def restore(self, model: str, version: int) -> bool:
        """Put a retired version back in service; False if it is not on disk."""
        src = self.root / model / f"retired-{version}"
        if not src.exists():
            return False
        os.replace(src, self.version_dir(model, version))
        return True

    def place(self, artifact_folder: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
              *, plaintext: Artifact | None = None) -> Path:
        """Verify the artifact, copy it into its version folder (atomically), and write config.pbtxt.
        `plaintext` (the opened artifact) is needed only for the pytorch backend."""
        manifest = verify_folder(artifact_folder, self._verifier)
        model, version = manifest["model"], int(manifest["version"])
        final = self.version_dir(model, version)
        tmp = final.parent / f".tmp-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            if self.cfg.backend == "python":
                for name in [MANIFEST, SIGNATURE, *manifest["files"]]:
                    shutil.copy2(artifact_folder / name, tmp / name)
                shutil.copy2(MODEL_PY, tmp / "model.py")
            else:
                if plaintext is None:
                    raise ValueError("the pytorch backend needs the decrypted artifact (plaintext=)")
                if needed_by(plaintext.files["model.pt"]):
                    raise KernelError(f"{model} v{version} calls Bulwark's int8 kernel, which Triton's "
                                      "libtorch backend cannot load: serve this CPU form on the python "
                                      "backend")
                (tmp / "model.pt").write_bytes(plaintext.files["model.pt"])
            # A folder already there is the same signed artifact (placement is idempotent): replace it whole.
            if final.exists():
                shutil.rmtree(final)
            shutil.rmtree(self.root / model / f"retired-{version}", ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.write_config(model, inputs, outputs)
        return final

    def write_config(self, model: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        """Write config.pbtxt (unchanged content is not rewritten: a changed config reloads every version)."""
        path = self.root / model / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = render_config(model, inputs, outputs, self.cfg)
        if path.exists() and path.read_text() == text:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        (self.root / model / "io.json").write_text(json.dumps({
            "inputs": [s.__dict__ for s in inputs], "outputs": [s.__dict__ for s in outputs]}))

    def io(self, model: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The served inputs and outputs recorded at placement."""
        doc = json.loads((self.root / model / "io.json").read_text())
        mk = lambda d: TensorSpec(d["name"], d["dtype"], tuple(d["dims"]))  # noqa: E731
        return [mk(d) for d in doc["inputs"]], [mk(d) for d in doc["outputs"]]

    def remove(self, model: str, version: int) -> None:
        """Delete a retired version's folder for good."""
        shutil.rmtree(self.root / model / f"retired-{version}", ignore_errors=True)
