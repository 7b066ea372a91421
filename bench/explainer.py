"""Explainer figures, on a real version made by the trainer and quantizer code paths and loaded the way the
service loads it (signature verified, weights decrypted in memory):

- integrated gradients, 50 steps, on the MLP, against one batch-64 forward pass of the same model (target
  <= 10x); the same integral through Captum's `IntegratedGradients` (same rule, nodes and output), and the
  data plane's whole in-process call (validation, encoding, attribution, report; cache off);
- the model-agnostic method (feature ablation, one forward per field in one batch) on the form Triton
  serves, against the same forward pass;
- over gRPC, to the explainer running as its own process on real Redis: a repeated request (cache hit)
  against a first one (computed), and the first one's latency.

In-process timings are one-thread medians (the service's default `BULWARK_EXPLAINER_TORCH_THREADS`), the
compared calls timed round-robin so that load from other processes falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients

from _common import RESULTS, Row, progress, save
from _models import quantize, train_version, trained_event
from bulwark.api.v1 import common_pb2, explain_pb2, explain_pb2_grpc
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings
from bulwark.testing.services import ServiceProcess
from bulwark.testing.stack import TestStack, topic_env
from services.explainer.dataplane import ExplainerDataPlane, ExplainInput
from services.explainer.methods import FeatureAblation, IntegratedGradients, log_odds
from services.explainer.models import VersionLoader
from services.explainer.settings import ExplainerSettings

MODEL = "bench-explainer"
STEPS = 50


def round_robin(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 20) -> dict[str, float]:
    """Median seconds per call of each callable, the callables interleaved."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def proto(record: dict[str, Any], fields: list[str]) -> dict[str, common_pb2.Value]:
    """A record's model fields as proto values."""
    out = {}
    for k in fields:
        v = record[k]
        out[k] = (common_pb2.Value(flag=v) if isinstance(v, bool) else common_pb2.Value(number=float(v))
                  if isinstance(v, (int, float)) else common_pb2.Value(category=str(v)))
    return out


def in_process(settings: CommonSettings, keys_dir: Path, records: list[dict[str, Any]], version: int,
               repeats: int) -> dict[str, Any]:
    """Method and data-plane timings against one batch-64 forward pass, in this process."""
    client = make_redis(settings)
    loader = VersionLoader(ModelRegistry(client, RedisKeys(settings.redis_prefix)), load_verifier(keys_dir),
                           load_ring(RING_KEK, keys_dir))
    ev = loader.get(MODEL, version)
    module = ev.trained.module
    batch = torch.from_numpy(ev.spec.encode(records[:64]))
    enc = ev.encode({f: records[0][f] for f in ev.fields}, "")
    n = len(enc.names)
    with torch.no_grad():
        target = int(module(enc.inputs[0])[0].argmax())
    ours, ablation = IntegratedGradients(ev.trained), FeatureAblation(ev.served())
    captum = CaptumIntegratedGradients(lambda x: log_odds(module(x), target))
    plane = ExplainerDataPlane(settings, ExplainerSettings(cache_ttl_s=0), client, loader, None)
    request = ExplainInput(MODEL, version, {f: records[0][f] for f in ev.fields}, steps=STEPS)

    def forward() -> None:
        with torch.no_grad():
            module(batch)

    def captum_ig() -> None:
        attr, _ = captum.attribute(enc.inputs[0], enc.baselines[0], n_steps=STEPS, method="gausslegendre",
                                   return_convergence_delta=True)
        torch.zeros(n, dtype=attr.dtype).index_add_(0, enc.groups, attr[0])  # the same per-field sums

    t = round_robin({
        "forward": forward,
        "ours": lambda: ours.attribute(enc.inputs, enc.baselines, target=target, steps=STEPS, groups=enc.groups,
                                       n_groups=n),
        "captum": captum_ig,
        "plane": lambda: plane.explain(request),
        "ablation": lambda: ablation.attribute(enc.inputs, enc.baselines, target=target, steps=0, groups=enc.groups,
                                               n_groups=n),
    }, repeats)
    # The two integrals agree: the comparison is of cost, not of different answers.
    r = ours.attribute(enc.inputs, enc.baselines, target=target, steps=STEPS, groups=enc.groups, n_groups=n)
    attr, delta = captum.attribute(enc.inputs[0], enc.baselines[0], n_steps=STEPS, method="gausslegendre",
                                   return_convergence_delta=True)
    theirs = torch.zeros(n, dtype=torch.float64).index_add_(0, enc.groups, attr[0].double()).numpy()
    return {"times": t, "fields": n, "field_names": ev.fields, "served_form": ev.served().form,
            "max_abs_difference_vs_captum": float(np.abs(r.values - theirs).max()),
            "delta_ours": r.delta, "delta_captum": float(delta[0])}


def over_grpc(stack: TestStack, settings: CommonSettings, topics: dict[str, str], logs: Path,
              records: list[dict[str, Any]], fields: list[str], version: int, n: int) -> dict[str, Any]:
    """Computed (first) and cached (repeat) Explain latencies to the explainer as its own process."""
    env = {**stack.env(), **topic_env(topics), "BULWARK_REDIS_PREFIX": settings.redis_prefix,
           "BULWARK_HOME": str(settings.home), "BULWARK_EXPLAINER_PORT": "0", "BULWARK_EXPLAINER_SUMMARIES": "false"}
    svc = ServiceProcess("services.explainer", "explainer", env, logs).start(timeout_s=120)
    try:
        port = make_redis(settings).hget(RedisKeys(settings.redis_prefix).heartbeat("explainer", svc.instance),
                                         "x_grpc_port")
        with grpc.insecure_channel(f"127.0.0.1:{int(port)}") as channel:
            stub = explain_pb2_grpc.ExplainServiceStub(channel)
            warm = explain_pb2.ExplainRequest(model=MODEL, version=version, features=proto(records[-1], fields))
            for _ in range(5):  # loads the version (later calls find it in memory); the input is never timed
                stub.Explain(warm, timeout=60)
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="bulwark.api.v1.ExplainService")
            first, repeat, floor = [], [], []
            for record in records[:n]:
                req = explain_pb2.ExplainRequest(model=MODEL, version=version, features=proto(record, fields),
                                                 steps=STEPS)
                started = time.perf_counter()
                a = stub.Explain(req, timeout=60)
                first.append(time.perf_counter() - started)
                started = time.perf_counter()
                b = stub.Explain(req, timeout=60)
                repeat.append(time.perf_counter() - started)
                assert (a.cached, b.cached) == (False, True), "a repeat was not a cache hit (or a first one was)"
                started = time.perf_counter()
                health.Check(check, timeout=10)  # the cost of any call on this channel: the floor
                floor.append(time.perf_counter() - started)
    finally:
        svc.terminate()
    return {"first_ms": statistics.median(first) * 1000, "repeat_ms": statistics.median(repeat) * 1000,
            "first_p99_ms": float(np.percentile(first, 99)) * 1000,
            "repeat_p99_ms": float(np.percentile(repeat, 99)) * 1000, "health_ms": statistics.median(floor) * 1000,
            "requests": len(first)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000, help="reference events the MLP trains on")
    parser.add_argument("--repeats", type=int, default=500, help="timed rounds of the in-process calls")
    parser.add_argument("--requests", type=int, default=200, help="distinct inputs explained over gRPC, twice each")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(ExplainerSettings().torch_threads)
    # One more record than the timed ones: the warm-up input, never timed.
    gen = ReferenceGenerator(seed=808, pii_note_fraction=0.0)
    records = [e.payload for e in gen.events(max(args.requests, 64) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        stack = TestStack(Path(tmp))
        try:
            topics = stack.topics(partitions=2)
            settings = stack.settings(redis_prefix="bx" + uuid.uuid4().hex[:8], home=Path(tmp) / "home", **topics)
            progress(f"training and quantizing a reference MLP on {args.events} events")
            outcome = train_version(stack, settings, model=MODEL, events=args.events, seed=3)
            quantize(settings, trained_event(outcome))
            progress(f"in process: {args.repeats} rounds of forward, IG (ours, Captum), data plane, ablation")
            local = in_process(settings, stack.keys_dir, records, outcome.version, args.repeats)
            progress(f"over gRPC: {args.requests} inputs, each explained then repeated")
            remote = over_grpc(stack, settings, topics, Path(tmp) / "logs", records, local["field_names"],
                               outcome.version, args.requests)
        finally:
            stack.stop()
    t = local["times"]
    fwd_ms = t["forward"] * 1000
    ratio = t["ours"] / t["forward"]
    speedup = remote["first_ms"] / remote["repeat_ms"]
    rows = [
        Row("explainer", "batch-64 forward pass (MLP, fp32)", fwd_ms, "ms", "baseline"),
        Row("explainer", f"IG {STEPS} steps, ours / batch-64 forward", ratio, "x", "batch-64 forward", "<= 10",
            ratio <= 10),
        Row("explainer", f"IG {STEPS} steps, Captum / batch-64 forward", t["captum"] / t["forward"], "x",
            "batch-64 forward"),
        Row("explainer", "IG speedup, ours vs Captum", t["captum"] / t["ours"], "x", "Captum IntegratedGradients"),
        Row("explainer", "IG |ours - Captum| (largest field)", local["max_abs_difference_vs_captum"], "logits",
            "Captum IntegratedGradients"),
        Row("explainer", "whole in-process explain / batch-64 forward", t["plane"] / t["forward"], "x",
            "batch-64 forward"),
        Row("explainer", f"feature ablation ({local['fields']} fields, {local['served_form']} form) / batch-64 forward",
            t["ablation"] / t["forward"], "x", "batch-64 forward"),
        Row("explainer", "gRPC Explain, computed, p50", remote["first_ms"], "ms"),
        Row("explainer", "gRPC Explain, cache hit, p50", remote["repeat_ms"], "ms"),
        Row("explainer", "gRPC health Check, p50 (any call's floor)", remote["health_ms"], "ms"),
        Row("explainer", "cache hit speedup over gRPC", speedup, "x", "same request computed"),
    ]
    extra = {"in_process": local, "grpc": remote, "steps": STEPS, "torch_threads": torch.get_num_threads()}
    if args.json:
        # The same file `save` writes (run_all reads it), without its table on stdout.
        RESULTS.mkdir(exist_ok=True)
        doc = {"bench": "explainer", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "rows": [asdict(r) for r in rows], **extra}
        (RESULTS / "explainer.json").write_text(json.dumps(doc, indent=2))
        print(json.dumps(doc, indent=2))
    else:
        save("explainer", rows, extra)


if __name__ == "__main__":
    main()
