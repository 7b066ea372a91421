"""The extraction defence's pure parts: the coverage grid tells real traffic from a sweep, boundary and
hardening arithmetic, and the policy section."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from bulwark.guard.extraction import cell_ids, harden, near_boundary
from bulwark.guard.policy import load_guard_policy
from bulwark.profiles import field_profile
from bulwark.reference import CATEGORICAL_FIELDS, FLAG_FIELDS, NUMERIC_FIELDS, ReferenceGenerator

_SPEC = [{"name": n, "kind": "numeric"} for n in NUMERIC_FIELDS] + [
    {"name": n, "kind": "categorical"} for n in CATEGORICAL_FIELDS + FLAG_FIELDS]
PROFILE = field_profile([e.payload for e in ReferenceGenerator(seed=1).events(3000)], _SPEC)


def sweep(n: int, seed: int = 0) -> list[dict]:
    """What an attacker without data sends: uniform over every numeric field's range."""
    rng = random.Random(seed)
    return [{f: rng.uniform(PROFILE[f]["min"], PROFILE[f]["max"]) for f in NUMERIC_FIELDS} for _ in range(n)]


def test_cell_ids_real_traffic_covers_few_cells_and_a_sweep_covers_nearly_one_per_query() -> None:
    real = [e.payload for e in ReferenceGenerator(seed=99).events(500)]
    real_cells, sweep_cells = len(set(cell_ids(real, PROFILE, 4))), len(set(cell_ids(sweep(500), PROFILE, 4)))
    assert real_cells < 150 <= sweep_cells  # the default coverage_cells sits between them
    assert sweep_cells / 500 > 0.5 > real_cells / 500


def test_cell_ids_are_stable_and_ignore_categories_and_odd_values() -> None:
    r = dict(next(ReferenceGenerator(seed=2).events(1)).payload)
    assert cell_ids([r], PROFILE, 4) == cell_ids([dict(r, country="CN", currency="USD")], PROFILE, 4)
    assert cell_ids([dict(r, amount=PROFILE["amount"]["max"] * 50)], PROFILE, 4) != cell_ids([r], PROFILE, 4)
    assert len(cell_ids([dict(r, amount=float("nan")), dict(r, amount="x"), {}], PROFILE, 4)) == 3  # never raises


def test_near_boundary_marks_rows_whose_top_two_probabilities_are_close() -> None:
    assert near_boundary(np.array([[0.55, 0.45], [0.9, 0.1]]), 0.2).tolist() == [True, False]
    assert near_boundary(np.array([[0.4, 0.35, 0.25], [0.7, 0.2, 0.1]]), 0.2).tolist() == [True, False]


@pytest.mark.parametrize(("mode", "expected"), [
    ("full", [0.123456, 0.876544]),
    ("rounded", [0.1, 0.9]),  # one decimal
    ("label", [0.0, 1.0]),  # one-hot: the label and nothing more
])
def test_harden_modes(mode: str, expected: list[float]) -> None:
    assert harden([0.123456, 0.876544], mode, 1) == expected


def test_policy_extraction_section_reads_from_yaml_and_rejects_unknown_modes(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("extraction:\n  budget: 500\n  output: label\n")
    policy = load_guard_policy(path).extraction
    assert policy.budget == 500 and policy.output == "label" and policy.enabled
    path.write_text("extraction:\n  output: fuzzy\n")
    with pytest.raises(Exception, match="extraction.output"):
        load_guard_policy(path)


def test_cell_counts_are_asked_for_once_judging_starts_then_every_second_or_five_percent() -> None:
    from bulwark.guard.extraction import _CellCounts

    c = _CellCounts()
    assert not c.due("a", 1, 200, now=0.0)  # never seen: nothing says it is near judging
    assert c.update("a", 150, -1, now=0.0) == 0
    assert not c.due("a", 1, 200, now=0.0)  # 151 < 200: its cells would go unread
    c.update("a", 199, -1, now=0.0)
    assert c.due("a", 1, 200, now=0.0)  # this query makes 200
    assert c.update("a", 200, 180, now=0.0) == 180
    assert not c.due("a", 1, 200, now=0.5)  # counted at 200 queries half a second ago
    assert c.update("a", 205, -1, now=0.5) == 180  # judged by the last count
    assert c.due("a", 1, 200, now=1.0)  # a second later
    c.update("a", 210, 190, now=1.0)
    c.update("a", 221, -1, now=1.1)
    assert c.due("a", 1, 200, now=1.1)  # 11 more queries is past 5% of 210
    assert not c.due("b", 1, 200, now=1.1)  # clients are apart
