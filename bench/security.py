"""Model extraction against the real front door, with and without the extraction defence.

An attacker with a valid identity queries the front door (a real tritonserver serving a version made by the
trainer's code path) N times, trains a surrogate on its queries and the answers it got, and is scored by the
surrogate's agreement with the real model on held-out reference inputs the attacker never saw. Two query
strategies, both realistic for a client that knows only the API's field names, types and plausible ranges:

- `sweep`: every numeric field uniform over its training range (the profile's min..max), categories and flags
  uniform: the classic equation-solving / random-query attack (Tramèr et al. 2016);
- `perturb`: 50 real records the attacker holds, each query one of them with its numbers scaled by a
  log-normal factor and now and then a category or flag changed (a small seed set grown by perturbation,
  as in Papernot et al. 2017's Jacobian augmentation, without the gradients it cannot see).

Three front doors serve the same model side by side: one with the extraction section off (and the guard's
per-client burst limit lifted, so the attacker is limited by nothing), one with the default policy
(budget, detection, throttling, label-only answers for a throttled client) and the default burst limit: the
attacker gets exactly what any client gets and backs off on rate-limit answers like a careful client would;
and one with the default policy plus `output: label` for every client (the strictest hardening).
Each (strategy, N) run uses a fresh client identity, the attacker's most favourable case; one identity per
attacker is what credentials enforce (with credentials off a caller could change its client key per call:
see docs/security.md).

The surrogate is a small torch MLP on the attacker's own encoding of the fields (log-scaled, standardized
numbers; one-hot categories), trained on the probabilities it got back (soft targets: a label-only answer
is a hard target). Agreement is measured against the real model's label on 3,000 held-out inputs; the
majority-class share (a surrogate that always says "legitimate") is the baseline, and agreement on the inputs
the real model calls fraud is reported beside it, since the classes are imbalanced.

The defence's cost on normal clients: one client sends real records one at a time, alternating between the two
doors (paired, so both see the same machine load; a key per door, since both count keys in one Redis), for the
p50 latency ratio; a busier client sends real records in batches through the defended door, and every answer
is checked against the real model's probabilities: the share rejected or hardened is the cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from _common import Row, progress, save
from _models import train_version
from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
from bulwark.artifacts import ArtifactStore
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.families import FAMILIES
from bulwark.grpc_client import to_values
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import (
    CATEGORICAL_FIELDS,
    COUNTRIES,
    CURRENCIES,
    FLAG_FIELDS,
    MERCHANTS,
    NUMERIC_FIELDS,
    ReferenceGenerator,
)
from bulwark.registry import ModelRegistry
from bulwark.testing.services import ServiceProcess
from bulwark.testing.stack import TestStack, topic_env
from bulwark.versions import VersionCatalog
from tests.integration.helpers import deploy

FIELDS = NUMERIC_FIELDS + CATEGORICAL_FIELDS + FLAG_FIELDS
CATEGORIES = {"currency": CURRENCIES, "merchant_category": MERCHANTS, "country": COUNTRIES}
INTEGER_FIELDS = {"account_age_days", "txn_count_24h", "hour_of_day"}
BATCH = 50
SIDES = {"off": "defence off", "on": "defence on (default policy)", "label": "defence on, label-only output"}


def features(payload: dict[str, Any]) -> dict[str, Any]:
    """The model's fields of a reference event."""
    return {k: payload[k] for k in FIELDS}


# ---------------------------------------------------------------------------------------- the attacker
def sweep(n: int, ranges: dict[str, tuple[float, float]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Uniform over every numeric field's range; categories and flags uniform."""
    out = []
    for _ in range(n):
        r: dict[str, Any] = {}
        for f in NUMERIC_FIELDS:
            lo, hi = ranges[f]
            v = float(rng.uniform(lo, hi))
            r[f] = float(round(v)) if f in INTEGER_FIELDS else round(v, 2)
        for f in CATEGORICAL_FIELDS:
            r[f] = str(rng.choice(CATEGORIES[f]))
        for f in FLAG_FIELDS:
            r[f] = bool(rng.random() < 0.5)
        out.append(r)
    return out


def perturb(n: int, seeds: list[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Real seed records with scaled numbers and, now and then, another category or a flipped flag."""
    out = []
    for _ in range(n):
        r = dict(seeds[int(rng.integers(len(seeds)))])
        for f in NUMERIC_FIELDS:
            if f == "hour_of_day":
                r[f] = float((int(r[f]) + int(rng.integers(-4, 5))) % 24)
                continue
            v = float(r[f]) * float(np.exp(rng.normal(0, 0.6)))
            r[f] = float(round(v)) if f in INTEGER_FIELDS else round(v, 2)
        for f in CATEGORICAL_FIELDS:
            if rng.random() < 0.2:
                r[f] = str(rng.choice(CATEGORIES[f]))
        for f in FLAG_FIELDS:
            if rng.random() < 0.15:
                r[f] = not r[f]
        out.append(r)
    return out


class Encoder:
    """The attacker's own encoding: log-scaled standardized numbers (stats from its queries), one-hot
    categories over the API's documented values, flags as 0/1."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        x = self._numeric(records)
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6

    @staticmethod
    def _numeric(records: list[dict[str, Any]]) -> np.ndarray:
        return np.log1p(np.maximum(np.array([[float(r[f]) for f in NUMERIC_FIELDS] for r in records]), 0))

    def __call__(self, records: list[dict[str, Any]]) -> np.ndarray:
        num = (self._numeric(records) - self.mean) / self.std
        cats = [[1.0 if r[f] == v else 0.0 for f in CATEGORICAL_FIELDS for v in CATEGORIES[f]] for r in records]
        flags = [[1.0 if r[f] else 0.0 for f in FLAG_FIELDS] for r in records]
        return np.hstack([num, np.array(cats), np.array(flags)]).astype(np.float32)


def train_surrogate(x: np.ndarray, p_fraud: np.ndarray, seed: int) -> torch.nn.Module:
    """A 2-hidden-layer MLP fitted to the answers (soft targets), full batch."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(p_fraud.astype(np.float32)).unsqueeze(1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
    return net


def surrogate_agreement(got: list[dict[str, Any]], p: list[float], held_out: list[dict[str, Any]],
                        truth: np.ndarray, majority: float, *, seed: int, repeats: int = 3) -> tuple[float, float]:
    """Mean agreement (overall, and on the inputs the real model calls fraud) of `repeats` surrogates trained
    with different initialisations on what the attacker got back."""
    if len(got) < 10 or len(set(np.array(p) >= 0.5)) < 2:
        return majority, 0.0  # nothing to learn a boundary from: the best guess is the majority class
    enc = Encoder(got)
    x, x_held = enc(got), torch.from_numpy(enc(held_out))
    overall, fraud = [], []
    for k in range(repeats):
        net = train_surrogate(x, np.array(p), seed=seed * 10 + k)
        with torch.no_grad():
            guess = (net(x_held).squeeze(1) > 0).numpy()
        overall.append(float((guess == truth).mean()))
        fraud.append(float(guess[truth].mean()) if truth.any() else 0.0)
    return float(np.mean(overall)), float(np.mean(fraud))


def query(stub: inference_pb2_grpc.InferenceServiceStub, model: str, client: str,
          records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[float], dict[str, int]]:
    """Send `records` in batches as one client; back off and resend on rate-limit answers (as a careful
    client does); every other refusal is a lost query. Returns the answered records, their P(fraud), and
    the refusals by kind."""
    answered: list[dict[str, Any]] = []
    p: list[float] = []
    refused: dict[str, int] = {}
    pending = list(records)
    retries = 0
    while pending:
        chunk, pending = pending[:BATCH], pending[BATCH:]
        resp = stub.PredictBatch(inference_pb2.PredictBatchRequest(items=[
            inference_pb2.PredictRequest(model=model, features=to_values(r), client_key=client) for r in chunk]),
            timeout=30)
        again = []
        for r, item in zip(chunk, resp.items):
            if not item.error.reason:
                answered.append(r)
                p.append(float(item.probabilities[1]))
            elif "rate limit" in item.error.message and retries < 200:
                again.append(r)
            else:
                kind = ("budget" if "query budget" in item.error.message else
                        "throttled" if "throttled" in item.error.message else item.error.reason.lower())
                refused[kind] = refused.get(kind, 0) + 1
        if again:
            retries += 1
            time.sleep(0.5)
            pending = again + pending
    return answered, p, refused


# ---------------------------------------------------------------------------------------- the bench
def start_door(stack: TestStack, base_env: dict[str, str], tmp: Path, name: str, policy: str) -> tuple[
        ServiceProcess, grpc.Channel]:
    path = tmp / f"guard-{name}.yaml"
    path.write_text(policy)
    door = ServiceProcess("services.inference", "inference", {**base_env, "BULWARK_GUARD_POLICY": str(path)},
                          tmp / "logs").start()
    port = make_redis(stack.settings()).hget(
        RedisKeys(base_env["BULWARK_REDIS_PREFIX"]).heartbeat("inference", door.instance), "x_grpc_port")
    return door, grpc.insecure_channel(f"127.0.0.1:{int(port)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=[250, 1000, 4000], help="attack query counts")
    parser.add_argument("--normal", type=int, default=800, help="paired batch-1 requests of the normal client")
    parser.add_argument("--bulk", type=int, default=4000, help="real records the busier normal client sends")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the surrogate is tiny; more threads only contend with the services on 2 cores
    rows: list[Row] = []
    details: dict[str, Any] = {"attacks": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stack = TestStack(tmp)
        doors: list[ServiceProcess] = []
        try:
            progress("starting broker, Redis and Triton; training a version")
            topics = stack.topics(partitions=2)
            prefix = "bs" + uuid.uuid4().hex[:8]
            settings = stack.settings(triton=True, redis_prefix=prefix, home=tmp / "home", **topics)
            model = "bench-fraud"
            outcome = train_version(stack, settings, model=model, events=4000, seed=5)
            deploy(stack, settings, model, [outcome.version], live=outcome.version)
            served = VersionCatalog(ModelRegistry(make_redis(settings), RedisKeys(prefix)),
                                    load_verifier(stack.keys_dir)).get(model, outcome.version)
            store = ArtifactStore(settings.artifacts_path, verifier=load_verifier(stack.keys_dir),
                                  kek=load_ring(RING_KEK, stack.keys_dir))
            real = FAMILIES.get("mlp").load(store.open(model, outcome.version, "trained"))

            fields = (served.profile or {}).get("fields") or {}
            ranges = {f: (float(fields[f]["min"]), float(fields[f]["max"])) for f in NUMERIC_FIELDS}
            held_out = [features(e.payload) for e in ReferenceGenerator(seed=4242).events(3000)]
            truth = real.predict(held_out)[:, 1] >= 0.5
            majority = float(max(truth.mean(), 1 - truth.mean()))
            progress(f"held-out: {len(held_out)} inputs, real model calls {truth.mean():.1%} fraud")

            base_env = {**stack.env(triton=True), **topic_env(topics), "BULWARK_REDIS_PREFIX": prefix,
                        "BULWARK_HOME": str(tmp / "home"), "BULWARK_INFERENCE_PORT": "0",
                        "BULWARK_INFERENCE_THREADS": "8",
                        # No response cache: the two doors share one Redis, and each must call Triton for every
                        # answer (a cached answer would make the second door of a pair look fast).
                        "BULWARK_INFERENCE_CACHE_TTL_S": "0"}
            off, off_channel = start_door(stack, base_env, tmp, "off", "online:\n  rate_per_s: 1000000\n"
                                          "  burst: 1000000\nextraction:\n  enabled: false\n")
            doors.append(off)
            on, on_channel = start_door(stack, base_env, tmp, "on", "{}\n")  # the default policy, defence on
            doors.append(on)
            # The default policy with every client's output hardened to the label (the policy's strictest
            # option): what label-only answers cost an attacker the detector does not catch.
            label, label_channel = start_door(stack, base_env, tmp, "label", "extraction:\n  output: label\n")
            doors.append(label)
            stubs = {"off": inference_pb2_grpc.InferenceServiceStub(off_channel),
                     "on": inference_pb2_grpc.InferenceServiceStub(on_channel),
                     "label": inference_pb2_grpc.InferenceServiceStub(label_channel)}

            # --- the defence's cost on a normal client: paired batch-1 latency, then a busier client's share
            progress(f"normal client: {args.normal} paired batch-1 requests")
            normal = [features(e.payload) for e in ReferenceGenerator(seed=61).events(args.normal + 50)]
            expected = real.predict(normal)[:, 1]
            lat: dict[str, list[float]] = {"off": [], "on": []}
            changed = refused_normal = 0
            for i, r in enumerate(normal):
                order = ("off", "on") if i % 2 else ("on", "off")
                for side in order:
                    # One key per door: both doors count a key in the same Redis, and one client at both
                    # would run at twice a normal client's rate, into the guard's per-client rate limit.
                    req = inference_pb2.PredictRequest(model=model, features=to_values(r),
                                                       client_key=f"shop-normal-{side}")
                    t = time.perf_counter()
                    try:
                        resp = stubs[side].Predict(req, timeout=10)
                    except grpc.RpcError:
                        if side == "on":
                            refused_normal += 1
                        continue
                    if i >= 50:  # the first 50 pairs warm both doors up
                        lat[side].append(time.perf_counter() - t)
                    if side == "on" and abs(resp.probabilities[1] - float(expected[i])) > 1e-4:
                        changed += 1
            p50 = {k: statistics.median(v) * 1000 for k, v in lat.items()}

            progress(f"busier normal client: {args.bulk} real records in batches of {BATCH}, defended door")
            bulk = [features(e.payload) for e in ReferenceGenerator(seed=62).events(args.bulk)]
            got, p_bulk, bulk_refused = query(stubs["on"], model, "shop-bulk", bulk)
            bulk_expected = dict(zip((id(r) for r in bulk), real.predict(bulk)[:, 1]))
            bulk_changed = int(sum(abs(p - bulk_expected[id(r)]) > 1e-4 for r, p in zip(got, p_bulk)))
            bulk_cost = float(sum(bulk_refused.values()) + bulk_changed) / len(bulk)
            normal_cost = (refused_normal + changed) / len(normal)
            rows += [
                Row("security", "normal client p50, defence off", p50["off"], "ms", "batch 1, uncached"),
                Row("security", "normal client p50, defence on", p50["on"], "ms", "batch 1, uncached"),
                Row("security", "defence latency cost (p50 on / off)", p50["on"] / p50["off"], "x",
                    "same requests, paired", "<= 1.15x", p50["on"] / p50["off"] <= 1.15),
                Row("security", f"normal client rejected or hardened ({len(normal)} batch-1)", normal_cost * 100, "%",
                    "real model's answer", "0 %", normal_cost == 0),
                Row("security", f"busier normal client rejected or hardened ({len(bulk)} in batches)",
                    bulk_cost * 100, "%", "real model's answer", "0 %", bulk_cost == 0),
            ]
            details["normal"] = {"p50_ms": p50, "refused": refused_normal, "hardened": changed,
                                 "bulk_refused": bulk_refused, "bulk_hardened": bulk_changed}

            # --- the attacks
            seeds = [features(e.payload) for e in ReferenceGenerator(seed=31).events(50)]
            for strategy in ("sweep", "perturb"):
                for n in args.n:
                    rng = np.random.default_rng(n * 7 + len(strategy))
                    queries = sweep(n, ranges, rng) if strategy == "sweep" else perturb(n, seeds, rng)
                    for side in SIDES:
                        t0 = time.monotonic()
                        client = f"thief-{strategy}-{n}-{side}-{uuid.uuid4().hex[:4]}"
                        got, p, refused = query(stubs[side], model, client, queries)
                        hard = sum(1 for x in p if x in (0.0, 1.0))
                        agree, agree_fraud = surrogate_agreement(got, p, held_out, truth, majority, seed=n)
                        details["attacks"].append({"strategy": strategy, "n": n, "defence": side,
                                                   "answered": len(got), "label_only": hard, "refused": refused,
                                                   "agreement": agree, "fraud_agreement": agree_fraud,
                                                   "seconds": round(time.monotonic() - t0, 1)})
                        progress(f"{strategy} N={n} {SIDES[side]}: {len(got)} answered ({hard} label-only), "
                                 f"refused {refused}, agreement {agree:.1%}, on fraud {agree_fraud:.1%}")
                        rows.append(Row("security", f"surrogate agreement, {strategy}, N={n}, {SIDES[side]}",
                                        agree * 100, "%", f"majority class {majority:.1%}; {len(got)}/{n} answered"))
            for strategy in ("sweep", "perturb"):
                for n in args.n:
                    a = {d["defence"]: d for d in details["attacks"] if d["strategy"] == strategy and d["n"] == n}
                    drop = (a["off"]["agreement"] - a["on"]["agreement"]) * 100
                    rows.append(Row("security", f"default defence cuts agreement, {strategy}, N={n}", drop, "points",
                                    "defence off", "> 0 at N >= 1000" if n >= 1000 else "",
                                    drop > 0 if n >= 1000 else None))
            for channel in (off_channel, on_channel, label_channel):
                channel.close()
        finally:
            for d in doors:
                if d.alive:
                    d.terminate()
            stack.stop()
    progress(f"done in {time.monotonic() - started:.0f} s")
    save("security", rows, {"details": details})


if __name__ == "__main__":
    sys.exit(main())
