"""Membership inference: can an attacker tell the records a model trained on from records it never saw?

Each attack takes the model (a function from inputs to class logits) in its constructor and answers
`infer(x, y)` with a membership score per record (higher = more likely a training member). The gate scores
training members against held-out non-members and reports the attack's AUC: 0.5 means the attacker
cannot tell them apart, 1.0 means every member is exposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bulwark.metrics import auroc

Logits = Callable[[Any], np.ndarray]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass
class LossThresholdAttack:
    """Loss-threshold attack (Yeom et al., "Privacy Risk in Machine Learning", CSF 2018): score(x, y) =
    -CE(f(x), y) = log softmax(f(x))_y. A model that memorized its training set has a lower loss on members;
    the AUC sweeps every threshold, so no threshold has to be chosen."""

    model: Logits
    name: str = "loss_threshold"

    def infer(self, x: Any, y: np.ndarray) -> np.ndarray:
        """Membership scores for records `x` with labels `y`."""
        return _log_softmax(self.model(x))[np.arange(len(y)), y]


@dataclass
class ConfidenceThresholdAttack:
    """Confidence-threshold attack (Salem et al., "ML-Leaks", NDSS 2019): score(x) = max_c softmax(f(x))_c,
    which needs no label: a model is typically more confident on the records it trained on."""

    model: Logits
    name: str = "confidence_threshold"

    def infer(self, x: Any, y: np.ndarray) -> np.ndarray:
        """Membership scores for records `x` (labels unused)."""
        return np.exp(_log_softmax(self.model(x))).max(axis=1)


@dataclass
class ARTBlackBoxMembershipAttack:
    """ART's black-box membership inference (`MembershipInferenceBlackBox`, Shokri et al., S&P 2017 in the
    form of a single attack model): a random forest learns membership from the model's output
    probabilities and the true label, fitted on one half of known members and non-members. `fit` first,
    then `infer` on records it was not fitted on. Needs array inputs (the tabular family)."""

    model: Logits
    classes: int = 2
    attack_model: str = "rf"
    name: str = "art_black_box"

    def __post_init__(self) -> None:
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from art.estimators.classification import BlackBoxClassifier

        def predict(x: np.ndarray) -> np.ndarray:
            return np.exp(_log_softmax(self.model(x.astype(np.float32))))

        self._estimator = BlackBoxClassifier(predict, input_shape=None, nb_classes=self.classes)
        self._attack = MembershipInferenceBlackBox(self._estimator, input_type="prediction",
                                                   attack_model_type=self.attack_model)

    def fit(self, x_members: np.ndarray, y_members: np.ndarray, x_out: np.ndarray, y_out: np.ndarray) -> None:
        """Train the attack model on known members and non-members."""
        onehot = np.eye(self.classes, dtype=np.float32)
        self._attack.fit(x_members, onehot[y_members], x_out, onehot[y_out])

    def infer(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Membership probabilities for records the attack model was not fitted on."""
        onehot = np.eye(self.classes, dtype=np.float32)
        return np.asarray(self._attack.infer(x, onehot[y], probabilities=True)).reshape(len(y), -1)[:, -1]


def _take(x: Any, idx: np.ndarray) -> Any:
    return x[idx] if isinstance(x, np.ndarray) else [x[i] for i in idx]


def membership_audit(model: Logits, members: Any, y_members: np.ndarray, nonmembers: Any, y_nonmembers: np.ndarray,
                     *, seed: int = 7, art: bool = True, max_records: int = 2000) -> dict[str, Any]:
    """Every attack's AUC on a balanced sample of members and non-members, and the strongest.

    The threshold attacks score the whole sample; ART's attack fits on one half and is scored on the other
    (its AUC on records it was fitted on would measure the attack model, not the victim)."""
    rng = np.random.default_rng(seed)
    n = min(len(y_members), len(y_nonmembers), max_records)
    if n < 20:
        return {"records_per_side": n, "auc": None, "why": "too few held-out members or non-members"}
    i_in = np.sort(rng.choice(len(y_members), n, replace=False))
    i_out = np.sort(rng.choice(len(y_nonmembers), n, replace=False))
    x_in, y_in, x_out, y_out = _take(members, i_in), y_members[i_in], _take(nonmembers, i_out), y_nonmembers[i_out]
    truth = np.concatenate([np.ones(n), np.zeros(n)])
    aucs: dict[str, float] = {}
    for attack in (LossThresholdAttack(model), ConfidenceThresholdAttack(model)):
        scores = np.concatenate([attack.infer(x_in, y_in), attack.infer(x_out, y_out)])
        aucs[attack.name] = round(auroc(truth, scores), 4)
    if art and isinstance(members, np.ndarray):
        half = n // 2
        attack = ARTBlackBoxMembershipAttack(model)
        attack.fit(x_in[:half], y_in[:half], x_out[:half], y_out[:half])
        scores = np.concatenate([attack.infer(x_in[half:], y_in[half:]), attack.infer(x_out[half:], y_out[half:])])
        aucs[attack.name] = round(auroc(np.concatenate([np.ones(n - half), np.zeros(n - half)]), scores), 4)
    strongest = max(aucs, key=lambda k: aucs[k])
    return {"records_per_side": n, "auc": aucs[strongest], "strongest": strongest, "attacks": aucs}

