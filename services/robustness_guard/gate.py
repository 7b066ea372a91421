"""The gate: a candidate version either holds under attack and noise, or it never reaches Triton.

For each candidate (the served form the quantizer chose, or the trained form), on the held-out records that
travel with the version: clean accuracy and calibration; accuracy under FGSM and PGD (crafted with the
gradients of the version's fp32 weights, white-box, then evaluated on the served form); under Gaussian
noise; with a share of fields missing; for the text family, under typos, swaps and homoglyphs. The policy's
thresholds decide, each failure stated with its figure and limit. The gate also fits the online guard's
adversarial detector on clean against PGD inputs and measures its AUROC on a held-out half.

Membership inference (`bulwark.guard.membership`): loss- and confidence-threshold attacks, and ART's
black-box attack for the tabular family, score the sample of training members that travels with the version
against its held-out non-members; the strongest attack's AUC is the figure. For a model trained on personal
data (the trainer's card says so) the policy's `max_membership_auc` is a ceiling.

The report and the guard data are written as a signed `gate` artifact of the version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bulwark.artifacts import Artifact, ArtifactStore, ArtifactWriter, canonical, sha256
from bulwark.families import FAMILIES, LoadedModel
from bulwark.guard.attacks import FGSMAttack, GaussianNoise, MissingFeatures, PGDAttack, TextPerturbation
from bulwark.guard.detector import AdversarialDetector, HiddenSpace, constraint_features, detector_features
from bulwark.guard.membership import membership_audit
from bulwark.guard.policy import GuardPolicy
from bulwark.metrics import auroc, expected_calibration_error
from bulwark.profiles import gaussian_stats


@dataclass
class GateResult:
    """The verdict, the report, and where the signed report lives."""

    passed: bool
    reasons: list[str]
    report: dict[str, Any]
    path: str
    digest: str


def _numeric_mask(loaded: LoadedModel) -> np.ndarray:
    spec = loaded.spec
    mask = np.zeros(spec.width, dtype=np.float32)
    for f in spec.features:
        if f.kind == "numeric":
            mask[spec.slices()[f.name]] = 1.0
    return mask


@torch.no_grad()
def _forward(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()


@torch.no_grad()
def _hidden(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return module.embed(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())


def _probs(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True))[:, 1]


class Gate:
    """Evaluates candidates against the policy and signs the report."""

    def __init__(self, policy: GuardPolicy, store: ArtifactStore) -> None:
        self.policy = policy
        self.store = store

    def evaluate(self, model: str, version: int) -> GateResult:
        """Attack, measure, decide, sign. Raises the artifact's verification error for a bad artifact."""
        started = time.perf_counter()
        trained = self.store.open(model, version, "trained")
        stage = "quantized" if (self.store.path(model, version, "quantized")).exists() else "trained"
        candidate_art = self.store.open(model, version, stage) if stage == "quantized" else trained
        family = FAMILIES.get(trained.family)
        fp32, candidate = family.load(trained), family.load(candidate_art)
        heldout = trained.json("heldout.json")
        label = heldout.get("label", "is_fraud")
        val = heldout["validation"]
        y = np.array([int(r[label]) for r in val], dtype=np.int64)
        if family.name == "text":
            figures, guard = self._text(candidate, val, y)
        else:
            figures, guard = self._tabular(fp32, candidate, val, y, heldout["train_sample"])
        figures["membership"] = self._membership(candidate, heldout, label)
        figures["membership_auc"] = figures["membership"]["auc"]
        personal = bool(trained.card.get("personal_data", True))
        figures["personal_data"] = personal
        figures["privacy"] = trained.card.get("privacy", {"mechanism": "none"})
        passed, reasons = self._decide(figures, personal=personal)
        report = {"model": model, "version": version, "candidate_stage": stage, "family": family.name,
                  "policy": self.policy.model_dump(), "figures": figures, "passed": passed, "reasons": reasons,
                  "evaluated": len(val), "seconds": round(time.perf_counter() - started, 2),
                  "candidate_digest": sha256(canonical(candidate_art.manifest))}
        path, digest = self._sign(trained, report, guard)
        return GateResult(passed, reasons, report, path, digest)

    # ------------------------------------------------------------------ families
    def _tabular(self, fp32: LoadedModel, cand: LoadedModel, val: list[dict[str, Any]], y: np.ndarray,
                 train_sample: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
        a = self.policy.attack
        spec = fp32.spec
        x = spec.encode(val)
        mask = _numeric_mask(fp32)
        clean = _forward(cand.module, x)
        fgsm = FGSMAttack(fp32.module).perturb(x, y, epsilon=a.epsilon, mask=mask)
        pgd = PGDAttack(fp32.module).perturb(x, y, epsilon=a.epsilon, mask=mask, steps=a.pgd_steps,
                                              step_size=a.pgd_step_size)
        noisy = GaussianNoise(a.seed).perturb(x, sigma=a.noise_sigma, mask=mask)
        reference = spec.encode(train_sample).mean(axis=0)
        missing = MissingFeatures(a.seed).perturb(x, share=a.missing_share, slices=list(spec.slices().values()),
                                                  reference=reference)
        figures = {
            "clean_accuracy": _accuracy(clean, y), "auroc": auroc(y, _probs(clean)),
            "ece": expected_calibration_error(y, _probs(clean)),
            "fgsm_accuracy": _accuracy(_forward(cand.module, fgsm), y),
            "pgd_accuracy": _accuracy(_forward(cand.module, pgd), y),
            "noise_accuracy": _accuracy(_forward(cand.module, noisy), y),
            "missing_accuracy": _accuracy(_forward(cand.module, missing), y),
            "epsilon": a.epsilon, "attacks_crafted_on": "fp32 weights of this version (white-box)",
        }
        # The online guard's data, from the served form's own hidden layer.
        space = gaussian_stats(_hidden(cand.module, spec.encode(train_sample)))
        hidden_space = HiddenSpace.from_profile(space)
        integer_fields = sorted(n for n, f in (fp32.artifact.json("profile.json").get("fields") or {}).items()
                                if f.get("integer"))
        # An adversarial input reaches the front door as raw values: decode what the attacker would send.
        c_clean = constraint_features(spec.decode_numeric(x), integer_fields, len(x))
        c_adv = constraint_features(spec.decode_numeric(pgd), integer_fields, len(x))
        h_clean, h_adv, z_adv = _hidden(cand.module, x), _hidden(cand.module, pgd), _forward(cand.module, pgd)
        half = len(x) // 2
        truth = np.concatenate([np.zeros(len(x) - half), np.ones(len(x) - half)])
        for name, with_constraints in (("detector_auroc_pgd_learned_only", False), ("detector_auroc_pgd", True)):
            f_clean = detector_features(h_clean, clean, hidden_space, c_clean if with_constraints else None)
            f_adv = detector_features(h_adv, z_adv, hidden_space, c_adv if with_constraints else None)
            fitted = AdversarialDetector.fit(f_clean[:half], f_adv[:half])
            figures[name] = auroc(truth, np.concatenate([fitted.score(f_clean[half:]), fitted.score(f_adv[half:])]))
        figures["ood_p99_clean"] = float(np.quantile(hidden_space.distance(h_clean), 0.99))
        # The shipped detector is refit on every example, now that its held-out AUROC is measured.
        detector = AdversarialDetector.fit(f_clean, f_adv)
        return figures, {"hidden_space": space, "detector": detector.to_dict(), "integer_fields": integer_fields}

    def _text(self, cand: LoadedModel, val: list[dict[str, Any]], y: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        a = self.policy.attack
        field = cand.spec["text_field"]
        texts = [r[field] for r in val]
        clean = cand.logits([{field: t} for t in texts])
        perturbed_texts = TextPerturbation(a.seed).perturb(texts, rate=a.text_edit_rate)
        perturbed = cand.logits([{field: t} for t in perturbed_texts])
        figures = {"clean_accuracy": _accuracy(clean, y), "auroc": auroc(y, _probs(clean)),
                   "ece": expected_calibration_error(y, _probs(clean)),
                   "text_perturbed_accuracy": _accuracy(perturbed, y), "text_edit_rate": a.text_edit_rate}
        return figures, {}

    def _membership(self, cand: LoadedModel, heldout: dict[str, Any], label: str) -> dict[str, Any]:
        """Training members (the sample sealed in the artifact) against held-out non-members, on the served
        form: what an attacker with query access to the deployed model would see."""
        members, nonmembers = heldout["train_sample"], heldout["validation"]
        y_in = np.array([int(r[label]) for r in members], dtype=np.int64)
        y_out = np.array([int(r[label]) for r in nonmembers], dtype=np.int64)
        if cand.family.name == "text":
            field = cand.spec["text_field"]
            return membership_audit(lambda rs: cand.logits([{field: r[field]} for r in rs]), members, y_in,
                                    nonmembers, y_out, seed=self.policy.attack.seed, art=False)
        spec = cand.spec
        return membership_audit(lambda x: _forward(cand.module, x), spec.encode(members), y_in,
                                spec.encode(nonmembers), y_out, seed=self.policy.attack.seed)

    # ------------------------------------------------------------------ decision and signature
    def _decide(self, f: dict[str, Any], *, personal: bool = True) -> tuple[bool, list[str]]:
        g = self.policy.gate
        checks = [("clean_accuracy", g.min_clean_accuracy, "clean accuracy"),
                  ("fgsm_accuracy", g.min_fgsm_accuracy, f"accuracy under FGSM (epsilon {self.policy.attack.epsilon})"),
                  ("pgd_accuracy", g.min_pgd_accuracy, f"accuracy under PGD (epsilon {self.policy.attack.epsilon})"),
                  ("noise_accuracy", g.min_noise_accuracy, "accuracy under noise"),
                  ("missing_accuracy", g.min_missing_accuracy, "accuracy with missing features"),
                  ("text_perturbed_accuracy", g.min_text_perturbed_accuracy, "accuracy under text perturbations")]
        reasons = []
        for key, limit, words in checks:
            if key in f and f[key] < limit:
                reasons.append(f"{words} is {f[key]:.3f}, below the policy's {limit:.3f}")
        if f.get("ece", 0.0) > g.max_ece:
            reasons.append(f"calibration error (ECE) is {f['ece']:.3f}, above the policy's {g.max_ece:.3f}")
        auc = f.get("membership_auc")
        if personal and g.max_membership_auc is not None and auc is not None and auc > g.max_membership_auc:
            m = f["membership"]
            reasons.append(f"membership-inference attack AUC is {auc:.3f} ({m['strongest']}, {m['records_per_side']} "
                           f"members against as many non-members), above the policy's {g.max_membership_auc:.3f} "
                           "for a model trained on personal data")
        if not reasons:
            reasons.append("holds every threshold of the policy")
            return True, reasons
        return False, reasons

    def _sign(self, trained: Artifact, report: dict[str, Any], guard: dict[str, Any]) -> tuple[str, str]:
        w = ArtifactWriter(trained.model, trained.version, "gate", trained.family, card={"gate": {
            "passed": report["passed"], "reasons": report["reasons"], "figures": report["figures"]}})
        w.add_json("report.json", report)
        w.add_json("guard.json", guard)
        path = self.store.publish(w)
        return str(path), sha256(canonical(self.store.verify(trained.model, trained.version, "gate")))
