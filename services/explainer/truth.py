"""Explanations checked against a known truth: the reference data's fraud logit is additive in three fields
(`bulwark.reference`), so on a model trained on it, attributions should name those fields.

The definitions, fixed before measuring and never tuned to a result:

- a field's true contribution c_f is its ground-truth term at the input minus its term at the baseline, the
  same baseline point the attributions start from, in field units (`truth_contributions`); every
  non-influential field contributes exactly 0;
- the material fields of an example are the influential ones with |c_f| >= 0.1 * sum_g |c_g|. A field
  carrying under a tenth of the true change is not one a reader of the explanation should be asked to rank
  either way. One of three fields always carries at least a third, so an example has no material field only
  when it sits at the baseline in all three (skipped, and counted);
- an example passes when its k = |material| most attributed fields (by |attribution|, every field
  competing) are exactly the material fields;
- the examples are held-out records the model classifies correctly (predicted class = label).

Completeness is reported three ways: the service's converged flag (|delta| <= 1% of |F(x) - F(b)| plus
0.001 logits), the pure relative bound |delta| <= 1% of |F(x) - F(b)|, and the literal |delta| <= 1% of
|F(x)|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from bulwark.reference import INFLUENTIAL, LABEL_FIELD, truth_contributions
from services.explainer.dataplane import ExplainerDataPlane, ExplainInput

MATERIAL_SHARE = 0.1


def material(contributions: dict[str, float], share: float = MATERIAL_SHARE) -> set[str]:
    """The influential fields whose true contribution is material (see the module docstring)."""
    total = sum(abs(v) for v in contributions.values())
    return {f for f, v in contributions.items() if total > 0 and abs(v) >= share * total}


@dataclass
class TruthReport:
    """How attributions compared with the truth on one set of examples."""

    examples: int = 0
    passed: int = 0
    skipped: int = 0
    model_wrong: int = 0
    converged: int = 0
    within_change: int = 0
    within_output: int = 0
    sign_agreements: int = 0
    material_fields: int = 0
    steps: list[int] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Share of examples whose top-k attributed fields are exactly their material fields."""
        return self.passed / self.examples if self.examples else 0.0

    @property
    def completeness(self) -> float:
        """Share of examples the service reports converged."""
        return self.converged / self.examples if self.examples else 0.0

    @property
    def completeness_of_change(self) -> float:
        """Share of examples with |delta| <= bound * |F(x) - F(b)| (no absolute slack)."""
        return self.within_change / self.examples if self.examples else 0.0

    @property
    def completeness_of_output(self) -> float:
        """Share of examples with |delta| <= bound * |F(x)|."""
        return self.within_output / self.examples if self.examples else 0.0

    @property
    def sign_agreement(self) -> float:
        """Share of material fields whose attribution has the sign of their true contribution."""
        return self.sign_agreements / self.material_fields if self.material_fields else 0.0


def truth_check(plane: ExplainerDataPlane, model: str, version: int, records: Sequence[dict[str, Any]], *,
                steps: int = 0, keep_failures: int = 20) -> TruthReport:
    """Explain every correctly classified labeled record with integrated gradients and compare (see above)."""
    ev = plane.loader.get(model, version)
    positive = ev.classes[-1]  # the class the ground-truth logit is about
    # The baseline in field units is what the response reports; the truth is evaluated at the same point.
    baseline = {f: ev.baseline.by_feature[f] for f in INFLUENTIAL}
    report = TruthReport()
    bound = plane.own.tolerance
    for record in records:
        features = {f: record[f] for f in ev.fields}
        with torch.no_grad():
            predicted = int(ev.trained.logits(*ev.encode(features, "").inputs)[0].argmax())
        if predicted != int(record[LABEL_FIELD]):
            report.model_wrong += 1
            continue
        truth = truth_contributions(record, baseline)
        want = material(truth)
        if not want:
            report.skipped += 1
            continue
        out = plane.explain(ExplainInput(model, version, features, steps=steps, target=positive))
        attributed = dict(out.attributions)
        top = {name for name, _ in out.attributions[:len(want)]}
        report.examples += 1
        report.passed += top == want
        report.converged += out.convergence.converged
        report.within_change += abs(out.convergence.delta) <= bound * abs(out.output - out.baseline_output)
        report.within_output += abs(out.convergence.delta) <= bound * abs(out.output)
        report.steps.append(out.convergence.steps)
        for f in want:
            report.material_fields += 1
            report.sign_agreements += (attributed[f] > 0) == (truth[f] > 0)
        if top != want and len(report.failures) < keep_failures:
            report.failures.append({"truth": truth, "material": sorted(want), "top": sorted(top),
                                    "attributions": out.attributions[:5]})
    return report
