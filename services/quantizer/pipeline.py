"""One quantization, start to finish, on a loaded model: compress into every configured form, serialize,
evaluate each against fp32 on the held-out records, choose, and report. No Kafka, Redis or files here: the
handler verifies and loads the artifact and publishes the outcome; the bench calls this directly.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable

from bulwark.families import LoadedModel
from services.quantizer.candidates import TraceError, form, serialize
from services.quantizer.evaluate import HeldOut, evaluate, prepare
from services.quantizer.report import REFERENCE, Entry, build_report, choose, summarize
from services.quantizer.settings import QuantizerSettings

log = logging.getLogger(__name__)


@dataclass
class QuantizeOutcome:
    """The chosen form's TorchScript, where it serves, the full report and its summary."""

    form: str
    device: str
    model_pt: bytes
    report: dict[str, Any]
    summary: dict[str, Any]


class Quantizer:
    """Compresses, evaluates and chooses, per `QuantizerSettings`."""

    def __init__(self, own: QuantizerSettings, *, progress: Callable[[str], None] | None = None) -> None:
        self.own = own
        self._progress = progress or (lambda msg: log.info("%s", msg))

    def quantize(self, loaded: LoadedModel, heldout: dict[str, Any], fp32: bytes) -> QuantizeOutcome:
        """The outcome for `loaded`, whose served fp32 TorchScript is `fp32`.

        Raises `TraceError` when no form that was tried became TorchScript and at least one failed at that
        step (the model does not trace), and `InvalidArgumentError` when the held-out records cannot be encoded."""
        data = prepare(loaded, heldout, self.own)
        entries, forms = self._compress(loaded, data)
        tried = [e for e in entries if e.status != "skipped"]
        if tried and not forms and any(e.notes.get("trace") for e in tried):
            raise TraceError("no form could be serialized: " + "; ".join(w for e in tried for w in e.why))
        self._progress(f"evaluating {', '.join(forms)} on {len(data.labels)} held-out records")
        figures = evaluate({REFERENCE: fp32, **forms}, data, self.own, reference=REFERENCE)
        for e in entries:
            e.figures = figures.get(e.name)
        ref = figures[REFERENCE]
        decision = choose(entries, ref, self.own)
        held_out = {"records": int(len(data.labels)), "positives": int(data.labels.sum()),
                    "calibration_records": int(sum(len(b[0]) for b in data.calibration))}
        report = build_report(entries, ref, decision, self.own, held_out)
        device = next((e.device for e in entries if e.name == decision.form), self.own.serving_target)
        model_pt = fp32 if decision.form == REFERENCE else forms[decision.form]
        self._progress(decision.reason)
        inputs, outputs = loaded.family.io(loaded.spec)
        # What Triton's model configuration needs: every form keeps the family's fp32 interface.
        serving = {"format": "torchscript", "device": device, "inputs": [asdict(t) for t in inputs],
                   "outputs": [asdict(t) for t in outputs]}
        return QuantizeOutcome(decision.form, device, model_pt, report, {**summarize(report), "serving": serving})

    def _compress(self, loaded: LoadedModel, data: HeldOut) -> tuple[list[Entry], dict[str, bytes]]:
        entries: list[Entry] = []
        forms: dict[str, bytes] = {}
        for name in self.own.candidates:
            f = form(name, pruning_amount=self.own.pruning_amount)
            entry = Entry(name, f.device)
            entries.append(entry)
            why_not = (f"serves on {f.device}; the serving target is {self.own.serving_target}"
                       if f.device != self.own.serving_target else f.supports(loaded))
            if why_not:
                entry.status, entry.why = "skipped", [why_not]
                continue
            self._progress(f"compressing: {name}")
            try:
                candidate = f.compress(loaded, data.calibration)
            except Exception as exc:  # noqa: BLE001 - one form failing must not cost the others
                log.warning("form failed form=%s exception=%s", name, type(exc).__name__)
                entry.status, entry.why = "failed", [f"compression failed ({type(exc).__name__})"]
                continue
            entry.notes = candidate.notes
            try:
                forms[name] = serialize(candidate, data.example)
            except TraceError as exc:
                log.warning("form does not trace form=%s exception=%s", name, type(exc.__cause__).__name__)
                entry.status, entry.why = "failed", [exc.message]
                entry.notes = {**entry.notes, "trace": True}
        return entries, forms
