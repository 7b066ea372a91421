"""From clean events to model inputs: one feature specification, fitted on training data, shipped in the
artifact, and applied identically by the trainer, the inference front door, the explainer and the guard.

Feature kinds (by clean-event field name, never a personal value):
- `numeric`: a number, optionally `log1p`-transformed, then standardized with the training mean and std;
- `flag`: a boolean as 0/1;
- `categorical`: one-hot over the training vocabulary, plus an "other" column for unseen values;
- `hashed`: a pseudonymous token (e.g. a customer token) into `buckets` one-hot columns by a stable hash,
  usable as a categorical id without a vocabulary.

`validate()` names the field and the expected form for a missing field, a wrong type, or a NaN/infinite
number; it never echoes the value.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from bulwark.errors import InvalidArgumentError

Kind = Literal["numeric", "flag", "categorical", "hashed"]


@dataclass
class Feature:
    """One input field and how it becomes columns."""

    name: str
    kind: Kind
    transform: Literal["identity", "log1p"] = "identity"
    mean: float = 0.0
    std: float = 1.0
    vocab: list[str] = field(default_factory=list)
    buckets: int = 16
    low: float | None = None
    high: float | None = None

    @property
    def width(self) -> int:
        """How many columns the feature takes."""
        if self.kind == "categorical":
            return len(self.vocab) + 1
        if self.kind == "hashed":
            return self.buckets
        return 1


@dataclass
class FeatureSpec:
    """The ordered features of a model and their fitted statistics."""

    features: list[Feature]
    label: str | None = "is_fraud"

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, records: Sequence[dict[str, Any]], config: Iterable[dict[str, Any]], *,
            label: str | None = "is_fraud", max_vocab: int = 32) -> FeatureSpec:
        """Fit statistics (mean/std, vocabularies, ranges) on training records."""
        features = []
        for item in config:
            f = Feature(name=item["name"], kind=item["kind"], transform=item.get("transform", "identity"),
                        buckets=item.get("buckets", 16))
            values = [r[f.name] for r in records if f.name in r]
            if f.kind == "numeric":
                raw = np.array([float(v) for v in values], dtype=np.float64)
                x = _transform(raw, f.transform)
                f.mean, f.std = float(x.mean()), float(x.std() or 1.0)
                f.low, f.high = float(raw.min()), float(raw.max())
            elif f.kind == "categorical":
                counts: dict[str, int] = {}
                for v in values:
                    counts[str(v)] = counts.get(str(v), 0) + 1
                f.vocab = sorted(sorted(counts, key=lambda k: -counts[k])[:max_vocab])
            features.append(f)
        return cls(features, label)

    # ------------------------------------------------------------------ layout
    @property
    def width(self) -> int:
        """Total number of input columns."""
        return sum(f.width for f in self.features)

    @property
    def fields(self) -> list[str]:
        """Input field names, in order."""
        return [f.name for f in self.features]

    def slices(self) -> dict[str, slice]:
        """Each field's columns (to sum attributions back to fields)."""
        out, start = {}, 0
        for f in self.features:
            out[f.name] = slice(start, start + f.width)
            start += f.width
        return out

    def columns(self) -> list[str]:
        """A readable name for every column."""
        names = []
        for f in self.features:
            if f.kind == "categorical":
                names += [f"{f.name}={v}" for v in f.vocab] + [f"{f.name}=<other>"]
            elif f.kind == "hashed":
                names += [f"{f.name}#{i}" for i in range(f.buckets)]
            else:
                names.append(f.name)
        return names

    # ------------------------------------------------------------------ checking and encoding
    def validate(self, record: dict[str, Any]) -> None:
        """Raise `InvalidArgumentError` naming the first missing or malformed field."""
        for f in self.features:
            if f.name not in record or record[f.name] is None:
                raise InvalidArgumentError(f"features.{f.name}: missing; this model needs {', '.join(self.fields)}")
            v = record[f.name]
            if f.kind == "numeric":
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidArgumentError(f"features.{f.name}: expected a number")
                if not math.isfinite(v):
                    raise InvalidArgumentError(f"features.{f.name}: must be finite (not NaN or infinity)")
                if f.transform == "log1p" and v <= -1:
                    raise InvalidArgumentError(f"features.{f.name}: must be greater than -1")
            elif f.kind == "flag" and not isinstance(v, bool):
                raise InvalidArgumentError(f"features.{f.name}: expected a flag (true or false)")
            elif f.kind in ("categorical", "hashed") and not isinstance(v, str):
                raise InvalidArgumentError(f"features.{f.name}: expected a category (a string)")

    def encode(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """Records to a float32 matrix [n, width] (records are assumed valid; see `validate`)."""
        out = np.zeros((len(records), self.width), dtype=np.float32)
        col = 0
        for f in self.features:
            if f.kind == "numeric":
                raw = np.fromiter((float(r[f.name]) for r in records), dtype=np.float64, count=len(records))
                out[:, col] = (_transform(raw, f.transform) - f.mean) / f.std
            elif f.kind == "flag":
                out[:, col] = [1.0 if r[f.name] else 0.0 for r in records]
            elif f.kind == "categorical":
                index = {v: i for i, v in enumerate(f.vocab)}
                other = len(f.vocab)
                for i, r in enumerate(records):
                    out[i, col + index.get(str(r[f.name]), other)] = 1.0
            else:
                for i, r in enumerate(records):
                    out[i, col + stable_bucket(str(r[f.name]), f.buckets)] = 1.0
            col += f.width
        return out

    def decode_numeric(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw values of the numeric features behind encoded rows (the inverse of standardize and log1p):
        what a caller would have to send to produce these inputs."""
        out = {}
        for f in self.features:
            if f.kind == "numeric":
                v = x[:, self.slices()[f.name]][:, 0].astype(np.float64) * f.std + f.mean
                out[f.name] = np.expm1(v) if f.transform == "log1p" else v
        return out

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the artifact as features.json)."""
        return {"label": self.label, "features": [asdict(f) for f in self.features]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureSpec:
        """Inverse of `to_dict`."""
        return cls([Feature(**f) for f in doc["features"]], doc.get("label"))


def _transform(x: np.ndarray, transform: str) -> np.ndarray:
    return np.log1p(np.maximum(x, -0.999999)) if transform == "log1p" else x


def stable_bucket(value: str, buckets: int) -> int:
    """A bucket in [0, buckets) that depends only on the value (the same in every process and release)."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big") % buckets


# The reference use case's tabular features (clean-event field names).
REFERENCE_FEATURES: list[dict[str, Any]] = [
    {"name": "amount", "kind": "numeric", "transform": "log1p"},
    {"name": "avg_amount_30d", "kind": "numeric", "transform": "log1p"},
    {"name": "distance_from_home_km", "kind": "numeric", "transform": "log1p"},
    {"name": "account_age_days", "kind": "numeric", "transform": "log1p"},
    {"name": "txn_count_24h", "kind": "numeric"},
    {"name": "hour_of_day", "kind": "numeric"},
    {"name": "card_present", "kind": "flag"},
    {"name": "device_new", "kind": "flag"},
    {"name": "currency", "kind": "categorical"},
    {"name": "merchant_category", "kind": "categorical"},
    {"name": "country", "kind": "categorical"},
]
