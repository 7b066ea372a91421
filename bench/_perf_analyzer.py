"""Triton's own load generator, perf_analyzer, for a figure of Triton alone beside ours.

The PyPI `perf-analyzer` 2.60 wheel needs a newer glibc than this machine's and installs a stub. The binary
that works ships inside the tritonclient 2.51.0 wheel (the same release as the tritonserver that
nvidia-pytriton bundles); it links against libb64 and libcudart, which pytriton's wheel carries under
versioned names. `ensure()` downloads that wheel once into var/tools/ and links the two libraries under the
names the binary asks for.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "var" / "tools" / "perf_analyzer"
WHEEL = "tritonclient==2.51.0"


def ensure() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment it runs in (downloaded on first use)."""
    binary = TOOLS / "perf_analyzer"
    libs = TOOLS / "lib"
    if not binary.exists():
        TOOLS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux2014_x86_64", "-d", str(TOOLS), WHEEL], check=True)
        [wheel] = glob.glob(str(TOOLS / "tritonclient-2.51.0-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith("/bin/perf_analyzer"))
            binary.write_bytes(zf.read(member))
        binary.chmod(0o755)
        Path(wheel).unlink()
    libs.mkdir(exist_ok=True)
    import pytriton

    bundled = Path(pytriton.__file__).resolve().parents[1] / "nvidia_pytriton.libs"
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        link = libs / name
        if not link.exists():
            link.symlink_to(next(bundled.glob(pattern)))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    return binary, env


def measure(url: str, model: str, version: int, concurrency: int, *, batch: int = 1,
            shape: list[str] | None = None, window_ms: int = 3000) -> dict[str, float]:
    """Throughput (infer/s) and p50/p99 latency (ms) of Triton alone at a concurrency."""
    binary, env = ensure()
    cmd = [str(binary), "-m", model, "-x", str(version), "-u", url, "-i", "grpc", "-b", str(batch),
           "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-interval", str(window_ms),
           "--stability-percentage", "999", "--max-trials", "3", "--percentile", "99"]
    for s in shape or []:
        cmd += ["--shape", s]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({out.returncode}): {out.stderr.strip() or out.stdout[-800:]}")
    text = out.stdout
    rate = re.findall(r"Concurrency: \d+, throughput: ([\d.]+) infer/sec, latency (\d+) usec", text)
    p50 = re.findall(r"p50 latency: (\d+) usec", text)
    p99 = re.findall(r"p99 latency: (\d+) usec", text)
    if not rate:
        raise RuntimeError(f"could not read perf_analyzer's output:\n{text[-800:]}")
    return {"throughput": float(rate[-1][0]), "p50_ms": float(p50[-1]) / 1000 if p50 else float("nan"),
            "p99_ms": float(p99[-1]) / 1000 if p99 else float(rate[-1][1]) / 1000}
