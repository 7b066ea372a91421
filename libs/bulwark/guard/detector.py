"""Scores for the online guard: out-of-distribution distance in the model's hidden space, and a detector
of adversarial inputs trained on the gate's own attacks.

OOD: the Mahalanobis distance of the hidden activations to the training distribution (Lee et al., 2018,
"A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks"), divided by
the training data's 99th-percentile distance, so 1.0 means "as far out as the farthest 1% of training data".

Adversarial: a logistic regression over the hidden activations, the normalized distance, the logit margin
and domain-constraint violations (fractional values where training only had whole numbers), trained on clean
held-out inputs against the gate's PGD versions of them (a detector trained on the attack, as Metzen et al.,
2017, "On Detecting Adversarial Perturbations"); its output is the probability that an input was crafted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class HiddenSpace:
    """Mean, precision matrix and the training 99th-percentile distance of the hidden activations."""

    mean: np.ndarray
    precision: np.ndarray
    p99: float

    @classmethod
    def from_profile(cls, stats: dict[str, Any]) -> HiddenSpace:
        """From the trainer's profile.json `hidden_space` entry."""
        return cls(np.asarray(stats["mean"]), np.asarray(stats["precision"]), float(stats["distance_quantiles"]["p99"]))

    def distance(self, h: np.ndarray) -> np.ndarray:
        """Normalized Mahalanobis distance of each row (1.0 = the training 99th percentile)."""
        c = np.asarray(h, dtype=np.float64) - self.mean
        d = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", c, self.precision, c), 0))
        return d / max(self.p99, 1e-9)


def constraint_features(raw: dict[str, np.ndarray], integer_fields: list[str], n: int) -> np.ndarray:
    """Domain-constraint violations per row: for each field that was always a whole number in training, how
    far the value is from one. Attacks that work in the model's continuous input space leave such traces
    (Simonetto et al., 2022, on constrained feature spaces); a careful attacker must round, and pay for it."""
    cols = [np.abs(np.asarray(raw[f], dtype=np.float64) - np.round(raw[f])) for f in integer_fields if f in raw]
    return np.column_stack(cols) if cols else np.zeros((n, 0))


def detector_features(hidden: np.ndarray, logits: np.ndarray, space: HiddenSpace,
                      constraints: np.ndarray | None = None) -> np.ndarray:
    """The detector's inputs: hidden activations, normalized distance, logit margin, top probability, and
    the domain-constraint violations when given."""
    z = np.asarray(logits, dtype=np.float64)
    margin = np.abs(z[:, 1] - z[:, 0])
    p = 1 / (1 + np.exp(-margin))
    cols = [np.asarray(hidden, dtype=np.float64), space.distance(hidden), margin, p]
    if constraints is not None and constraints.shape[1]:
        cols.append(constraints)
    return np.column_stack(cols)


@dataclass
class AdversarialDetector:
    """Logistic regression over standardized detector features."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def score(self, features: np.ndarray) -> np.ndarray:
        """Probability that each row is adversarial."""
        z = ((features - self.mean) / self.std) @ self.weights + self.bias
        return 1 / (1 + np.exp(-np.clip(z, -40, 40)))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in the signed gate report)."""
        return {"weights": self.weights.tolist(), "bias": self.bias, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AdversarialDetector:
        """Inverse of `to_dict`."""
        return cls(np.asarray(doc["weights"]), float(doc["bias"]), np.asarray(doc["mean"]), np.asarray(doc["std"]))

    @classmethod
    def fit(cls, clean: np.ndarray, adversarial: np.ndarray, *, l2: float = 1e-2, iterations: int = 30) -> AdversarialDetector:
        """Fit by Newton's method (iteratively reweighted least squares) with an L2 penalty."""
        x = np.vstack([clean, adversarial])
        y = np.concatenate([np.zeros(len(clean)), np.ones(len(adversarial))])
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        xs = np.column_stack([(x - mean) / std, np.ones(len(x))])
        w = np.zeros(xs.shape[1])
        reg = np.eye(xs.shape[1]) * l2
        reg[-1, -1] = 0.0  # the bias is not penalized
        for _ in range(iterations):
            p = 1 / (1 + np.exp(-np.clip(xs @ w, -40, 40)))
            grad = xs.T @ (p - y) + reg @ w
            hess = (xs * (p * (1 - p))[:, None]).T @ xs + reg
            step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(w[:-1], float(w[-1]), mean, std)
