"""Data profiles: what the training data looked like, shipped with each model version (trainer), and the

It holds, per field, the ranges and distributions the training data had (for schema and range checks and
for drift: decile edges and category shares, the population-stability baseline), and, in the model's input
space and its hidden space, the mean and the (shrunk) inverse covariance with the training distribution of
Mahalanobis distances (for out-of-distribution scores and their thresholds).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def gaussian_stats(z: np.ndarray, shrinkage: float = 0.05) -> dict[str, Any]:
    """Mean, Ledoit-Wolf-style shrunk precision matrix, and quantiles of the training Mahalanobis distances."""
    z = np.asarray(z, dtype=np.float64)
    mean = z.mean(axis=0)
    centered = z - mean
    cov = centered.T @ centered / max(len(z) - 1, 1)
    # Shrink toward the scaled identity: one-hot columns make the raw covariance singular.
    target = np.eye(cov.shape[0]) * (np.trace(cov) / cov.shape[0] or 1.0)
    precision = np.linalg.pinv((1 - shrinkage) * cov + shrinkage * target)
    d = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centered, precision, centered), 0))
    q = np.quantile(d, [0.5, 0.9, 0.95, 0.99, 0.999])
    return {"mean": mean.tolist(), "precision": precision.tolist(),
            "distance_quantiles": dict(zip(["p50", "p90", "p95", "p99", "p999"], map(float, q)))}


def field_profile(records: list[dict[str, Any]], fields: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field ranges and distributions (decile edges and shares for numbers, shares for categories)."""
    out: dict[str, Any] = {}
    for f in fields:
        name, kind = f["name"], f["kind"]
        values = [r[name] for r in records if name in r]
        if kind == "numeric":
            x = np.array(values, dtype=np.float64)
            edges = np.unique(np.quantile(x, np.linspace(0, 1, 11)))
            counts = np.histogram(x, bins=edges)[0] if len(edges) > 1 else np.array([len(x)])
            out[name] = {"kind": kind, "integer": bool(np.all(x == np.round(x))),
                         "min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()),
                         "std": float(x.std()), "q01": float(np.quantile(x, 0.01)), "q99": float(np.quantile(x, 0.99)),
                         "edges": edges.tolist(), "shares": (counts / max(counts.sum(), 1)).tolist()}
        else:
            shares: dict[str, float] = {}
            for v in values:
                shares[str(v)] = shares.get(str(v), 0) + 1
            out[name] = {"kind": kind, "shares": {k: c / len(values) for k, c in sorted(shares.items())}}
    return out


def build_profile(records: list[dict[str, Any]], fields: list[dict[str, Any]], inputs: np.ndarray,
                  hidden: np.ndarray | None) -> dict[str, Any]:
    """The whole profile: fields, input space, hidden space."""
    return {"fields": field_profile(records, fields), "input_space": gaussian_stats(inputs),
            "hidden_space": gaussian_stats(hidden) if hidden is not None else None, "n": len(records)}
