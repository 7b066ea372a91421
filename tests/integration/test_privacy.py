"""Private training on real parts: DP-SGD's model card, membership inference in the gate, and the privacy
accounting of distributed training."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from bulwark.guard.policy import GatePolicy, GuardPolicy
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.testing.stack import TestStack
from services.robustness_guard.gate import Gate
from services.trainer.pipeline import artifact_store
from tests.integration.helpers import clean_events, publish, train_version

pytestmark = pytest.mark.integration


def _settings(stack: TestStack, tmp: Path):  # noqa: ANN202
    prefix = "pv" + uuid.uuid4().hex[:8]
    return stack.settings(redis_prefix=prefix, home=tmp / f"home-{prefix}", **stack.topics(partitions=2))


def test_dp_training_records_the_spent_budget_in_card_metrics_and_registry(stack: TestStack, tmp_path: Path) -> None:
    settings = _settings(stack, tmp_path)
    outcome = train_version(stack, settings, model="dp", seed=31, events=2500, dp_epsilon=3.0, dp_delta=1e-5,
                            dp_max_grad_norm=1.5, dp_epochs=4)
    p = outcome.privacy
    assert p["mechanism"] == "DP-SGD" and p["accountant"] == "rdp" and p["privacy_unit"] == "event"
    # The accountant's figure after the last step: within the target, and not far under it (noise is
    # calibrated to spend it).
    assert 2.5 < p["epsilon_spent"] <= 3.0 and p["delta"] == 1e-5 and p["max_grad_norm"] == 1.5
    assert p["noise_multiplier"] > 0.3 and p["epochs"] == 4 and outcome.training["epochs"] == 4
    assert p["sample_rate"] == pytest.approx(256 / outcome.dataset["train"], rel=0.05)
    assert p["steps"] == 4 * round(1 / p["sample_rate"])
    art = artifact_store(settings).open("dp", outcome.version, "trained")
    assert art.card["privacy"] == p and art.card["personal_data"] is True
    assert art.json("metrics.json")["privacy"]["epsilon_spent"] == p["epsilon_spent"]
    entry = ModelRegistry(make_redis(settings), RedisKeys(settings.redis_prefix)).get("dp", outcome.version)
    assert entry["privacy"]["noise_multiplier"] == p["noise_multiplier"]
    # Without DP the card says so.
    plain = train_version(stack, settings, model="plain", publish_events=False)
    assert plain.privacy == {"mechanism": "none"}


@pytest.mark.slow
def test_gate_fails_an_overfit_model_and_passes_its_dp_twin_on_membership_inference(stack: TestStack,
                                                                                    tmp_path: Path) -> None:
    settings = _settings(stack, tmp_path)
    # 15% of labels flipped: a model that memorizes its training set must learn these flips by heart, which
    # is what a membership attack reads (low loss on members, high on non-members with flipped labels).
    events = clean_events(stack, settings, 2000, seed=41, labeled_fraction=1.0)
    rng = np.random.default_rng(41)
    for e in events:
        if rng.random() < 0.15:
            e.payload["is_fraud"] = not e.payload["is_fraud"]
    publish(settings, settings.topics.events_clean, events)
    # Both: a wide MLP, 100 epochs, no weight decay, last weights kept; one of them with DP-SGD.
    recipe = {"hidden": [256, 256], "batch_size": 64, "weight_decay": 0.0, "keep_best": False, "publish_events": False}
    overfit = train_version(stack, settings, model="overfit", max_epochs=100, patience=100, **recipe)
    private = train_version(stack, settings, model="private", dp_epsilon=8.0, dp_epochs=10, **recipe)
    # The policy isolates the membership check: label noise caps every accuracy near 0.8, so the other
    # thresholds are opened here (the robustness checks have their own tests).
    policy = GuardPolicy(gate=GatePolicy(min_clean_accuracy=0, min_fgsm_accuracy=0, min_pgd_accuracy=0,
                                         min_noise_accuracy=0, min_missing_accuracy=0, max_ece=1,
                                         max_membership_auc=0.6))
    gate = Gate(policy, artifact_store(settings))
    bad, good = gate.evaluate("overfit", overfit.version), gate.evaluate("private", private.version)
    assert not bad.passed
    [reason] = bad.reasons
    assert reason.startswith("membership-inference attack AUC is") and "above the policy's 0.600" in reason
    assert bad.report["figures"]["membership_auc"] > 0.65
    assert set(bad.report["figures"]["membership"]["attacks"]) == {"loss_threshold", "confidence_threshold",
                                                                   "art_black_box"}
    assert good.passed and good.reasons == ["holds every threshold of the policy"]
    assert good.report["figures"]["membership_auc"] <= 0.6
    assert good.report["figures"]["privacy"]["epsilon_spent"] <= 8.0
    # The same overfit model is only reported, not failed, when its card says it holds no personal data.
    relaxed = Gate(policy.model_copy(update={"gate": policy.gate.model_copy(update={"max_membership_auc": None})}),
                   artifact_store(settings)).evaluate("overfit", overfit.version)
    assert relaxed.passed and relaxed.report["figures"]["membership_auc"] > 0.65


@pytest.mark.slow
def test_dp_accounting_of_two_workers_equals_one_process_on_the_same_data() -> None:
    from services.trainer.distributed import builder, run_training
    from services.trainer.private import PrivacyConfig
    from services.trainer.training import LoopConfig
    from tests.integration.test_trainer_distributed import _data

    spec, xt, yt, xv, yv = _data(2500)
    build = builder("mlp", spec, {"hidden": [32, 32], "dropout": 0.0})
    cfg = LoopConfig(seed=5, batch_size=128, privacy=PrivacyConfig(2.0, 1e-5, 1.0, 2))
    one = run_training(build, xt, yt, xv, yv, cfg, workers=1).privacy
    two = run_training(build, xt, yt, xv, yv, cfg, workers=2).privacy
    assert one["world_size"] == 1 and two["world_size"] == 2
    # Each worker samples its half at the global rate: same q, same sigma, same steps, same epsilon.
    for key in ("sample_rate", "noise_multiplier", "steps", "epsilon_spent", "expected_batch_size"):
        assert one[key] == pytest.approx(two[key], rel=0.02), key
    assert one["epsilon_spent"] <= 2.0
