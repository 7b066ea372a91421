"""Quantizer: dynamic int8 against fp32 for the MLP family (the trainer's default width and a production width)
and the MiniLM text family, every ratio measured in one run by the service's own code.

Models are trained the way the trainer trains them (its loop; for text, a linear head on the frozen encoder's
mean-pooled embeddings of reference notes), then handed to the quantizer's pipeline with the four dynamic int8
forms configured: weight scales per output row or one per tensor, Linear layers run by fbgemm (`dynamic-int8`,
`dynamic-int8-tensor`) or by Bulwark's kernel (`dynamic-int8-vnni`, `dynamic-int8-vnni-tensor`). The figures
are those `report.json` carries, and the quantizer chooses among the forms as it would in service. Each form
gets one row against the issue's three targets (its batch-64 speed-up as the value; its serialized weights and
accuracy beside it); the form the quantizer chose gets every figure. Sizes are the serialized weights (the
tensor storages in the TorchScript archive, as the issue's target reads), with the whole file (weights and
code) beside them; latencies are one-thread CPU medians, fp32 and the forms timed round-robin in a fresh
process (the quantizer's default); accuracy, AUROC and F1 are on held-out records neither model trained on,
each record scored alone (the quantizer's default); the same metrics with records scored in batches of 64,
and how far a record's score moves between the two, are printed beside them (dynamic int8 takes activation
scales per batch). Beside the batch-64 speed-up is its ceiling, the fp32 batch-64 latency over the int8
batch-1 latency: the int8 model's fixed cost per call, which no batch-64 call can undercut. For the MLPs the
chosen form and fp32 are also timed, in this process, from inside one TorchScript call at batch 64: the call
with no forward in it (what serving from Python costs both forms alike) and the first forward in a call,
which is what a served call runs: (call + fp32) / (call + int8) is a served call's speed-up, split into those
two parts. The anchor is PyTorch's BERT dynamic quantization tutorial (BERT-base on MRPC: 438 MB -> 181 MB,
F1 0.9019 -> 0.8953), quoted, not re-run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

from _common import Row, progress, save
from bulwark.families import FAMILIES, LoadedModel, script_bytes
from bulwark.families.text import DEFAULT_CONFIG as TEXT_CONFIG
from bulwark.kernels import load_torchscript
from bulwark.features import REFERENCE_FEATURES, FeatureSpec
from bulwark.reference import ReferenceGenerator
from services.quantizer.pipeline import Quantizer
from services.quantizer.settings import QuantizerSettings
from services.trainer.dataset import in_validation
from services.trainer.distributed import builder, run_training
from services.trainer.training import LoopConfig

ANCHOR_SIZE_RATIO = 438.0 / 181.4
ANCHOR_F1_POINTS = (0.8953 - 0.9019) * 100


def split(n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Labeled reference payloads split like the trainer splits (hash of the event id); notes hold no
    personal values, as after the anonymizer."""
    events = list(ReferenceGenerator(seed=seed, labeled_fraction=1.0, pii_note_fraction=0.0).events(n))
    train = [e.payload for e in events if not in_validation(e.id, 0.2)]
    val = [e.payload for e in events if in_validation(e.id, 0.2)]
    return train, val


def labels(records: list[dict[str, Any]]) -> np.ndarray:
    """The is_fraud labels as 0/1."""
    return np.array([int(r["is_fraud"]) for r in records], dtype=np.int64)


def mlp(train: list[dict[str, Any]], val: list[dict[str, Any]], hidden: list[int],
        epochs: int) -> tuple[LoadedModel, bytes]:
    """An MLP trained by the trainer's loop, and its fp32 TorchScript as the trainer writes it."""
    spec = FeatureSpec.fit(train, REFERENCE_FEATURES)
    config = {"hidden": hidden, "dropout": 0.0}
    result = run_training(builder("mlp", spec, config), spec.encode(train), labels(train), spec.encode(val),
                          labels(val), LoopConfig(seed=7, max_epochs=epochs, patience=4))
    family = FAMILIES.get("mlp")
    module = family.build(spec, config)
    module.load_state_dict(result.state)
    module.eval()
    return LoadedModel(family, module, config, spec), script_bytes(module)


@torch.no_grad()
def text(train: list[dict[str, Any]], val: list[dict[str, Any]], epochs: int) -> tuple[LoadedModel, bytes]:
    """The text family as the trainer trains it: frozen MiniLM, mean pooling, a trained linear head."""
    family = FAMILIES.get("text")
    config = dict(TEXT_CONFIG)
    module = family.build({}, config).eval()
    tok = family.tokenizer(max_tokens=int(config["max_tokens"]))

    def embed(records: list[dict[str, Any]]) -> np.ndarray:
        out = [module.pooled(*tok([r["note"] for r in records[i:i + 64]])).numpy() for i in range(0, len(records), 64)]
        return np.concatenate(out).astype(np.float32)

    progress(f"embedding {len(train) + len(val)} notes with the frozen encoder")
    et, ev = embed(train), embed(val)
    with torch.enable_grad():
        result = run_training(builder("text-head", None, {"hidden": et.shape[1], "classes": 2}), et, labels(train),
                              ev, labels(val), LoopConfig(seed=7, max_epochs=epochs, patience=8, learning_rate=0.01))
    module.head.load_state_dict(result.state)
    fp32 = script_bytes(module, tok(["a short example text", "another"]))
    return LoadedModel(family, module, config, config, None, {"tokenizer": tok}), fp32


# Weight scales per row or per tensor, Linear layers run by fbgemm or by Bulwark's kernel (bulwark.kernels).
DYNAMIC = ("dynamic-int8", "dynamic-int8-tensor", "dynamic-int8-vnni", "dynamic-int8-vnni-tensor")


class _MaybeForward(torch.nn.Module):
    """A TorchScript call that runs a served form's forward, or returns its input untouched."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, run: bool) -> torch.Tensor:
        """The form's logits when `run`, else `x`."""
        return self.inner(x) if run else x


def _inside_call(model: bytes, x: torch.Tensor, rounds: int = 2000) -> tuple[float, float]:
    """Microseconds of a call with no forward and of the first forward in a call (medians of interleaved
    calls with 0 and 1 forwards)."""
    call = torch.jit.script(_MaybeForward(load_torchscript(model)))
    times: list[list[float]] = [[], []]
    for r in range(rounds + 50):
        for i, run in enumerate((False, True)):
            t0 = time.perf_counter()
            call(x, run)
            if r >= 50:
                times[i].append(time.perf_counter() - t0)
    empty, one = (statistics.median(t) * 1e6 for t in times)
    return empty, one - empty


@torch.no_grad()
def forward_rows(label: str, fp32: bytes, int8: bytes, name: str, x: torch.Tensor) -> list[Row]:
    """fp32 and the int8 form timed from inside one TorchScript call, one thread (see the module doc)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        call, f_first = _inside_call(fp32, x)
        _, q_first = _inside_call(int8, x)
    finally:
        torch.set_num_threads(threads)
    tag = f"{label}, {name}"
    return [
        Row("quantizer", f"{tag}: one batch-64 forward inside a TorchScript call, fp32 / int8",
            f_first / q_first, "x", f"{f_first:.1f} us / {q_first:.1f} us"),
        Row("quantizer", f"{label}: the TorchScript call around it, from Python, with no forward", call, "us",
            f"paid by both: (call + fp32) / (call + int8) = {(call + f_first) / (call + q_first):.2f}x"),
    ]


def _summary_row(label: str, report: dict[str, Any], name: str, own: QuantizerSettings) -> Row:
    """One dynamic form against the issue's three targets at once: batch-64 speed (the value), serialized
    weights, and the accuracy budget."""
    [c] = [c for c in report["candidates"] if c["name"] == name]
    if "vs_fp32" not in c:
        return Row("quantizer", f"{label}, {name}: batch-64 speed; weights; accuracy", 0.0, "x",
                   f"{c['status']}: {'; '.join(c['why'])}", ">= 1.5x; >= 3.5x; in budget", False)
    vs = c["vs_fp32"]
    within = vs["accuracy_loss"] <= own.accuracy_budget and vs["auroc_loss"] <= own.auroc_budget
    ok = vs["speedup_batch_64"] >= 1.5 and vs["weight_ratio"] >= 3.5 and within
    detail = (f"weights {vs['weight_ratio']:.2f}x, accuracy {-vs['accuracy_loss'] * 100:+.2f} points, AUROC "
              f"{-vs['auroc_loss']:+.4f}; {c['status']}")
    return Row("quantizer", f"{label}, {name}: batch-64 speed; weights; accuracy", vs["speedup_batch_64"],
               "x", detail, ">= 1.5x; >= 3.5x; in budget", ok)


def _chosen_rows(label: str, report: dict[str, Any], name: str) -> list[Row]:
    """Every figure of the form the quantizer chose, against fp32 (the targets are on the summary rows)."""
    ref = report["fp32"]
    [c] = [c for c in report["candidates"] if c["name"] == name]
    vs = c["vs_fp32"]
    bench, tag = "quantizer", f"{label}, {name}"
    # The int8 model's cost at one row is its fixed cost (dispatch, dynamic activation scales, kernel set-up);
    # batch 64 cannot cost less, so even free int8 arithmetic stops at fp32 b64 / int8 b1.
    ceiling = ref["latency_ms"]["batch_64"] / c["latency_ms"]["batch_1"]
    return [
        Row(bench, f"{tag}: serialized weights fp32 / int8; whole TorchScript file", vs["weight_ratio"], "x",
            f"fp32 {ref['weight_bytes'] / 1e6:.3f} MB; file {vs['size_ratio']:.2f}x (fp32 "
            f"{ref['size_bytes'] / 1e6:.3f} MB, weights + code)"),
        Row(bench, f"{tag}: batch-64 CPU latency fp32 / int8", vs["speedup_batch_64"], "x",
            f"fp32 {ref['latency_ms']['batch_64']:.3f} ms, int8 {c['latency_ms']['batch_64']:.3f} ms"),
        Row(bench, f"{tag}: batch-1 CPU latency fp32 / int8", vs["speedup_batch_1"], "x",
            f"fp32 {ref['latency_ms']['batch_1']:.3f} ms"),
        Row(bench, f"{tag}: batch-64 speed-up ceiling (free int8 arithmetic)", ceiling, "x",
            "fp32 b64 / int8 b1"),
        Row(bench, f"{tag}: accuracy; AUROC; F1 change", -vs["accuracy_loss"] * 100, "points",
            f"AUROC {-vs['auroc_loss']:+.4f}, F1 {-vs['f1_loss'] * 100:+.2f} points; fp32 accuracy "
            f"{ref['metrics']['accuracy']:.4f}, AUROC {ref['metrics']['auroc']:.4f}"),
        Row(bench, f"{tag}: AUROC change, scored in batches of 64", c["metrics_batch_64"]["auroc"]
            - ref["metrics_batch_64"]["auroc"], "", "same records, batched"),
        Row(bench, f"{tag}: batch wobble (max |p alone - p in a batch of 64|)", c["batch_wobble"], "",
            f"fp32 {ref['batch_wobble']:.1e}"),
        Row(bench, f"{tag}: predicted-class agreement", c["agreement"], "",
            f"{report['held_out']['records']} held out"),
    ]


def rows_for(label: str, loaded: LoadedModel, fp32: bytes, train: list[dict[str, Any]],
             val: list[dict[str, Any]], own: QuantizerSettings) -> tuple[list[Row], dict[str, Any]]:
    """Quantize with the service's pipeline: each dynamic form against the targets, and every figure of the
    form the quantizer chose."""
    heldout = {"validation": val, "train_sample": train[:1000], "label": "is_fraud"}
    outcome = Quantizer(own, progress=progress).quantize(loaded, heldout, fp32)
    report = outcome.report
    rows = [_summary_row(label, report, name, own) for name in own.candidates]
    chosen = outcome.form in DYNAMIC
    rows.append(Row("quantizer", f"{label}: the quantizer's choice, a dynamic int8 form within budget",
                    float(chosen), "", f"chose {outcome.form}", "1", chosen))
    if chosen:
        rows += _chosen_rows(label, report, outcome.form)
    if chosen and loaded.family.name == "mlp":
        rows += forward_rows(label, fp32, outcome.model_pt, outcome.form, loaded.inputs(val[:64])[0])
    return rows, {"decision": report["decision"], "fp32": report["fp32"],
                  **{c["name"]: c for c in report["candidates"] if c["name"] in DYNAMIC}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="reference events for the MLPs")
    parser.add_argument("--notes", type=int, default=2500, help="reference notes for the text model")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="timing budget per batch size")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    own = QuantizerSettings(candidates=list(DYNAMIC), latency_repeats=200, latency_max_s=args.latency_seconds)
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    train, val = split(args.events, seed=101)
    for label, hidden, epochs in (("MLP 2x64 (trainer default)", [64, 64], 30),
                                  ("MLP 3x512 (production width)", [512, 512, 512], 12)):
        progress(f"training {label}")
        loaded, fp32 = mlp(train, val, hidden, epochs)
        r, extra[label] = rows_for(label, loaded, fp32, train, val, own)
        rows += r
    progress("text: MiniLM + linear head")
    train, val = split(args.notes, seed=202)
    loaded, fp32 = text(train, val, epochs=60)
    r, extra["MiniLM text"] = rows_for("MiniLM text", loaded, fp32, train, val, own)
    rows += r
    rows += [
        Row("quantizer", "anchor: PyTorch BERT tutorial, size fp32 / int8", ANCHOR_SIZE_RATIO, "x", "published",
            "beat it"),
        Row("quantizer", "anchor: PyTorch BERT tutorial, F1 change", ANCHOR_F1_POINTS, "points", "published"),
    ]
    save("quantizer", rows, {"events": args.events, "notes": args.notes, "threads": 1, "details": extra})


if __name__ == "__main__":
    main()
