"""Trainer data checks and feature encoding: each bad input names its problem."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bulwark.errors import InvalidArgumentError
from bulwark.features import REFERENCE_FEATURES, FeatureSpec, stable_bucket
from bulwark.reference import ReferenceGenerator
from services.trainer.dataset import Dataset, DatasetError, check_dataset, in_validation

FIELDS = [f["name"] for f in REFERENCE_FEATURES]
NUMERIC = [f["name"] for f in REFERENCE_FEATURES if f["kind"] == "numeric"]


def _ds(n: int = 400, **mutate) -> Dataset:
    rs = [e.payload for e in ReferenceGenerator(seed=1, labeled_fraction=1.0).events(n)]
    for i, r in enumerate(rs):
        for k, fn in mutate.items():
            fn(i, r)
    train, val = rs[: n * 4 // 5], rs[n * 4 // 5:]
    y = lambda part: np.array([int(r["is_fraud"]) for r in part])  # noqa: E731
    return Dataset(train, val, y(train), y(val), set(), {"used": n})


def test_check_passes_on_good_data() -> None:
    check_dataset(_ds(), min_labeled=100, fields=FIELDS, numeric=NUMERIC)


@pytest.mark.parametrize(
    ("mutate", "kind", "fragment"),
    [
        ({}, "training.too_few_labels", "at least 1000"),
        ({"label": lambda i, r: r.update(is_fraud=False)}, "training.single_class", "single class"),
        ({"drop": lambda i, r: r.pop("txn_count_24h")}, "training.feature_missing", "txn_count_24h"),
        ({"nan": lambda i, r: r.update(amount=math.nan) if i % 50 == 0 else None}, "training.non_finite", "amount"),
        ({"inf": lambda i, r: r.update(distance_from_home_km=math.inf) if i == 3 else None}, "training.non_finite",
         "distance_from_home_km"),
    ],
)
def test_check_rejects_bad_data_with_kind_and_evidence(mutate, kind: str, fragment: str) -> None:
    with pytest.raises(DatasetError) as info:
        check_dataset(_ds(**mutate), min_labeled=1000 if kind.endswith("labels") else 100, fields=FIELDS,
                      numeric=NUMERIC)
    assert info.value.kind == kind and fragment in info.value.message and info.value.evidence


def test_validation_split_is_stable_and_near_its_share() -> None:
    ids = [f"id-{i}" for i in range(20000)]
    first = [in_validation(i, 0.2) for i in ids]
    assert first == [in_validation(i, 0.2) for i in ids]
    assert 0.18 < np.mean(first) < 0.22


def test_feature_spec_encodes_and_validates_naming_the_field() -> None:
    rs = [e.payload for e in ReferenceGenerator(seed=2).events(500)]
    spec = FeatureSpec.fit(rs, REFERENCE_FEATURES + [{"name": "customer_id", "kind": "hashed", "buckets": 8}])
    x = spec.encode(rs)
    assert x.shape == (500, spec.width) and np.isfinite(x).all()
    assert abs(x[:, spec.slices()["amount"]].mean()) < 1e-5  # standardized
    assert (x[:, spec.slices()["customer_id"]].sum(axis=1) == 1).all()  # one bucket per record
    assert FeatureSpec.from_dict(spec.to_dict()).encode(rs[:5]).tolist() == x[:5].tolist()
    assert stable_bucket("tok_abc", 8) == stable_bucket("tok_abc", 8)
    for bad, fragment in [({**rs[0], "amount": "12"}, "features.amount: expected a number"),
                          ({**rs[0], "amount": math.inf}, "must be finite"),
                          ({k: v for k, v in rs[0].items() if k != "country"}, "features.country: missing"),
                          ({**rs[0], "device_new": 1}, "expected a flag")]:
        with pytest.raises(InvalidArgumentError, match=fragment):
            spec.validate(bad)
