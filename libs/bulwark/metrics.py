"""Classification metrics shared by the trainer, the quantizer and the gate (numpy, no extra dependency).

All take `y` (0/1 labels) and `p` (probability of the positive class).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """Share of predictions (p >= threshold) equal to the label."""
    return float(np.mean((p >= threshold).astype(int) == y))


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve: the probability a random positive scores above a random negative
    (Mann-Whitney U with average ranks for ties)."""
    y = np.asarray(y).astype(int)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = np.asarray(p)[order]
    # Average ranks over ties, so equal scores count half.
    i = 0
    while i < len(sorted_p):
        j = i
        while j + 1 < len(sorted_p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def f1(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """F1 score of the positive class."""
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE: the bin-size-weighted mean |accuracy - confidence| over equal-width confidence bins
    (Guo et al., 2017), on the predicted class's probability."""
    conf = np.maximum(p, 1 - p)
    pred = (p >= 0.5).astype(int)
    edges = np.linspace(0.5, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi) if lo > 0.5 else (conf >= lo) & (conf <= hi)
        if mask.any():
            total += mask.mean() * abs(float((pred[mask] == y[mask]).mean()) - float(conf[mask].mean()))
    return float(total)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probability (Brier score)."""
    return float(np.mean((p - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Binary cross-entropy."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def classification_report(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Every metric at once, plus counts."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    return {
        "accuracy": accuracy(y, p), "auroc": auroc(y, p), "f1": f1(y, p),
        "ece": expected_calibration_error(y, p), "brier": brier(y, p), "log_loss": log_loss(y, p),
        "n": int(len(y)), "positives": int(y.sum()),
    }
