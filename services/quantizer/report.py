"""Choosing a form, and the report that says why.

The rule, applied to every evaluated candidate against fp32 on the same held-out records:

1. it serves on the configured target (int8 kernels are CPU-only; fp16 is for GPUs);
2. it stays within the accuracy budget: accuracy loss <= `accuracy_budget` and AUROC loss <= `auroc_budget`;
3. it is smaller than fp32;
4. on cpu, it is at least `min_speedup` times as fast as fp32 at batch 64 (a form slower than fp32 is no
   gain however small; CPU timings say nothing about a GPU, so this is not applied to gpu).

Among the candidates that pass, cpu takes the fastest at batch 64, where forms within `latency_tie` of the
fastest count as tied and the one losing least accuracy (then AUROC, then size) wins; gpu takes the smallest.
When none passes, fp32 is published unchanged and the reason lists why each candidate failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.quantizer.evaluate import Figures
from services.quantizer.settings import QuantizerSettings

REFERENCE = "fp32"


@dataclass
class Entry:
    """One candidate in the report: its status, why, what was done, and its figures."""

    name: str
    device: str
    status: str = "evaluated"   # skipped | failed | rejected | eligible | chosen
    why: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    figures: Figures | None = None


@dataclass
class Decision:
    """The chosen form and the reason, in words."""

    form: str
    reason: str


def verdict(fig: Figures, ref: Figures, device: str, own: QuantizerSettings) -> list[str]:
    """Why `fig` may not be chosen (empty: it may)."""
    why = []
    if device != own.serving_target:
        why.append(f"serves on {device}; the serving target is {own.serving_target}")
    acc, auc = fig.loss(ref, "accuracy"), fig.loss(ref, "auroc")
    if acc > own.accuracy_budget + 1e-12:
        why.append(f"loses {acc * 100:.2f} accuracy points; the budget is {own.accuracy_budget * 100:.2f}")
    if auc > own.auroc_budget + 1e-12:
        why.append(f"loses {auc:.4f} AUROC; the budget is {own.auroc_budget:.4f}")
    if fig.size_bytes >= ref.size_bytes:
        why.append(f"not smaller than fp32 ({fig.size_bytes:,} vs {ref.size_bytes:,} bytes)")
    if own.serving_target == "cpu" and own.min_speedup > 0 and fig.speedup(ref, 64) < own.min_speedup:
        why.append(f"{fig.speedup(ref, 64):.2f}x fp32's speed at batch 64; at least {own.min_speedup:g}x is needed")
    return why


def choose(entries: list[Entry], ref: Figures, own: QuantizerSettings) -> Decision:
    """Apply the rule (module docstring) to the evaluated entries; sets each entry's status."""
    eligible = []
    for e in entries:
        if e.figures is None:
            continue
        e.why = verdict(e.figures, ref, e.device, own)
        e.status = "rejected" if e.why else "eligible"
        if not e.why:
            eligible.append(e)
    if not eligible:
        tried = [f"{e.name} ({'; '.join(e.why)})" for e in entries if e.status in ("rejected", "failed", "skipped")]
        return Decision(REFERENCE, "no compressed form qualified, fp32 published unchanged: "
                        + (", ".join(tried) if tried else "no candidate was configured"))
    if own.serving_target == "cpu":
        fastest = min(e.figures.latency_ms["batch_64"] for e in eligible)
        # Timings on a shared machine wobble by a few percent: forms that close count as equally fast.
        tied = [e for e in eligible if e.figures.latency_ms["batch_64"] <= fastest * (1 + own.latency_tie)]
        best = min(tied, key=lambda e: (e.figures.loss(ref, "accuracy"), e.figures.loss(ref, "auroc"),
                                        e.figures.size_bytes))
        rank = "fastest at batch 64" if len(tied) == 1 else \
            f"most accurate of {len(tied)} within {own.latency_tie:.0%} of the fastest at batch 64"
    else:
        best = min(eligible, key=lambda e: (e.figures.size_bytes, e.figures.loss(ref, "accuracy")))
        rank = "smallest"
    best.status = "chosen"
    f = best.figures
    return Decision(best.name, (
        f"{best.name}: of {len(eligible)} form(s) within budget, the {rank}; {f.size_ratio(ref):.2f}x smaller, "
        f"{f.speedup(ref, 64):.2f}x fp32's speed at batch 64 ({f.speedup(ref, 1):.2f}x at batch 1), accuracy "
        f"{-f.loss(ref, 'accuracy') * 100:+.2f} points, AUROC {-f.loss(ref, 'auroc'):+.4f}, "
        f"agreement {f.agreement:.4f}"))


def _entry_doc(e: Entry, ref: Figures) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": e.name, "device": e.device, "status": e.status, "why": e.why, "notes": e.notes}
    if e.figures is not None:
        f = e.figures
        doc.update(f.to_dict())
        doc["vs_fp32"] = {"accuracy_loss": round(f.loss(ref, "accuracy"), 6), "auroc_loss": round(f.loss(ref, "auroc"), 6),
                          "f1_loss": round(f.loss(ref, "f1"), 6), "size_ratio": round(f.size_ratio(ref), 4),
                          "weight_ratio": round(f.weight_ratio(ref), 4),
                          "speedup_batch_1": round(f.speedup(ref, 1), 4), "speedup_batch_64": round(f.speedup(ref, 64), 4)}
    return doc


def build_report(entries: list[Entry], ref: Figures, decision: Decision, own: QuantizerSettings,
                 held_out: dict[str, int]) -> dict[str, Any]:
    """report.json: the rule's settings, the held-out set, fp32's figures, every candidate, the decision."""
    return {
        "serving_target": own.serving_target,
        "budget": {"accuracy": own.accuracy_budget, "auroc": own.auroc_budget, "min_speedup": own.min_speedup},
        "held_out": held_out,
        "latency": {"threads": 1, "statistic": "median", "repeats_max": own.latency_repeats,
                    "warmup": own.latency_warmup, "process": own.latency_process},
        REFERENCE: ref.to_dict(),
        "candidates": [_entry_doc(e, ref) for e in entries],
        "decision": {"form": decision.form, "reason": decision.reason},
    }


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The short form for the event, the registry and the model card: the decision and each candidate's
    status with its headline ratios."""
    chosen = report["decision"]["form"]
    figures = report[REFERENCE] if chosen == REFERENCE else next(c for c in report["candidates"] if c["name"] == chosen)
    return {
        "form": chosen, "reason": report["decision"]["reason"], "serving_target": report["serving_target"],
        "budget": report["budget"], "metrics": figures["metrics"], "size_bytes": figures["size_bytes"],
        "fp32": {"metrics": report[REFERENCE]["metrics"], "size_bytes": report[REFERENCE]["size_bytes"],
                 "latency_ms": report[REFERENCE]["latency_ms"]},
        "candidates": {c["name"]: {"status": c["status"], **c.get("vs_fp32", {}),
                                   **({"agreement": c["agreement"]} if "agreement" in c else {})}
                       for c in report["candidates"]},
    }
