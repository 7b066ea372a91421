"""Quantizer: dynamic int8 against fp32 for the MLP family (the trainer's default width and a production width)
and the MiniLM text family, every ratio measured in one run by the service's own code.

Models are trained the way the trainer trains them (its loop; for text, a linear head on the frozen encoder's
mean-pooled embeddings of reference notes), then handed to the quantizer's pipeline with only the two dynamic
int8 forms configured (weight scales per output row, `dynamic-int8`, and one per tensor,
`dynamic-int8-tensor`): the figures are those `report.json` carries, and the quantizer chooses between them
as it would in service. Sizes are the serialized weights (the tensor storages in the TorchScript archive, as
the issue's target reads), with the whole file (weights and code) beside them; latencies are one-thread CPU
medians, fp32 and int8 timed round-robin in a fresh process (the quantizer's default); accuracy, AUROC and F1
are on held-out records neither model trained on, each record scored alone (the quantizer's default); the
same metrics with records scored in batches of 64, and how far a record's score moves between the two, are
printed beside them (dynamic int8 takes activation scales per batch). Beside each batch-64 speed-up is its
ceiling, the fp32 batch-64 latency over the int8 batch-1 latency: the int8 model's fixed cost per call, which
no batch-64 call can undercut. For the MLPs the chosen int8 form and fp32 are also timed, in this process,
from inside one TorchScript call at batch 64: the call with no forward in it (what serving from Python costs
both forms alike) and the first forward in a call, which is what a served call runs: (call + fp32) / (call +
int8) is a served call's speed-up, split into those two parts. The anchor is PyTorch's BERT dynamic
quantization tutorial (BERT-base on MRPC: 438 MB -> 181 MB, F1 0.9019 -> 0.8953), quoted, not re-run.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

from _common import Row, progress, save
from bulwark.families import FAMILIES, LoadedModel, script_bytes
from bulwark.families.text import DEFAULT_CONFIG as TEXT_CONFIG
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


DYNAMIC = ("dynamic-int8", "dynamic-int8-tensor")


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
    call = torch.jit.script(_MaybeForward(torch.jit.load(io.BytesIO(model), map_location="cpu").eval()))
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


def _form_rows(label: str, report: dict[str, Any], name: str, own: QuantizerSettings,
               full: bool) -> list[Row]:
    """One dynamic form's figures against fp32 (all of them when `full`, else size, speed and accuracy)."""
    ref = report["fp32"]
    [int8] = [c for c in report["candidates"] if c["name"] == name]
    vs = int8["vs_fp32"]
    bench, tag = "quantizer", f"{label}, {name}"
    rows = [
        Row(bench, f"{tag}: serialized weights fp32 / int8", vs["weight_ratio"], "x",
            f"fp32 {ref['weight_bytes'] / 1e6:.3f} MB", ">= 3.5x", vs["weight_ratio"] >= 3.5),
        Row(bench, f"{tag}: whole TorchScript file fp32 / int8", vs["size_ratio"], "x",
            f"fp32 {ref['size_bytes'] / 1e6:.3f} MB (weights + code)"),
        Row(bench, f"{tag}: batch-64 CPU latency fp32 / int8", vs["speedup_batch_64"], "x",
            f"fp32 {ref['latency_ms']['batch_64']:.2f} ms", ">= 1.5x", vs["speedup_batch_64"] >= 1.5),
    ]
    if full:
        # The int8 model's cost at one row is its fixed cost (dispatch, dynamic activation scales, kernel
        # set-up); batch 64 cannot cost less, so even free int8 arithmetic stops at fp32 b64 / int8 b1.
        ceiling = ref["latency_ms"]["batch_64"] / int8["latency_ms"]["batch_1"]
        rows += [
            Row(bench, f"{tag}: batch-1 CPU latency fp32 / int8", vs["speedup_batch_1"], "x",
                f"fp32 {ref['latency_ms']['batch_1']:.3f} ms"),
            Row(bench, f"{tag}: batch-64 speed-up ceiling (free int8 arithmetic)", ceiling, "x",
                "fp32 b64 / int8 b1"),
        ]
    rows += [
        Row(bench, f"{tag}: accuracy change", -vs["accuracy_loss"] * 100, "points",
            f"fp32 {ref['metrics']['accuracy']:.4f}", f">= -{own.accuracy_budget * 100:g}",
            vs["accuracy_loss"] <= own.accuracy_budget),
        Row(bench, f"{tag}: AUROC change", -vs["auroc_loss"], "", f"fp32 {ref['metrics']['auroc']:.4f}",
            f">= -{own.auroc_budget:g}", vs["auroc_loss"] <= own.auroc_budget),
    ]
    if full:
        rows += [
            Row(bench, f"{tag}: F1 change", -vs["f1_loss"] * 100, "points",
                f"fp32 {ref['metrics']['f1']:.4f}"),
            Row(bench, f"{tag}: AUROC change, scored in batches of 64", int8["metrics_batch_64"]["auroc"]
                - ref["metrics_batch_64"]["auroc"], "", "same records, batched"),
            Row(bench, f"{tag}: batch wobble (max |p alone - p in a batch of 64|)", int8["batch_wobble"], "",
                f"fp32 {ref['batch_wobble']:.1e}"),
            Row(bench, f"{tag}: predicted-class agreement", int8["agreement"], "",
                f"{report['held_out']['records']} held out"),
        ]
    return rows


def rows_for(label: str, loaded: LoadedModel, fp32: bytes, train: list[dict[str, Any]],
             val: list[dict[str, Any]], own: QuantizerSettings) -> tuple[list[Row], dict[str, Any]]:
    """Quantize with the service's pipeline; both dynamic forms' figures against fp32 as rows, and which form
    the quantizer chose."""
    heldout = {"validation": val, "train_sample": train[:1000], "label": "is_fraud"}
    outcome = Quantizer(own, progress=progress).quantize(loaded, heldout, fp32)
    report = outcome.report
    rows = _form_rows(label, report, DYNAMIC[0], own, full=True) + _form_rows(label, report, DYNAMIC[1], own,
                                                                             full=False)
    chosen = outcome.form in DYNAMIC
    rows.append(Row("quantizer", f"{label}: a dynamic int8 form within budget and chosen", float(chosen), "",
                    f"chose {outcome.form}", "1", chosen))
    if outcome.form in DYNAMIC and loaded.family.name == "mlp":
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
