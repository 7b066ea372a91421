"""The guard's library: attacks stay in their budget, the detector and distances behave, PSI reads shifts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bulwark.guard.attacks import FGSMAttack, GaussianNoise, MissingFeatures, PGDAttack, TextPerturbation
from bulwark.guard.detector import AdversarialDetector, HiddenSpace
from bulwark.guard.drift import feature_psi, psi
from bulwark.guard.policy import GuardPolicy, load_guard_policy
from bulwark.metrics import auroc
from bulwark.profiles import gaussian_stats


def _linear(w: list[float]) -> nn.Module:
    m = nn.Linear(len(w), 2)
    with torch.no_grad():
        m.weight[:] = torch.tensor([[0.0] * len(w), w])
        m.bias[:] = 0
    return m


def test_fgsm_and_pgd_stay_within_epsilon_on_masked_columns_only() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = _linear([3.0, 0.5, 0.0, 1.0])
    mask = np.array([1, 1, 0, 1], dtype=np.float32)
    for adv in (FGSMAttack(model).perturb(x, y, epsilon=0.3, mask=mask),
                PGDAttack(model).perturb(x, y, epsilon=0.3, mask=mask, steps=10, step_size=0.05)):
        delta = adv - x
        assert np.abs(delta).max() <= 0.3 + 1e-6
        assert np.all(delta[:, 2] == 0)  # unmasked column untouched
    acc = lambda z: float((model(torch.from_numpy(z)).argmax(1).numpy() == y).mean())  # noqa: E731
    assert acc(PGDAttack(model).perturb(x, y, epsilon=0.3, mask=mask, steps=10, step_size=0.05)) < acc(x)


def test_noise_missing_and_text_perturbations_are_seeded() -> None:
    x = np.ones((5, 3), dtype=np.float32)
    mask = np.array([1, 0, 1], dtype=np.float32)
    a = GaussianNoise(3).perturb(x, sigma=0.5, mask=mask)
    assert np.array_equal(a, GaussianNoise(3).perturb(x, sigma=0.5, mask=mask)) and np.all(a[:, 1] == 1)
    ref = np.zeros(3, dtype=np.float32)
    miss = MissingFeatures(1).perturb(x, share=1.0, slices=[slice(0, 1), slice(1, 3)], reference=ref)
    assert np.all(miss == 0)
    texts = ["urgent wire transfer requested today"] * 3
    out = TextPerturbation(5).perturb(texts, rate=1.0)
    assert out == TextPerturbation(5).perturb(texts, rate=1.0) and out[0] != texts[0]


def test_detector_learns_to_separate_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    # A shift of 1.2 per dimension over 5 dimensions: the Bayes AUROC is Phi(1.2 * sqrt(5) / sqrt(2)) = 0.97.
    clean, adv = rng.normal(0, 1, (400, 5)), rng.normal(1.2, 1, (400, 5))
    det = AdversarialDetector.fit(clean[:200], adv[:200])
    scores = np.concatenate([det.score(clean[200:]), det.score(adv[200:])])
    assert auroc(np.r_[np.zeros(200), np.ones(200)], scores) > 0.93
    again = AdversarialDetector.from_dict(det.to_dict())
    assert np.allclose(again.score(adv[:10]), det.score(adv[:10]))


def test_hidden_distance_is_normalized_to_the_training_99th_percentile() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(size=(5000, 8))
    space = HiddenSpace.from_profile(gaussian_stats(train))
    d = space.distance(train)
    assert 0.95 < np.quantile(d, 0.99) < 1.05
    assert space.distance(np.full((1, 8), 10.0))[0] > 3


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(3)
    base = rng.lognormal(3.6, 1.0, 20000)
    edges = np.unique(np.quantile(base, np.linspace(0, 1, 11)))
    shares = np.histogram(base, bins=edges)[0] / len(base)
    field = {"kind": "numeric", "edges": edges.tolist(), "shares": shares.tolist()}
    assert feature_psi(field, rng.lognormal(3.6, 1.0, 500)) < 0.1
    assert feature_psi(field, rng.lognormal(3.6, 1.0, 500) * 3) > 0.25
    cat = {"kind": "categorical", "shares": {"a": 0.5, "b": 0.5}}
    assert feature_psi(cat, ["a", "b"] * 100) < 0.01 and feature_psi(cat, ["c"] * 200) > 1
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0)


def test_policy_file_errors_name_the_key(tmp_path) -> None:
    from bulwark.errors import BulwarkError

    assert load_guard_policy(None) == GuardPolicy()
    bad = tmp_path / "p.yaml"
    bad.write_text("attack:\n  epsilon: -1\n")
    with pytest.raises(BulwarkError, match="attack.epsilon"):
        load_guard_policy(bad)
