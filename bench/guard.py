"""Robustness guard figures, on a real version made by the trainer and quantizer code paths:

- the gate's accuracies under FGSM and PGD, compared with the Adversarial Robustness Toolbox running the same
  attack at the same epsilon on the same fp32 model (they must agree within 2 points);
- the online guard's detection AUROC for PGD inputs at the policy's epsilon against clean held-out inputs
  (target >= 0.95), with and without the domain-constraint features;
- the online guard's added latency per request (its rate counter in the front door's cache round trip,
  range checks, OOD and adversarial scores; target <= 0.5 ms p50): each request's time with the guard's
  work minus the same cache lookup without it, in process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import Row, progress, save
from _models import new_context, quantize, train_version, trained_event
from bulwark.artifacts import ArtifactStore
from bulwark.crypto import load_ring, load_signer, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.families import FAMILIES
from bulwark.guard.attacks import FGSMAttack, PGDAttack
from bulwark.guard.online import OnlineGuard
from bulwark.guard.policy import GuardPolicy
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.testing.stack import TestStack
from bulwark.versions import VersionCatalog
from services.robustness_guard.gate import Gate, _numeric_mask


def art_accuracies(loaded, x: np.ndarray, y: np.ndarray, mask: np.ndarray, policy: GuardPolicy) -> dict[str, float]:  # noqa: ANN001
    """FGSM and PGD from ART on the same fp32 model, epsilon and mask."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    a = policy.attack
    clf = PyTorchClassifier(model=loaded.module, loss=torch.nn.CrossEntropyLoss(), input_shape=(x.shape[1],),
                            nb_classes=2, device_type="cpu")
    acc = lambda adv: float((clf.predict(adv).argmax(1) == y).mean())  # noqa: E731
    fgsm = FastGradientMethod(clf, norm=np.inf, eps=a.epsilon).generate(x, y=np.eye(2)[y], mask=mask)
    pgd = ProjectedGradientDescent(clf, norm=np.inf, eps=a.epsilon, eps_step=a.pgd_step_size, max_iter=a.pgd_steps,
                                   num_random_init=0, verbose=False).generate(x, y=np.eye(2)[y], mask=mask)
    return {"fgsm": acc(fgsm), "pgd": acc(pgd)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    policy = GuardPolicy()
    with tempfile.TemporaryDirectory() as tmp:
        stack = TestStack(Path(tmp))
        try:
            settings = new_context(stack, home=Path(tmp) / "home")
            progress(f"training and quantizing a reference MLP on {args.events} events")
            outcome = train_version(stack, settings, model="bench-guard", events=args.events, seed=3)
            quantize(settings, trained_event(outcome))
            keys = stack.keys_dir
            store = ArtifactStore(settings.artifacts_path, verifier=load_verifier(keys), kek=load_ring(RING_KEK, keys),
                                  signer=load_signer(keys))
            progress("the gate (FGSM, PGD, noise, missing features, detector)")
            result = Gate(policy, store).evaluate("bench-guard", outcome.version)
            f = result.report["figures"]
            trained = store.open("bench-guard", outcome.version, "trained")
            fp32 = FAMILIES.get("mlp").load(trained)
            val = trained.json("heldout.json")["validation"]
            x = fp32.spec.encode(val)
            y = np.array([int(r["is_fraud"]) for r in val])
            mask = _numeric_mask(fp32)
            progress("ART's FGSM and PGD on the same fp32 model")
            ours = {"fgsm": float((fp32.module(torch.from_numpy(FGSMAttack(fp32.module).perturb(
                x, y, epsilon=policy.attack.epsilon, mask=mask))).argmax(1).numpy() == y).mean()),
                    "pgd": float((fp32.module(torch.from_numpy(PGDAttack(fp32.module).perturb(
                        x, y, epsilon=policy.attack.epsilon, mask=mask, steps=policy.attack.pgd_steps,
                        step_size=policy.attack.pgd_step_size))).argmax(1).numpy() == y).mean())}
            art = art_accuracies(fp32, x, y, mask, policy)
            progress(f"online guard cost over {args.requests} requests")
            client = make_redis(settings)
            registry = ModelRegistry(client, RedisKeys(settings.redis_prefix))
            registry.record("bench-guard", outcome.version, gate_report=result.path)
            catalog = VersionCatalog(registry, load_verifier(keys))
            served = catalog.get("bench-guard", outcome.version)
            guard = OnlineGuard(policy.online, client, RedisKeys(settings.redis_prefix), registry, load_verifier(keys))
            guard.profile(served)  # loaded once per version, as in the front door
            # The front door looks up its response cache in one Redis round trip; the guard's rate counter
            # rides in that same pipeline. Time the lookup alone and with the guard's work, per request.
            keys = RedisKeys(settings.redis_prefix)
            plain, guarded = [], []
            with torch.no_grad():
                for i in range(args.requests):
                    record = val[i % len(val)]
                    xi = torch.from_numpy(served.encode([record])[0])
                    logits, hidden = fp32.module(xi).numpy(), fp32.module.embed(xi).numpy()
                    cache_key = keys.prediction_cache("bench-guard", str(outcome.version), f"h{i}")
                    started = time.perf_counter()
                    pipe = client.pipeline(transaction=False)
                    pipe.mget([cache_key])
                    pipe.execute()
                    plain.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    pipe = client.pipeline(transaction=False)
                    pipe.mget([cache_key])
                    guard.count(pipe, "bench-guard", f"client-{i % 50}", 1)
                    guard.rate_exceeded(pipe.execute()[1])
                    verdicts = guard.before(served, [record], f"client-{i % 50}")
                    guard.after(served, verdicts, logits, hidden, [record])
                    guarded.append((time.perf_counter() - started) * 1000)
            added = np.array(guarded) - np.array(plain)
            p50, p99 = float(np.percentile(added, 50)), float(np.percentile(added, 99))
        finally:
            stack.stop()
    eps = policy.attack.epsilon
    rows = [
        Row("guard", "clean accuracy (served int8 form)", f["clean_accuracy"], ""),
        Row("guard", f"accuracy under FGSM eps={eps}, ours (fp32)", ours["fgsm"], "", "ART"),
        Row("guard", f"accuracy under FGSM eps={eps}, ART (fp32)", art["fgsm"], "", "baseline"),
        Row("guard", "FGSM |ours - ART|", abs(ours["fgsm"] - art["fgsm"]) * 100, "points", "ART", "<= 2",
            abs(ours["fgsm"] - art["fgsm"]) <= 0.02),
        Row("guard", f"accuracy under PGD eps={eps}, ours (fp32)", ours["pgd"], "", "ART"),
        Row("guard", f"accuracy under PGD eps={eps}, ART (fp32)", art["pgd"], "", "baseline"),
        Row("guard", "PGD |ours - ART|", abs(ours["pgd"] - art["pgd"]) * 100, "points", "ART", "<= 2",
            abs(ours["pgd"] - art["pgd"]) <= 0.02),
        Row("guard", "PGD detection AUROC (with domain constraints)", f["detector_auroc_pgd"], "", "clean held-out",
            ">= 0.95", f["detector_auroc_pgd"] >= 0.95),
        Row("guard", "PGD detection AUROC (learned features only)", f["detector_auroc_pgd_learned_only"], "",
            "clean held-out"),
        Row("guard", "online guard added latency p50", p50, "ms", "cache lookup alone", "<= 0.5", p50 <= 0.5),
        Row("guard", "online guard added latency p99", p99, "ms", "cache lookup alone"),
    ]
    save("guard", rows, {"figures": f, "ours": ours, "art": art, "policy": policy.model_dump()})


if __name__ == "__main__":
    main()
