"""The probe: a canary event through the chain and a canary prediction through the front door.

Data canary: `events.raw` → ingest-anonymizer → `events.clean` → trainer. Model canary:
`models.trained` → quantizer → `models.quantized` → robustness-guard → `models.validated` → updater.
Each consumer loop marks a canary handled (the idempotence key in Redis, the probe's evidence) and the
service on the route forwards it; no handler sees it (`bulwark.bus.canary`). Prediction canary: a
`Predict` for each live model with an input built from the version's own feature specification (means,
first vocabulary entries, a jitter so the cache misses), through the front door, the guard, the cache and
Triton; the explainer and updater answer grpc.health.v1. The probe's trace is always sampled.

The first hop that fails names where the chain is stuck; hops are reported in chain order.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from typing import Any, Sequence

from bulwark.bus.canary import canary_event
from bulwark.doctor.model import DOWN, UP, HopResult, PartState, ProbeResult
from bulwark.doctor.settings import DoctorSettings
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings

DATA_ROUTE = (("events_raw", "ingest-anonymizer"), ("events_clean", "trainer"))
MODEL_ROUTE = (("models_trained", "quantizer"), ("models_quantized", "robustness-guard"),
               ("models_validated", "updater"))
# Chain order of every hop a probe can name.
HOP_ORDER = ("kafka", "redis", "ingest-anonymizer", "trainer", "quantizer", "robustness-guard", "updater",
             "inference", "triton", "explainer")


def _route(settings: CommonSettings, hops: Sequence[tuple[str, str]], present: set[str]) -> list[dict[str, str]]:
    return [{"topic": getattr(settings.topics, t), "service": s} for t, s in hops if s in present]


def run_probe(settings: CommonSettings, doctor: DoctorSettings, parts: Sequence[PartState]) -> ProbeResult:
    """Send the canaries, wait up to `probe_timeout_s`, and report each hop (first failure = stopped_at)."""
    started = time.monotonic()
    probe_id = f"canary-{uuid.uuid4()}"
    state = {p.part: p for p in parts}
    services = {p.part for p in parts if p.kind == "service"}
    hops: dict[str, HopResult] = {}
    routes = [r for r in (_route(settings, DATA_ROUTE, services), _route(settings, MODEL_ROUTE, services)) if r]

    if "kafka" in state and state["kafka"].state == DOWN:
        hops["kafka"] = HopResult("kafka", False, detail="broker down: canary not sent")
    elif routes:
        err = _send(settings, probe_id, routes)
        hops["kafka"] = HopResult("kafka", err is None, round((time.monotonic() - started) * 1000, 1),
                                  err or "canary produced and acknowledged")
    redis_ok = "redis" not in state or state["redis"].state == UP
    if "redis" in state:
        hops["redis"] = HopResult("redis", redis_ok, detail="" if redis_ok else "Redis down: no hop can mark a canary")
    if hops.get("kafka") and hops["kafka"].seen and redis_ok:
        down = {p.part for p in parts if p.kind == "service" and p.state == DOWN}
        hops.update(_watch(settings, doctor, probe_id, [[h["service"] for h in r] for r in routes], started, down))
    else:
        for r in routes:
            for h in r:
                hops[h["service"]] = HopResult(h["service"], None, detail="not probed: an earlier hop failed")
    hops.update(_requests(settings, doctor, probe_id, state))
    ordered = [hops[h] for h in HOP_ORDER if h in hops] + [h for k, h in hops.items() if k not in HOP_ORDER]
    stopped = next((h.hop for h in ordered if h.seen is False), None)
    return ProbeResult(probe_id, stopped, ordered, round(time.monotonic() - started, 3))


def _send(settings: CommonSettings, probe_id: str, routes: list[list[dict[str, str]]]) -> str | None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from bulwark.bus.client import kafka_client_config
    from bulwark.bus.producer import event_headers

    # A provider of the probe's own, always sampled: the services' parent-based samplers then record
    # every hop of the canary, whatever their ratio.
    tracer = TracerProvider(sampler=ALWAYS_ON).get_tracer("bulwark.doctor")
    try:
        producer = KafkaProducer(**{**kafka_client_config(settings, client_id="bulwark-doctor"),
                                    "request_timeout_ms": 3000}, acks="all", max_block_ms=3000, retries=1)
    except (KafkaError, OSError, ValueError) as exc:
        return f"cannot connect to the broker ({type(exc).__name__})"
    try:
        with tracer.start_as_current_span("doctor probe", attributes={"bulwark.event.id": probe_id}):
            for route in routes:
                event = canary_event(probe_id, route, time.time())
                producer.send(route[0]["topic"], event.encode(), key=probe_id.encode(),
                              headers=event_headers(event)).get(timeout=5)
        return None
    except (KafkaError, OSError) as exc:
        return f"produce failed ({type(exc).__name__})"
    finally:
        producer.close(timeout=2)


def _stuck(routes: list[list[str]], seen: dict[str, float], down: set[str]) -> bool:
    """True when every route is either through or waits on a service with no live instance: nothing is left
    that could still handle the canary, so waiting out the timeout would tell nothing more."""
    for route in routes:
        nxt = next((s for s in route if s not in seen), None)
        if nxt is not None and nxt not in down:
            return False
    return True


def _watch(settings: CommonSettings, doctor: DoctorSettings, probe_id: str, routes: list[list[str]],
           started: float, down: set[str]) -> dict[str, HopResult]:
    client = make_redis(settings, timeout_s=doctor.check_timeout_s)
    keys = RedisKeys(settings.redis_prefix)
    services = [s for r in routes for s in r]
    seen: dict[str, float] = {}
    deadline = started + doctor.probe_timeout_s
    gave_up = False
    while True:
        waiting = [s for s in services if s not in seen]
        if not waiting:
            break
        try:
            marks = client.mget([keys.idempotence(s, probe_id) for s in waiting])
        except Exception:  # noqa: BLE001 - Redis failing mid-probe: the remaining hops stay unseen
            break
        now = time.monotonic()
        for s, m in zip(waiting, marks):
            if m is not None:
                seen[s] = now
        if time.monotonic() >= deadline:
            break
        if _stuck(routes, seen, down):
            gave_up = True
            break
        time.sleep(0.05)
    out = {}
    waited = round(time.monotonic() - started, 1)
    for s in services:
        if s in seen:
            out[s] = HopResult(s, True, round((seen[s] - started) * 1000, 1), "canary handled")
        elif gave_up and s in down:
            out[s] = HopResult(s, False, None, f"canary not handled after {waited:g}s and no instance is up "
                               "to handle it (service down)")
        elif gave_up:
            out[s] = HopResult(s, False, None, "not reached: an earlier hop of its route is down")
        else:
            out[s] = HopResult(s, False, None, f"canary not handled within {doctor.probe_timeout_s:g}s")
    return out


# ------------------------------------------------------------------------------------------ requests
def _requests(settings: CommonSettings, doctor: DoctorSettings, probe_id: str,
              state: dict[str, PartState]) -> dict[str, HopResult]:
    out: dict[str, HopResult] = {}
    if "inference" in state:
        out.update(_predict(settings, doctor, probe_id, state))
    elif "triton" in state:
        up = state["triton"].state == UP
        out["triton"] = HopResult("triton", up, detail=state["triton"].detail)
    for name in ("explainer",):
        if name in state:
            out[name] = _health_hop(state[name])
    return out


def _health_hop(part: PartState) -> HopResult:
    answered = [i for i in part.instances if i.evidence.get("grpc_health") == "SERVING"]
    if answered:
        return HopResult(part.part, True, detail=f"grpc.health SERVING on {len(answered)} instance(s)")
    return HopResult(part.part, False, detail=part.detail)


def _predict(settings: CommonSettings, doctor: DoctorSettings, probe_id: str,
             state: dict[str, PartState]) -> dict[str, HopResult]:
    import grpc

    from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
    from bulwark.grpc_client import channel, metadata, to_values

    front = state["inference"]
    ports = [int(i.evidence["grpc_port"]) for i in front.instances if i.evidence.get("grpc_port")]
    if not ports:
        return {"inference": HopResult("inference", False, detail=front.detail or "no instance serves gRPC")}
    triton_part = state.get("triton")
    model = _canary_input(settings)
    if model is None:
        hop = _health_hop(front)
        hop.detail += "; no live model, so the prediction canary stopped at the health check"
        out = {"inference": hop}
        if triton_part is not None:
            out["triton"] = HopResult("triton", triton_part.state == UP, detail=triton_part.detail)
        return out
    name, record = model
    req = inference_pb2.PredictRequest(model=name, request_id=probe_id, client_key="bulwark-doctor")
    if isinstance(record, str):
        req.text = record
    else:
        for k, v in to_values(record).items():
            req.features[k].CopyFrom(v)
    t0 = time.monotonic()
    ch = channel(settings, f"127.0.0.1:{ports[0]}")
    try:
        reply = inference_pb2_grpc.InferenceServiceStub(ch).Predict(
            req, timeout=max(doctor.check_timeout_s, 3.0), metadata=metadata(settings))
        ms = round((time.monotonic() - t0) * 1000, 1)
        return {"inference": HopResult("inference", True, ms, f"answered {name} v{reply.version} "
                                       f"(guard {reply.guard.action or 'allow'})"),
                "triton": HopResult("triton", True, ms, "cache missed; Triton answered" if not reply.cached
                                    else "answered from cache")}
    except grpc.RpcError as exc:
        code, text = exc.code(), (exc.details() or "")[:160]
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and "triton" not in text.lower():
            if triton_part is None or triton_part.state == UP:
                return {"inference": HopResult("inference", False, detail=f"front door unreachable ({code.name})")}
        triton_down = triton_part is not None and triton_part.state != UP
        if triton_down or "triton" in text.lower():
            return {"inference": HopResult("inference", True, detail=f"front door answered {code.name}"),
                    "triton": HopResult("triton", False, detail=f"{code.name}: {text}")}
        return {"inference": HopResult("inference", False, detail=f"{code.name}: {text}")}
    finally:
        ch.close()


def _canary_input(settings: CommonSettings) -> tuple[str, dict[str, Any] | str] | None:
    """A live model and an input its version accepts (None when no model is live or it cannot be read)."""
    from bulwark.crypto import load_verifier
    from bulwark.live import read_live
    from bulwark.registry import ModelRegistry
    from bulwark.versions import VersionCatalog

    try:
        client = make_redis(settings, timeout_s=2)
        keys = RedisKeys(settings.redis_prefix)
        models = sorted(m.decode() if isinstance(m, bytes) else m for m in client.smembers(keys.models()))
        catalog = VersionCatalog(ModelRegistry(client, keys), load_verifier(settings.keys_path))
        for model in models:
            live = read_live(client, keys, model)
            if live is None or live.live_version is None:
                continue
            served = catalog.get(model, live.live_version)
            if served.family.name == "text":
                return model, f"doctor canary {random.random():.6f}"
            return model, _record(served.spec)
    except Exception:  # noqa: BLE001 - no canary input: the probe falls back to the health check
        return None
    return None


def _record(spec: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for i, f in enumerate(spec.features):
        if f.kind == "numeric":
            # The training mean, back through the transform, plus a jitter so the cache never answers.
            value = math.expm1(f.mean) if f.transform == "log1p" else f.mean
            rec[f.name] = float(value) * (1 + 1e-6 * random.random()) + (1e-9 if i == 0 else 0.0)
        elif f.kind == "flag":
            rec[f.name] = False
        elif f.kind == "categorical":
            rec[f.name] = f.vocab[0] if f.vocab else "canary"
        else:
            rec[f.name] = "canary"
    return rec
