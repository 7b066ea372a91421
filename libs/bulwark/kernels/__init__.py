"""Bulwark's compiled kernel: `bulwark::int8_linear`, a dynamic int8 Linear layer (int8_linear.cpp says how
and why), which the quantizer's `dynamic-int8-vnni` forms call from TorchScript.

The library is built from the C++ source beside this file by the system's C++ compiler against the installed
torch (`make venv` runs `python -m bulwark.kernels build`; a process that needs it and finds none builds it
once, in about 10 s). Its file name carries a digest of the source, the torch version and the flags, so a
torch upgrade or an edited kernel builds a new one and never loads a stale one. Every process that loads a
TorchScript model goes through `load_torchscript`, which loads the library first when the model calls it.

`python -m bulwark.kernels [build|status] [--json]` builds it, or says where it is and which path it takes
on this CPU.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch

from bulwark.errors import BulwarkError, Reason

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("int8_linear.cpp")
BUILD_DIR = Path(__file__).with_name("build")
# What a TorchScript archive's code says when it calls one of these ops.
_OP_MARK = b"ops.bulwark."
_FLAGS = ("-O3", "-std=c++20", "-shared", "-fPIC", "-w")
_lock = threading.Lock()
_loaded: Path | None = None


class KernelError(BulwarkError):
    """The kernel library is not built and could not be built or loaded here."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.FAILED_PRECONDITION, message)


def _command(output: Path) -> list[str]:
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise KernelError("Bulwark's int8 kernel needs a C++ compiler to build, and none is on PATH: install "
                          "one (sudo apt-get install g++), then run `python -m bulwark.kernels build`")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    # torch's own include and library folders (what torch.utils.cpp_extension names for a CPU build; that
    # module imports setuptools, which a slim serving image lacks).
    root = Path(torch.__file__).parent
    includes = [f"-I{root / 'include'}", f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}"]
    return [compiler, *_FLAGS, abi, *includes, str(SOURCE), f"-L{root / 'lib'}", "-ltorch_cpu", "-lc10", "-o",
            str(output)]


def library_path() -> Path:
    """Where the library for this source, torch version and set of flags is (or will be) built."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(f"{torch.__version__}|{torch._C._GLIBCXX_USE_CXX11_ABI}|{' '.join(_FLAGS)}".encode())
    return BUILD_DIR / f"libbulwark_kernels-{digest.hexdigest()[:16]}.so"


def build(*, force: bool = False) -> Path:
    """Compile the library unless it is built already (`force`: again); returns its path. Raises
    `KernelError` with the compiler's last lines when it fails."""
    target = library_path()
    if target.exists() and not force:
        return target
    try:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=BUILD_DIR)
        os.close(fd)
    except OSError as exc:
        raise KernelError(f"cannot write the kernel library into {BUILD_DIR} ({exc.strerror}): build it "
                          "where the package is writable (`python -m bulwark.kernels build`, as the image "
                          "build does)") from exc
    log.info("building Bulwark's int8 kernel (once per torch version) path=%s", target)
    try:
        done = subprocess.run(_command(Path(tmp)), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:]) or f"exit {done.returncode}"
            raise KernelError(f"compiling {SOURCE.name} failed: {tail}")
        os.chmod(tmp, 0o755)  # readable by the unprivileged user an image's services run as
        os.replace(tmp, target)  # atomic: a process loading it never sees half a file
    finally:
        Path(tmp).unlink(missing_ok=True)
    for stale in BUILD_DIR.glob("libbulwark_kernels-*.so"):
        if stale != target:  # built from another source or torch; a process that has it loaded keeps it
            stale.unlink(missing_ok=True)
    return target


def load() -> Path:
    """Load the library into this process (building it first if needed); returns its path. Idempotent."""
    global _loaded
    with _lock:
        if _loaded is None:
            path = build()
            try:
                torch.ops.load_library(str(path))
            except OSError as exc:
                raise KernelError(f"the kernel library {path.name} does not load ({exc}); rebuild it with "
                                  "`python -m bulwark.kernels build --force`") from exc
            _loaded = path
        return _loaded


def isa() -> str:
    """Which path `bulwark::int8_linear` takes on this CPU: `avx512_vnni`, or `portable` (correct, slower)."""
    load()
    return str(torch.ops.bulwark.int8_kernel_isa())


def pack(qweight: torch.Tensor) -> torch.Tensor:
    """int8 weights [N, K] (one output per row) in the kernel's layout, int8 [ceil(K/4), N, 4]: the 4 k-values
    of each output side by side, outputs next to each other. K is padded with zeros to a multiple of 4."""
    if qweight.dtype != torch.int8 or qweight.dim() != 2:
        raise ValueError(f"pack takes int8 weights [N, K], got {qweight.dtype} {tuple(qweight.shape)}")
    n, k = qweight.shape
    padded = torch.nn.functional.pad(qweight, (0, -k % 4))
    return padded.reshape(n, -1, 4).permute(1, 0, 2).contiguous()


def unpack(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The int8 weights [N, K] that `pack` packed."""
    return packed.permute(1, 0, 2).reshape(packed.shape[1], -1)[:, :in_features].contiguous()


def needed_by(data: bytes) -> bool:
    """Whether the TorchScript archive `data` calls one of this library's ops."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return any(_OP_MARK in archive.read(i) for i in archive.infolist()
                   if "/code/" in f"/{i.filename}" and i.filename.endswith(".py"))


def load_torchscript(source: bytes | BinaryIO) -> torch.jit.ScriptModule:
    """A TorchScript module from bytes or a stream, on the CPU, in eval mode; this library is loaded first
    when the module calls it (`KernelError` says how to get it when it cannot be)."""
    data = source if isinstance(source, bytes) else source.read()
    if needed_by(data):
        load()
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


def status() -> dict[str, str]:
    """The library's path, whether it is built, and the path the op takes on this CPU (building nothing)."""
    path = library_path()
    built = path.exists()
    return {"kernel": "bulwark::int8_linear", "library": str(path), "built": "yes" if built else "no",
            "isa": isa() if built else "-"}


def main(argv: list[str] | None = None) -> int:
    """`python -m bulwark.kernels [build [--force] | status] [--json]`."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bulwark.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", choices=["build", "status"], default="status")
    parser.add_argument("--force", action="store_true", help="build again even if built")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        if args.action == "build":
            build(force=args.force)
        info = status()
    except KernelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        print("\n".join(f"{k.upper():<{width}}  {v}" for k, v in info.items()))
    return 0
