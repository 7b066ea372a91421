"""The front door's logic, independent of gRPC: route, guard, cache, infer on Triton, log.

One request: resolve the version (pinned by the caller, or the live one the updater chose, or the canary for
clients the rollout routes there), validate and encode the input for that version, run the guard's online
checks, answer from the Redis cache or from Triton, and write a sampled, pseudonymous record to
inference.log. A shadow version gets a copy of the request off the answer path.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import orjson
import redis

from bulwark.bus.producer import EventProducer, Output
from bulwark.errors import BulwarkError, InvalidArgumentError, Reason
from bulwark.events import Envelope
from bulwark.live import LiveReader
from bulwark.pii import TextScanner
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from bulwark.triton.client import TritonClient
from bulwark.versions import ServedVersion, VersionCatalog
from services.inference.settings import InferenceSettings

log = logging.getLogger(__name__)
SERVICE = "inference"


@dataclass
class PredictInput:
    """One prediction request, transport-free."""

    model: str
    version: int | None = None
    features: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    request_id: str = ""
    client_key: str = ""

    def record(self) -> dict[str, Any]:
        """The model input as a record (features, and the text under both `text` and the family's field)."""
        rec = dict(self.features)
        if self.text:
            rec.setdefault("text", self.text)
            rec.setdefault("note", self.text)
        return rec


@dataclass
class Verdict:
    """The guard's decision about one input."""

    action: str = "allow"
    ood_score: float = 0.0
    adversarial_score: float = 0.0
    reasons: list[str] = field(default_factory=list)


@dataclass
class PredictOutput:
    """One answer."""

    request_id: str
    model: str
    version: int
    label: str
    probabilities: list[float]
    classes: list[str]
    cached: bool
    guard: Verdict
    route: str
    latency_ms: float = 0.0


class OnlineGuard(Protocol):
    """The robustness guard's per-request checks (a library call, not a network hop)."""

    def check(self, served: ServedVersion, records: Sequence[dict[str, Any]], encoded: list[np.ndarray],
              client: str) -> list[Verdict]:
        """A verdict per record; a `reject` fails that item with FAILED_PRECONDITION or INVALID_ARGUMENT."""
        ...


class AllowAll:
    """No online checks beyond input validation (used until a guard is configured)."""

    def check(self, served: ServedVersion, records: Sequence[dict[str, Any]], encoded: list[np.ndarray],
              client: str) -> list[Verdict]:
        return [Verdict() for _ in records]


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def input_hash(req: PredictInput) -> str:
    """A hash of the canonical input (sorted features, text), the cache key's last part."""
    body = orjson.dumps({"f": req.features, "t": req.text}, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=16).hexdigest()


class InferenceDataPlane:
    """Everything a prediction needs; shared by Predict, PredictBatch and PredictStream."""

    def __init__(self, settings: CommonSettings, own: InferenceSettings, client: redis.Redis, triton: TritonClient,
                 catalog: VersionCatalog, live: LiveReader, producer: EventProducer | None,
                 guard: OnlineGuard | None = None) -> None:
        self.settings = settings
        self.own = own
        self.redis = client
        self.keys = RedisKeys(settings.redis_prefix)
        self.triton = triton
        self.catalog = catalog
        self.live = live
        self.guard = guard or AllowAll()
        self._producer = producer
        self._scanner = TextScanner()
        self._shadow_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shadow")
        self._rng = random.Random()

    # ------------------------------------------------------------------ public
    def predict(self, req: PredictInput, *, deadline_s: float, identity: str = "") -> PredictOutput:
        """One prediction; raises BulwarkError (the transport maps it to a status)."""
        result = self.predict_many([req], deadline_s=deadline_s, identity=identity)[0]
        if isinstance(result, BulwarkError):
            raise result
        return result

    def predict_many(self, reqs: Sequence[PredictInput], *, deadline_s: float,
                     identity: str = "") -> list[PredictOutput | BulwarkError]:
        """Many predictions; each item answers or fails on its own. Items for the same version go to Triton
        as one batch."""
        started = time.perf_counter()
        results: list[PredictOutput | BulwarkError | None] = [None] * len(reqs)
        groups: dict[tuple[str, int], list[tuple[int, PredictInput, str, int | None, str]]] = {}
        for i, req in enumerate(reqs):
            try:
                self._check_request(req)
                client = req.client_key or identity or "anonymous"
                version, shadow, route = self._route(req, client)
                req.request_id = req.request_id or str(uuid.uuid4())
                groups.setdefault((req.model, version), []).append((i, req, client, shadow, route))
            except BulwarkError as exc:
                results[i] = exc
        for (model, version), items in groups.items():
            self._serve_group(model, version, items, results, started, deadline_s)
        return [r if r is not None else BulwarkError(Reason.INTERNAL, "no result") for r in results]

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _check_request(req: PredictInput) -> None:
        if not req.model:
            raise InvalidArgumentError("model: required (e.g. \"fraud\")")
        if len(req.request_id) > 128:
            raise InvalidArgumentError("request_id: at most 128 characters")

    def _route(self, req: PredictInput, client: str) -> tuple[int, int | None, str]:
        if req.version:
            self.catalog.get(req.model, req.version)  # NOT_FOUND for an unknown version, before any work
            return req.version, None, "pinned"
        state = self.live.get(req.model)
        version, shadow = state.route(client)
        if version == state.candidate and state.stage == "canary":
            route = "canary"
        elif version == state.candidate and state.stage == "full":
            route = "full"
        else:
            route = "live"
        return version, shadow, route

    def _serve_group(self, model: str, version: int, items: list, results: list, started: float,
                     deadline_s: float) -> None:
        try:
            served = self.catalog.get(model, version)
        except BulwarkError as exc:
            for i, *_ in items:
                results[i] = exc
            return
        valid: list[tuple[int, PredictInput, str, int | None, str, list[np.ndarray]]] = []
        for i, req, client, shadow, route in items:
            try:
                valid.append((i, req, client, shadow, route, served.encode([req.record()])))
            except BulwarkError as exc:
                results[i] = exc
        if not valid:
            return
        verdicts = self.guard.check(served, [v[1].record() for v in valid], _stack([v[5] for v in valid]),
                                    valid[0][2])
        todo, keys = [], []
        for (i, req, client, shadow, route, arrays), verdict in zip(valid, verdicts):
            if verdict.action == "reject":
                results[i] = BulwarkError(Reason.FAILED_PRECONDITION, "input rejected by the robustness guard: "
                                          + "; ".join(verdict.reasons or ["out of the model's domain"]))
                continue
            key = self.keys.prediction_cache(model, str(version), input_hash(req))
            todo.append((i, req, client, shadow, route, arrays, verdict))
            keys.append(key)
        cached = self._cache_get(keys)
        misses = [k for k, hit in enumerate(cached) if hit is None]
        probs: dict[int, list[float]] = {k: cached[k] for k in range(len(todo)) if cached[k] is not None}
        if misses:
            remaining = deadline_s - (time.perf_counter() - started)
            if remaining <= 0:
                err = BulwarkError(Reason.DEADLINE_EXCEEDED, "the deadline passed before Triton was called")
                for k in misses:
                    results[todo[k][0]] = err
                misses = []
            else:
                arrays = _stack([todo[k][5] for k in misses])
                try:
                    out = self.triton.infer(model, version, arrays, served.inputs, served.outputs[0],
                                            timeout_s=remaining)
                except BulwarkError as exc:
                    for k in misses:
                        results[todo[k][0]] = exc
                    misses = []
                else:
                    p = softmax(out.astype(np.float64))
                    for row, k in enumerate(misses):
                        probs[k] = [float(x) for x in p[row]]
                    self._cache_put([keys[k] for k in misses], [probs[k] for k in misses])
        latency = (time.perf_counter() - started) * 1000
        for k, (i, req, client, shadow, route, arrays, verdict) in enumerate(todo):
            if k not in probs:
                continue
            pr = probs[k]
            out = PredictOutput(req.request_id, model, version, served.classes[int(np.argmax(pr))], pr,
                                list(served.classes), cached[k] is not None, verdict, route, latency)
            results[i] = out
            self._log(out, req, client, served, shadow, arrays)

    def _cache_get(self, keys: list[str]) -> list[list[float] | None]:
        if not self.own.cache_ttl_s or not keys:
            return [None] * len(keys)
        try:
            raw = self.redis.mget(keys)
        except redis.RedisError:
            return [None] * len(keys)  # a cache outage costs speed, never answers
        return [orjson.loads(v) if v is not None else None for v in raw]

    def _cache_put(self, keys: list[str], values: list[list[float]]) -> None:
        if not self.own.cache_ttl_s or not keys:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for k, v in zip(keys, values):
                pipe.set(k, orjson.dumps(v), ex=self.own.cache_ttl_s)
            pipe.execute()
        except redis.RedisError:
            pass

    # ------------------------------------------------------------------ inference.log
    def _log(self, out: PredictOutput, req: PredictInput, client: str, served: ServedVersion, shadow: int | None,
             arrays: list[np.ndarray]) -> None:
        if shadow is not None:
            self._shadow_pool.submit(self._shadow, out, req, client, served, shadow)
            return
        self._write_log(out, req, client, served, None)

    def _shadow(self, out: PredictOutput, req: PredictInput, client: str, served: ServedVersion, shadow: int) -> None:
        result: dict[str, Any] | None
        try:
            started = time.perf_counter()
            cand = self.catalog.get(out.model, shadow)
            z = self.triton.infer(out.model, shadow, cand.encode([req.record()]), cand.inputs, cand.outputs[0],
                                  timeout_s=self.own.default_deadline_s)
            p = softmax(z.astype(np.float64))[0]
            result = {"version": shadow, "probabilities": [float(x) for x in p],
                      "label": cand.classes[int(np.argmax(p))], "latency_ms": (time.perf_counter() - started) * 1000,
                      "error": None}
        except BulwarkError as exc:
            result = {"version": shadow, "error": exc.reason.value}
        self._write_log(out, req, client, served, result, force=True)

    def _write_log(self, out: PredictOutput, req: PredictInput, client: str, served: ServedVersion,
                   shadow: dict[str, Any] | None, force: bool = False) -> None:
        if self._producer is None or (not force and self._rng.random() >= self.own.log_sample):
            return
        payload: dict[str, Any] = {
            "request_id": out.request_id, "model": out.model, "version": out.version,
            "client": hashlib.blake2b(f"client|{client}".encode(), digest_size=12).hexdigest(),
            "probabilities": out.probabilities, "label": out.label, "latency_ms": round(out.latency_ms, 3),
            "cached": out.cached, "route": out.route, "shadow": shadow,
            "guard": {"action": out.guard.action, "ood_score": out.guard.ood_score,
                      "adversarial_score": out.guard.adversarial_score},
        }
        if served.family.name == "text":
            # Callers may put anything in free text: only a scrubbed copy is logged.
            payload["text"] = self._scanner.redact(req.text)[0]
        else:
            payload["features"] = {f: req.features.get(f) for f in served.spec.fields}
        event = Envelope(type="inference.record", source=SERVICE, subject=out.model, payload=payload,
                         id=f"req-{out.request_id}")
        # Fire and forget: a sampled log never slows or fails an answer (drops are counted).
        self._producer.send_nowait(Output(self.settings.topics.inference_log, event))

    def close(self) -> None:
        """Stop background work."""
        self._shadow_pool.shutdown(wait=True)


def _stack(per_item: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate([item[j] for item in per_item]) for j in range(len(per_item[0]))]
