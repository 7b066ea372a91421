"""The quantizer's selection rule: the best form within the accuracy budget, never one slower than fp32 on
cpu, fp16 only for gpu, and fp32 with the reason when nothing qualifies; then the whole pipeline on an MLP."""

from __future__ import annotations

import io

import pytest
import torch

from bulwark.families import FAMILIES, LoadedModel, script_bytes
from bulwark.features import REFERENCE_FEATURES, FeatureSpec
from bulwark.reference import ReferenceGenerator
from services.quantizer.candidates import TraceError
from services.quantizer.evaluate import Figures
from services.quantizer.pipeline import Quantizer
from services.quantizer.report import Entry, build_report, choose, summarize
from services.quantizer.settings import QuantizerSettings


def fig(name: str, *, acc: float = 0.90, auroc: float = 0.95, size: int = 1000, b64: float = 1.0,
        b1: float = 0.1) -> Figures:
    return Figures(name, size, size // 2, {"accuracy": acc, "auroc": auroc, "f1": 0.7}, 1.0, 0.0, 0.0,
                   {"accuracy": acc, "auroc": auroc, "f1": 0.7}, {"batch_1": b1, "batch_64": b64})


REF = fig("fp32", size=4000, b64=2.0, b1=0.2)


def entry(name: str, figures: Figures, device: str = "cpu") -> Entry:
    return Entry(name, device, figures=figures)


def test_cpu_picks_the_fastest_form_within_budget() -> None:
    entries = [entry("dynamic-int8", fig("d", size=1000, b64=1.2)),
               entry("static-int8", fig("s", size=1100, b64=0.8)),
               entry("pruned-int8", fig("p", acc=0.89, size=600, b64=0.5))]  # 1 point lost: over budget
    decision = choose(entries, REF, QuantizerSettings())
    assert decision.form == "static-int8" and "fastest at batch 64" in decision.reason
    assert [e.status for e in entries] == ["eligible", "chosen", "rejected"]
    assert "loses 1.00 accuracy points; the budget is 0.50" in entries[2].why[0]


def test_forms_within_the_latency_tie_are_ranked_by_accuracy() -> None:
    entries = [entry("dynamic-int8", fig("d", acc=0.90, b64=1.00)),
               entry("static-int8", fig("s", acc=0.897, b64=0.97))]  # 3% faster, 0.3 points worse
    decision = choose(entries, REF, QuantizerSettings())
    assert decision.form == "dynamic-int8" and "most accurate of 2" in decision.reason


@pytest.mark.parametrize(
    ("candidate", "fragment"),
    [
        (fig("d", acc=0.894), "loses 0.60 accuracy points"),       # just over 0.5 points
        (fig("d", auroc=0.944), "loses 0.0060 AUROC"),             # over 0.005 AUROC
        (fig("d", b64=2.2), "0.91x fp32's speed at batch 64"),     # smaller but slower than fp32
        (fig("d", size=4000), "not smaller than fp32"),
    ],
)
def test_nothing_within_budget_publishes_fp32_with_the_reason(candidate: Figures, fragment: str) -> None:
    entries = [entry("dynamic-int8", candidate), Entry("static-int8", "cpu", status="skipped",
                                                       why=["supported for the mlp family only"])]
    decision = choose(entries, REF, QuantizerSettings())
    assert decision.form == "fp32"
    assert decision.reason.startswith("no compressed form qualified, fp32 published unchanged")
    assert fragment in decision.reason and "static-int8 (supported for the mlp family only)" in decision.reason


def test_min_speedup_zero_accepts_a_slower_form() -> None:
    decision = choose([entry("dynamic-int8", fig("d", b64=2.5))], REF, QuantizerSettings(min_speedup=0))
    assert decision.form == "dynamic-int8"


def test_gpu_target_takes_fp16_and_ignores_cpu_latency() -> None:
    entries = [entry("fp16", fig("h", size=2000, b64=40.0), device="gpu"),
               entry("dynamic-int8", fig("d", size=1000, b64=1.0))]
    decision = choose(entries, REF, QuantizerSettings(serving_target="gpu"))
    assert decision.form == "fp16" and entries[1].status == "rejected"
    assert "serves on cpu; the serving target is gpu" in entries[1].why


def test_report_and_summary_carry_every_candidate_and_the_decision() -> None:
    own = QuantizerSettings()
    entries = [entry("dynamic-int8", fig("d", size=1000, b64=1.0)),
               Entry("fp16", "gpu", status="skipped", why=["serves on gpu; the serving target is cpu"])]
    decision = choose(entries, REF, own)
    report = build_report(entries, REF, decision, own, {"records": 10, "positives": 2})
    assert report["decision"]["form"] == "dynamic-int8"
    [d, h] = report["candidates"]
    assert d["vs_fp32"]["size_ratio"] == 4.0 and d["vs_fp32"]["speedup_batch_64"] == 2.0
    assert h["status"] == "skipped" and "vs_fp32" not in h
    summary = summarize(report)
    assert summary["form"] == "dynamic-int8" and summary["candidates"]["fp16"] == {"status": "skipped"}
    assert summary["fp32"]["size_bytes"] == 4000


# ---------------------------------------------------------------------- the pipeline end to end
@pytest.fixture(scope="module")
def mlp() -> tuple[LoadedModel, dict]:
    records = [e.payload for e in ReferenceGenerator(seed=8, labeled_fraction=1.0).events(1600)]
    train, val = records[:1200], records[1200:]
    spec = FeatureSpec.fit(train, REFERENCE_FEATURES)
    family = FAMILIES.get("mlp")
    torch.manual_seed(1)
    module = family.build(spec, {"hidden": [32, 32], "dropout": 0.0}).eval()
    heldout = {"validation": val, "train_sample": train, "label": "is_fraud"}
    return LoadedModel(family, module, {"hidden": [32, 32]}, spec), heldout


FAST = {"latency_repeats": 5, "latency_warmup": 1, "eval_records": 200}


def test_pipeline_reports_every_form_and_returns_the_chosen_torchscript(mlp) -> None:
    loaded, heldout = mlp
    own = QuantizerSettings(candidates=["dynamic-int8", "static-int8", "fp16", "pruned-int8"], min_speedup=0, **FAST)
    outcome = Quantizer(own).quantize(loaded, heldout, script_bytes(loaded.module))
    report = outcome.report
    statuses = {c["name"]: c["status"] for c in report["candidates"]}
    assert statuses["fp16"] == "skipped" and outcome.form in ("dynamic-int8", "static-int8", "pruned-int8")
    assert statuses[outcome.form] == "chosen" and report["held_out"]["records"] == 200
    chosen = next(c for c in report["candidates"] if c["name"] == outcome.form)
    assert chosen["size_bytes"] == len(outcome.model_pt) and chosen["batch_wobble"] is not None
    assert outcome.summary["serving"]["inputs"][0]["name"] == "INPUT__0" and outcome.device == "cpu"
    assert torch.jit.load(io.BytesIO(outcome.model_pt))(loaded.inputs(heldout["validation"][:3])[0]).shape == (3, 2)


def test_pipeline_with_no_form_within_budget_returns_fp32_bytes_unchanged(mlp) -> None:
    loaded, heldout = mlp
    fp32 = script_bytes(loaded.module)
    own = QuantizerSettings(candidates=["dynamic-int8"], min_speedup=1000, **FAST)  # nothing is 1000x faster
    outcome = Quantizer(own).quantize(loaded, heldout, fp32)
    assert outcome.form == "fp32" and outcome.model_pt == fp32
    assert "dynamic-int8" in outcome.summary["reason"] and "at least 1000x is needed" in outcome.summary["reason"]
    assert outcome.summary["candidates"]["dynamic-int8"]["status"] == "rejected"


def test_pipeline_raises_trace_error_when_no_form_serializes(mlp, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded, heldout = mlp

    def refuse(candidate, example):  # noqa: ANN001, ANN202
        raise TraceError(f"{candidate.name}: the module neither scripts nor traces (RuntimeError)")

    monkeypatch.setattr("services.quantizer.pipeline.serialize", refuse)
    with pytest.raises(TraceError, match="no form could be serialized"):
        Quantizer(QuantizerSettings(candidates=["dynamic-int8", "static-int8"], **FAST)).quantize(
            loaded, heldout, script_bytes(loaded.module))


def test_weight_bytes_counts_tensor_storage_not_code() -> None:
    import io

    import torch

    from services.quantizer.evaluate import weight_bytes

    module = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    assert weight_bytes(buf.getvalue()) == params  # 5,896 bytes of weights in a ~15 KB file
    assert len(buf.getvalue()) > 2 * params
    q = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
    qbuf = io.BytesIO()
    torch.jit.save(torch.jit.script(q), qbuf)
    assert 3.5 < params / weight_bytes(qbuf.getvalue()) < 4  # int8 weights, fp32 biases and scales


def test_fresh_process_timing_returns_every_form_at_every_batch_size(mlp) -> None:
    from services.quantizer.evaluate import measure_latencies

    loaded, heldout = mlp
    fp32 = script_bytes(loaded.module)
    inputs = {n: loaded.inputs(heldout["validation"][:n]) for n in (1, 64)}
    fresh = measure_latencies({"fp32": fp32, "again": fp32}, inputs, QuantizerSettings(**FAST))
    same = measure_latencies({"fp32": fp32}, inputs, QuantizerSettings(latency_process="same", **FAST))
    assert set(fresh) == {1, 64} and all(set(t) == {"fp32", "again"} for t in fresh.values())
    assert all(0 < ms < 1000 for t in (*fresh.values(), *same.values()) for ms in t.values())


def test_fresh_process_timing_failure_names_the_cause_and_the_way_out(mlp) -> None:
    from services.quantizer.evaluate import measure_latencies

    loaded, heldout = mlp
    inputs = {1: loaded.inputs(heldout["validation"][:1])}
    with pytest.raises(RuntimeError, match=r"TraceError: broken: its TorchScript does not load.*"
                                           r"BULWARK_QUANTIZER_LATENCY_PROCESS=same"):
        measure_latencies({"broken": b"not torchscript"}, inputs, QuantizerSettings(**FAST))
