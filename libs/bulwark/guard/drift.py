"""Drift: does live traffic still look like the training data? Population stability index per feature.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over the training deciles (numbers) or categories, with e the
training shares (from the version's profile) and a the window's shares; a small floor keeps empty bins
finite. Common reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

_FLOOR = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two share vectors."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), _FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), _FLOOR)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(field: dict[str, Any], values: Iterable[Any]) -> float | None:
    """PSI of one field's window values against its training profile entry (None: no usable values)."""
    vals = list(values)
    if not vals:
        return None
    if field["kind"] == "numeric":
        edges = np.asarray(field["edges"], dtype=np.float64)
        if len(edges) < 2:
            return None
        x = np.asarray([float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)])
        if not len(x):
            return None
        # Values beyond the training range fall into the outer bins, as they would be counted in production.
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        actual = np.bincount(idx, minlength=len(edges) - 1) / len(x)
        return psi(np.asarray(field["shares"]), actual)
    shares = field["shares"]
    cats = list(shares) + ["<other>"]
    counts = dict.fromkeys(cats, 0)
    for v in vals:
        key = str(v)
        counts[key if key in shares else "<other>"] += 1
    expected = np.asarray([shares.get(c, 0.0) for c in cats])
    actual = np.asarray([counts[c] for c in cats], dtype=np.float64) / len(vals)
    return psi(expected, actual)


def window_psi(profile_fields: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, float]:
    """PSI per profiled field over one window of records."""
    out = {}
    for name, field in profile_fields.items():
        value = feature_psi(field, (r[name] for r in records if name in r))
        if value is not None:
            out[name] = value
    return out
