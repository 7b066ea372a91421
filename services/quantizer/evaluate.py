"""What a compressed form costs and gains against fp32, measured on the version's own held-out records.

Every form is measured as it ships: its TorchScript bytes are loaded back with
`bulwark.kernels.load_torchscript` (torch.jit.load, with Bulwark's kernel library loaded first where a form
calls it), exactly as Triton's Python backend will, and then

- accuracy, AUROC and F1 on held-out validation records (`bulwark.metrics`), and the loss against fp32,
  with records scored `eval_batch` at a time (default 1: each record alone, as one request is served);
- agreement: the share of records whose predicted class equals fp32's;
- the largest change of the positive-class probability against fp32;
- batch wobble: the largest change of a record's probability between being scored alone and in a batch of
  64. fp32 has none; dynamic int8 computes activation scales per batch, so a record's score also depends on
  its batch-mates and on the padding they bring. The same metrics at batch 64 are reported beside it;
  operators whose traffic is batched set `eval_batch` to 64 and the budget applies there;
- serialized size: the TorchScript bytes (what ships), and of them the weights: the tensor storages in the
  archive, without the code TorchScript carries beside them (a few KB, which dominate a small model);
- CPU latency at batch 1 and batch 64: one thread (stable figures, and what one Triton instance gets), a
  warm-up, then the median of timed calls. Forms are timed round-robin, one call each per round, so that
  load from other processes on the machine falls on all of them alike rather than on whichever ran last.
  By default they are timed in a fresh Python process that loads only them (`services.quantizer.timing`),
  as a serving process holds only its model: in the quantizer's own process, after it has trained or
  evaluated other models, a 2x64 MLP's fp32 call ran 7% slower and its int8 call 22% slower.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bulwark import kernels
from bulwark.errors import InvalidArgumentError
from bulwark.families import LoadedModel
from bulwark.metrics import classification_report
from services.quantizer.candidates import Inputs, TraceError
from services.quantizer.settings import QuantizerSettings

LATENCY_BATCHES = (1, 64)
WOBBLE_BATCH = 64


@dataclass
class HeldOut:
    """Held-out records as model inputs: evaluation batches with labels, the same records in batches of 64
    (batch wobble), latency batches, calibration."""

    batches: list[Inputs]
    wide: list[Inputs]
    labels: np.ndarray
    example: Inputs
    latency: dict[int, Inputs]
    calibration: list[Inputs] = field(default_factory=list)


def prepare(loaded: LoadedModel, heldout: dict[str, Any], own: QuantizerSettings) -> HeldOut:
    """Encode heldout.json's labeled validation records (evaluation, latency) and training sample
    (static-int8 calibration: calibrating on the evaluation records would flatter the form)."""
    label = heldout.get("label", "is_fraud")
    records = [r for r in heldout.get("validation", []) if isinstance(r.get(label), bool)][: own.eval_records]
    if len(records) < 2:
        raise InvalidArgumentError(f"heldout.json has {len(records)} labeled validation records; at least 2 are "
                                   "needed to measure what compression costs")
    labels = np.array([int(r[label]) for r in records], dtype=np.int64)
    step = own.eval_batch
    batches = [loaded.inputs(records[i:i + step]) for i in range(0, len(records), step)]
    wide = batches if step == WOBBLE_BATCH else [loaded.inputs(records[i:i + WOBBLE_BATCH])
                                                 for i in range(0, len(records), WOBBLE_BATCH)]
    latency = {n: loaded.inputs([records[i % len(records)] for i in range(n)]) for n in LATENCY_BATCHES}
    sample = heldout.get("train_sample") or []
    sample = sample[: own.calibration_records]
    calibration = [loaded.inputs(sample[i:i + WOBBLE_BATCH]) for i in range(0, len(sample), WOBBLE_BATCH)]
    return HeldOut(batches, wide, labels, loaded.inputs(records[:2]), latency, calibration)


@dataclass
class Figures:
    """One form's measurements (fp32 included, as the reference)."""

    name: str
    size_bytes: int
    weight_bytes: int
    metrics: dict[str, float]
    agreement: float
    max_prob_change: float
    batch_wobble: float
    batched: dict[str, float]
    latency_ms: dict[str, float]

    def loss(self, ref: Figures, metric: str) -> float:
        """How much `metric` dropped against `ref` (positive: worse), 0 when undefined (one class only)."""
        a, b = ref.metrics[metric], self.metrics[metric]
        return 0.0 if np.isnan(a) or np.isnan(b) else float(a - b)

    def speedup(self, ref: Figures, batch: int) -> float:
        """`ref`'s latency over this form's at `batch` (above 1: faster)."""
        return ref.latency_ms[f"batch_{batch}"] / self.latency_ms[f"batch_{batch}"]

    def size_ratio(self, ref: Figures) -> float:
        """`ref`'s size over this form's (above 1: smaller)."""
        return ref.size_bytes / self.size_bytes

    def weight_ratio(self, ref: Figures) -> float:
        """`ref`'s serialized weights over this form's (above 1: smaller)."""
        return ref.weight_bytes / self.weight_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"size_bytes": self.size_bytes, "weight_bytes": self.weight_bytes,
                "metrics": {k: _round(v) for k, v in self.metrics.items()},
                "agreement": _round(self.agreement), "max_prob_change": _round(self.max_prob_change),
                "batch_wobble": _round(self.batch_wobble),
                f"metrics_batch_{WOBBLE_BATCH}": {k: _round(v) for k, v in self.batched.items()},
                "latency_ms": {k: _round(v) for k, v in self.latency_ms.items()}}


def _round(v: float) -> float | None:
    return None if v is None or np.isnan(v) else round(float(v), 6)


def weight_bytes(data: bytes) -> int:
    """Bytes of tensor storage in a TorchScript archive (its `data/` entries: weights, biases, buffers and
    packed quantized weights), without code, debug tables and pickled structure."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(i.file_size for i in archive.infolist() if i.filename.split("/")[-2:-1] == ["data"])


def load_script(name: str, data: bytes) -> torch.jit.ScriptModule:
    """TorchScript from bytes, as a fresh serving process loads it."""
    try:
        return kernels.load_torchscript(data)
    except Exception as exc:  # noqa: BLE001 - whatever the cause, this form cannot be served
        raise TraceError(f"{name}: its TorchScript does not load ({type(exc).__name__})") from exc


@torch.no_grad()
def probabilities(module: torch.nn.Module, batches: Sequence[Inputs]) -> np.ndarray:
    """Positive-class probability for every record of `batches`."""
    return np.concatenate([torch.softmax(module(*b).float(), dim=1)[:, 1].numpy() for b in batches])


@torch.no_grad()
def measure_latency(modules: dict[str, torch.nn.Module], inputs: Inputs, own: QuantizerSettings) -> dict[str, float]:
    """Median milliseconds per call of each module on `inputs`, one thread, round-robin (see the module doc)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names = list(modules)
        for name in names:
            for _ in range(own.latency_warmup):
                modules[name](*inputs)
        times: dict[str, list[float]] = {name: [] for name in names}
        started = time.perf_counter()
        for r in range(own.latency_repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
                t0 = time.perf_counter()
                modules[name](*inputs)
                times[name].append(time.perf_counter() - t0)
            if r >= 2 and time.perf_counter() - started > own.latency_max_s:
                break
        return {name: statistics.median(ts) * 1000 for name, ts in times.items()}
    finally:
        torch.set_num_threads(threads)


def measure_latencies(forms: dict[str, bytes], inputs: dict[int, Inputs], own: QuantizerSettings, *,
                      loaded: dict[str, torch.nn.Module] | None = None) -> dict[int, dict[str, float]]:
    """`measure_latency` of every form at every batch size in `inputs`, in the process `own` names (in this
    one, on `loaded` where the caller has the forms loaded already)."""
    if own.latency_process == "same":
        modules = loaded or {name: load_script(name, b) for name, b in forms.items()}
        return {n: measure_latency(modules, x, own) for n, x in inputs.items()}
    with tempfile.TemporaryDirectory(prefix="bulwark-timing-") as tmp:
        folder = Path(tmp)
        for i, data in enumerate(forms.values()):
            (folder / f"{i}.pt").write_bytes(data)
        torch.save({n: list(x) for n, x in inputs.items()}, folder / "inputs.pt")
        (folder / "job.json").write_text(json.dumps({"forms": list(forms), "settings": own.model_dump(
            include={"latency_repeats", "latency_warmup", "latency_max_s"})}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        limit = 60 + 4 * own.latency_max_s * len(inputs)
        done = subprocess.run([sys.executable, "-m", "services.quantizer.timing", tmp], env=env,
                              capture_output=True, text=True, timeout=limit)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"timing the forms in a fresh process failed (exit {done.returncode}: "
                               f"{tail[0]}); set BULWARK_QUANTIZER_LATENCY_PROCESS=same to time them in this "
                               "process")
        return {int(n): t for n, t in json.loads((folder / "latency.json").read_text()).items()}


def evaluate(forms: dict[str, bytes], data: HeldOut, own: QuantizerSettings, *, reference: str = "fp32") -> dict[str, Figures]:
    """Figures for every form in `forms` (TorchScript bytes, `reference` among them) on `data`."""
    modules = {name: load_script(name, b) for name, b in forms.items()}
    probs = {name: probabilities(m, data.batches) for name, m in modules.items()}
    wide = probs if data.wide is data.batches else {name: probabilities(m, data.wide) for name, m in modules.items()}
    latency = measure_latencies(forms, {n: data.latency[n] for n in LATENCY_BATCHES}, own, loaded=modules)
    ref = probs[reference]
    out = {}
    for name, p in probs.items():
        out[name] = Figures(
            name=name, size_bytes=len(forms[name]), weight_bytes=weight_bytes(forms[name]),
            metrics=_metrics(data.labels, p),
            agreement=float(np.mean((p >= 0.5) == (ref >= 0.5))),
            max_prob_change=float(np.max(np.abs(p - ref))),
            batch_wobble=float(np.max(np.abs(wide[name] - p))), batched=_metrics(data.labels, wide[name]),
            latency_ms={f"batch_{n}": latency[n][name] for n in LATENCY_BATCHES},
        )
    return out


def _metrics(labels: np.ndarray, p: np.ndarray) -> dict[str, float]:
    report = classification_report(labels, p)
    return {k: report[k] for k in ("accuracy", "auroc", "f1")}
