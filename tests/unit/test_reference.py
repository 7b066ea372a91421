"""The reference data: valid personal values, determinism, and the ground truth."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bulwark.events import EventTypeRegistry
from bulwark.reference import (
    INFLUENTIAL,
    PIIFactory,
    ReferenceGenerator,
    cn_id_check_char,
    iban_check_digits,
    luhn_valid,
    truth_contributions,
    truth_logit,
)


def test_same_seed_same_events() -> None:
    a = [e.to_dict() for e in ReferenceGenerator(seed=11).events(20)]
    b = [e.to_dict() for e in ReferenceGenerator(seed=11).events(20)]
    for x, y in zip(a, b):
        x.pop("time"), y.pop("time")
    assert a == b


def test_events_validate_against_the_published_schema() -> None:
    reg = EventTypeRegistry.default()
    for e in ReferenceGenerator(seed=3).events(200):
        reg.validate_payload(e.type, e.schema_version, e.payload)
        assert e.subject == e.payload["customer_id"]


@pytest.mark.parametrize("seed", range(5))
def test_generated_personal_values_are_valid(seed: int) -> None:
    f = PIIFactory(np.random.default_rng(seed))
    for _ in range(50):
        assert luhn_valid(f.card_number())
        nid = f.national_id()
        if len(nid) == 18:
            assert cn_id_check_char(nid[:17]) == nid[17]
        else:
            assert len(nid) == 15 and nid.isdigit()
        iban = f.iban().replace(" ", "")
        assert iban[2:4] == iban_check_digits(iban[:2], iban[4:])
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", f.email())


def test_known_check_digits() -> None:
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")
    assert cn_id_check_char("11010519491231002") == "X"  # the standard's worked example
    assert iban_check_digits("DE", "370400440532013000") == "89"  # DE89 3704 0044 0532 0130 00


def test_truth_depends_only_on_the_influential_fields() -> None:
    p = next(ReferenceGenerator(seed=5).events(1)).payload
    q = dict(p, merchant_category="travel", hour_of_day=(p["hour_of_day"] + 5) % 24, device_new=not p["device_new"])
    assert truth_logit(p) == truth_logit(q)
    base = dict(p, amount=10.0, distance_from_home_km=1.0, account_age_days=1000)
    contrib = truth_contributions(p, base)
    assert set(contrib) == set(INFLUENTIAL)
    assert sum(contrib.values()) == pytest.approx(truth_logit(p) - truth_logit(base))


def test_label_rate_and_bayes_bound_are_as_documented() -> None:
    from bulwark.reference import bayes_accuracy

    labels = [e.payload["is_fraud"] for e in ReferenceGenerator(seed=2, labeled_fraction=1.0).events(4000)]
    assert 0.12 < np.mean(labels) < 0.28
    assert 0.85 < bayes_accuracy(20_000) < 0.95
