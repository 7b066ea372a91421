"""Membership-inference attacks on models whose exposure is known: a lookup table, and a constant."""

from __future__ import annotations

import numpy as np

from bulwark.guard.membership import LossThresholdAttack, membership_audit


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 2, n)


def test_membership_audit_memorizing_model_is_exposed_by_every_attack() -> None:
    x_in, y_in = _data(400, 1)
    x_out, y_out = _data(400, 2)
    table = {x.tobytes(): y for x, y in zip(x_in, y_in)}

    def memorizer(x: np.ndarray) -> np.ndarray:
        # Confident and right on the records it saw, a coin flip elsewhere (labels are random).
        z = np.zeros((len(x), 2), dtype=np.float32)
        for i, row in enumerate(x):
            if row.tobytes() in table:
                z[i, table[row.tobytes()]] = 8.0
        return z

    audit = membership_audit(memorizer, x_in, y_in, x_out, y_out)
    assert audit["auc"] > 0.95
    assert audit["attacks"]["loss_threshold"] > 0.95 and audit["attacks"]["confidence_threshold"] > 0.95
    assert audit["attacks"]["art_black_box"] > 0.9


def test_membership_audit_model_that_ignores_its_input_is_at_chance() -> None:
    x_in, y_in = _data(400, 3)
    x_out, y_out = _data(400, 4)
    audit = membership_audit(lambda x: np.tile([0.2, -0.1], (len(x), 1)), x_in, y_in, x_out, y_out)
    assert 0.4 < audit["attacks"]["loss_threshold"] < 0.6 and audit["attacks"]["confidence_threshold"] == 0.5


def test_loss_threshold_attack_scores_lower_loss_as_more_likely_member() -> None:
    logits = np.array([[4.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    scores = LossThresholdAttack(lambda x: logits).infer(None, np.array([0, 0]))
    assert scores[0] > scores[1]
