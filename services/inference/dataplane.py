"""The front door's logic, independent of gRPC: route, guard, cache, infer on Triton, log.

One request: resolve the version (pinned by the caller, or the live one the updater chose, or the canary for
clients the rollout routes there), validate and encode the input for that version, run the guard's online
checks, answer from the Redis cache or from Triton, and write a sampled, pseudonymous record to
inference.log. A shadow version gets a copy of the request off the answer path.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import orjson
import redis
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from bulwark.bus.producer import EventProducer, Output
from bulwark.errors import BulwarkError, InvalidArgumentError, Reason
from bulwark.events import Envelope
from bulwark.guard.extraction import ALLOW, Assessment, ExtractionDefence
from bulwark.guard.online import OnlineGuard, Verdict
from bulwark.live import LiveReader
from bulwark.pii import TextScanner
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from bulwark.tracing import background_thread, tracer
from bulwark.triton.client import TritonClient
from bulwark.versions import ServedVersion, VersionCatalog
from services.inference.coalesce import Call, Coalescer
from services.inference.meters import DoorMeters
from services.inference.settings import InferenceSettings

log = logging.getLogger(__name__)
SERVICE = "inference"
_TRACER = tracer("bulwark.inference")  # a proxy until the service sets its provider


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


class NoGuard:
    """No checks beyond input validation (when no guard is configured)."""

    def count(self, pipe: Any, model: str, client: str, n: int) -> None:
        return None

    def rate_exceeded(self, count: int | None) -> bool:
        return False

    def throttled(self, n: int) -> list[Verdict]:
        return [Verdict() for _ in range(n)]

    def before(self, served: ServedVersion, records: Sequence[dict[str, Any]], client: str) -> list[Verdict]:
        return [Verdict() for _ in records]

    def after(self, served: ServedVersion, verdicts: Sequence[Verdict], logits: np.ndarray,
              hidden: np.ndarray | None, records: Sequence[dict[str, Any]] = ()) -> None:
        return None

    def flagged(self, served: ServedVersion, record: dict[str, Any], verdict: Verdict) -> None:
        return None


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
                 guard: OnlineGuard | NoGuard | None = None, extraction: ExtractionDefence | None = None,
                 meters: DoorMeters | None = None) -> None:
        self.settings = settings
        self.own = own
        self.redis = client
        self.keys = RedisKeys(settings.redis_prefix)
        self.triton = triton
        self.catalog = catalog
        self.live = live
        self.guard = guard or NoGuard()
        self.extraction = extraction
        self._producer = producer
        self._meters = meters
        self._scanner = TextScanner()
        self._shadow_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shadow")
        self._cache_writer = CacheWriter(self.redis, self.own.cache_ttl_s)
        self._log_queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._log_thread = threading.Thread(target=self._log_loop, name="log-writer", daemon=True)
        self._log_thread.start()
        self._rng = random.Random()
        self._coalescer: Coalescer[PredictInput, PredictOutput] | None = None
        if own.coalesce_slots:
            self._coalescer = Coalescer(self._serve_coalesced, slots=own.coalesce_slots,
                                        max_batch=own.coalesce_max_batch)

    # ------------------------------------------------------------------ public
    def predict(self, req: PredictInput, *, deadline_s: float, identity: str = "") -> PredictOutput:
        """One prediction; raises BulwarkError (the transport maps it to a status). Concurrent calls are
        served in batches (`coalesce.py`) unless coalescing is off."""
        if self._coalescer is not None:
            result = self._coalescer.call(req, deadline_s=deadline_s, identity=identity)
        else:
            result = self.predict_many([req], deadline_s=deadline_s, identity=identity)[0]
        if isinstance(result, BulwarkError):
            raise result
        return result

    def _serve_coalesced(self, calls: Sequence[Call[PredictInput, PredictOutput]]) -> None:
        """One batch of concurrent single calls, through `predict_many` (spans linked to every caller)."""
        now = time.perf_counter()
        if len(calls) == 1:  # the usual case at low load: no batch span
            calls[0].result = self.predict_many([calls[0].req], deadline_s=calls[0].remaining_s(now),
                                                identity=calls[0].identity)[0]
            return
        links = [trace.Link(c.context) for c in calls if c.context.is_valid]
        with _TRACER.start_as_current_span("coalesced batch", links=links, attributes={"bulwark.batch": len(calls)}):
            results = self.predict_many([c.req for c in calls], deadline_s=max(c.remaining_s(now) for c in calls),
                                        identities=[c.identity for c in calls])
        for c, r in zip(calls, results):
            c.result = r

    def predict_many(self, reqs: Sequence[PredictInput], *, deadline_s: float, identity: str = "",
                     identities: Sequence[str] | None = None) -> list[PredictOutput | BulwarkError]:
        """Many predictions; each item answers or fails on its own. Items for the same version go to Triton
        as one batch. `identities`, when given, is each request's authenticated caller (a coalesced batch of
        single calls); otherwise every request is `identity`'s."""
        started = time.perf_counter()
        results: list[PredictOutput | BulwarkError | None] = [None] * len(reqs)
        idents = list(identities) if identities is not None else [identity] * len(reqs)
        groups: dict[tuple[str, int], list[tuple[int, PredictInput, str, int | None, str]]] = {}
        for i, req in enumerate(reqs):
            try:
                self._check_request(req)
                client = req.client_key or idents[i] or "anonymous"
                version, shadow, route = self._route(req, client)
                req.request_id = req.request_id or str(uuid.uuid4())
                groups.setdefault((req.model, version), []).append((i, req, client, shadow, route))
            except BulwarkError as exc:
                results[i] = exc
        for (model, version), items in groups.items():
            self._serve_group(model, version, items, results, started, deadline_s, idents)
        out = [r if r is not None else BulwarkError(Reason.INTERNAL, "no result") for r in results]
        if self._meters is not None:
            self._meters.record([r.model for r in reqs], out)
        return out

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
                     deadline_s: float, idents: Sequence[str]) -> None:
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
        records = [v[1].record() for v in valid]
        # Spans hold ids, sizes and outcomes only, never a feature value.
        with _TRACER.start_as_current_span("guard before", attributes={
                "bulwark.model": model, "bulwark.version": version, "bulwark.batch": len(records)}) as span:
            verdicts = self.guard.before(served, records, valid[0][2])
            span.set_attribute("bulwark.rejected", sum(v.action == "reject" for v in verdicts))
        todo = []
        for item, record, verdict in zip(valid, records, verdicts):
            if verdict.action == "reject":
                results[item[0]] = _rejected(verdict)
            else:
                todo.append((*item, record, verdict))
        if not todo:
            return
        keys = [self.keys.prediction_cache(model, str(version), input_hash(t[1])) for t in todo]
        # Rate limits and extraction budgets are per caller, and a coalesced group may hold several. The
        # extraction budget follows the authenticated caller when there is one (a client key is the caller's
        # to change per call).
        parties: dict[tuple[str, str], list[int]] = {}
        for k, t in enumerate(todo):
            principal = idents[t[0]] if idents[t[0]] not in ("", "anonymous") else t[2]
            parties.setdefault((t[2], principal), []).append(k)
        with _TRACER.start_as_current_span("cache lookup", attributes={"bulwark.keys": len(keys)}) as span:
            cached, counts, xas = self._lookup(keys, model, served, parties, [t[6] for t in todo])
            span.set_attribute("bulwark.cache.hits", sum(c is not None for c in cached))
        xa_of: dict[int, Assessment] = {}
        for party, ks in parties.items():
            if self.guard.rate_exceeded(counts[party]):
                for k, verdict in zip(ks, self.guard.throttled(len(ks))):
                    results[todo[k][0]] = _rejected(verdict)
            elif xas[party].reject is not None:
                for k in ks:
                    results[todo[k][0]] = xas[party].reject
            else:
                xa_of.update((k, xas[party]) for k in ks)
        misses = [k for k, hit in enumerate(cached) if hit is None and k in xa_of]
        answers: dict[int, dict[str, Any]] = {k: cached[k] for k in xa_of if cached[k] is not None}
        if misses:
            remaining = deadline_s - (time.perf_counter() - started)
            try:
                if remaining <= 0:
                    raise BulwarkError(Reason.DEADLINE_EXCEEDED, "the deadline passed before Triton was called")
                with _TRACER.start_as_current_span("triton infer", attributes={
                        "bulwark.model": model, "bulwark.version": version, "bulwark.batch": len(misses)}):
                    outs = self.triton.infer(model, version, _stack([todo[k][5] for k in misses]), served.inputs,
                                             served.outputs, timeout_s=remaining)
            except BulwarkError as exc:
                for k in misses:
                    results[todo[k][0]] = exc
            else:
                logits = outs[0].astype(np.float64)
                fresh = [todo[k][7] for k in misses]
                self.guard.after(served, fresh, logits, outs[1] if len(outs) > 1 else None,
                                 [todo[k][6] for k in misses])
                probs = softmax(logits)
                if self.extraction is not None:
                    for party, ks in parties.items():
                        rows = [row for row, k in enumerate(misses) if k in ks]
                        if rows and xas[party].who:
                            self.extraction.observe(xas[party].who, probs[rows], [fresh[r].ood_score for r in rows])
                for row, k in enumerate(misses):
                    answers[k] = {"p": [float(x) for x in probs[row]], "g": _verdict_doc(fresh[row])}
                self._cache_put([keys[k] for k in misses], [answers[k] for k in misses])
        latency = (time.perf_counter() - started) * 1000
        for k, (i, req, client, shadow, route, _arrays, record, before) in enumerate(todo):
            if k not in answers:
                continue
            verdict = _merge(before, answers[k]["g"])
            if verdict.action == "reject":
                results[i] = _rejected(verdict)
                continue
            pr = answers[k]["p"]
            label = served.classes[max(range(len(pr)), key=pr.__getitem__)]  # argmax of a list, no numpy round trip
            out = PredictOutput(req.request_id, model, version, label, pr, list(served.classes), cached[k] is not None,
                                verdict, route, latency)
            results[i] = out
            if verdict.action == "flag":
                self.guard.flagged(served, record, verdict)
            self._log(out, req, client, served, shadow)
            if self.extraction is not None:
                results[i] = self.extraction.harden(out, xa_of[k])  # inference.log keeps the full answer

    def _lookup(self, keys: list[str], model: str, served: ServedVersion, parties: dict[tuple[str, str], list[int]],
                records: list[dict[str, Any]]) -> tuple[list[dict[str, Any] | None], dict[tuple[str, str], int | None],
                                                         dict[tuple[str, str], Assessment]]:
        """Cached answers, and each caller's rate count and extraction assessment, in one Redis round trip."""
        counts: dict[tuple[str, str], int | None] = {p: None for p in parties}
        xas: dict[tuple[str, str], Assessment] = {p: ALLOW for p in parties}
        try:
            pipe = self.redis.pipeline(transaction=False)
            if self.own.cache_ttl_s:
                pipe.mget(keys)
            at: dict[tuple[str, str], tuple[int, bool, Any]] = {}
            fields = (served.profile or {}).get("fields") or {}
            for (client, principal), ks in parties.items():
                rate_at = len(pipe)
                self.guard.count(pipe, model, client, len(ks))
                counted = len(pipe) > rate_at
                ticket = None
                if self.extraction is not None:
                    ticket = self.extraction.queue(pipe, model, principal, [records[k] for k in ks], fields)
                at[(client, principal)] = (rate_at, counted, ticket)
            # The `cache lookup` span times this round trip; the Redis instrumentation's own span for it
            # would cost about 0.1 ms of every answer, sampled or not.
            with suppress_instrumentation():
                replies = pipe.execute() if len(pipe) else []
        except redis.RedisError:
            return [None] * len(keys), counts, xas  # a Redis outage costs speed (no cache), never answers
        raw = replies[0] if self.own.cache_ttl_s else [None] * len(keys)
        for party, (rate_at, counted, ticket) in at.items():
            counts[party] = replies[rate_at] if counted else None
            if ticket is not None:
                xas[party] = self.extraction.assess(ticket, replies)
        return [orjson.loads(v) if v is not None else None for v in raw], counts, xas

    def _cache_put(self, keys: list[str], values: list[dict[str, Any]]) -> None:
        # The answer does not wait for its cache write: a writer thread pipelines what is pending.
        if self.own.cache_ttl_s and keys:
            self._cache_writer.put([(k, orjson.dumps(v)) for k, v in zip(keys, values)])

    # ------------------------------------------------------------------ inference.log
    def _log(self, out: PredictOutput, req: PredictInput, client: str, served: ServedVersion,
             shadow: int | None) -> None:
        """Sample the answer into inference.log; a shadowed request is always logged, with the shadow's answer."""
        if shadow is not None:
            self._shadow_pool.submit(self._shadow, out, req, client, served, shadow)
        elif self._producer is not None and self._rng.random() < self.own.log_sample:
            # Built and sent by the log thread: the answer does not wait for its log record.
            self._log_queue.put((out, req, client, served))

    def _log_loop(self) -> None:
        while (item := self._log_queue.get()) is not None:
            try:
                self._write_log(*item, None)
            except Exception as exc:  # noqa: BLE001 - a log record never takes the front door down
                log.warning("inference.log record not written error=%s", type(exc).__name__)

    def _shadow(self, out: PredictOutput, req: PredictInput, client: str, served: ServedVersion, shadow: int) -> None:
        result: dict[str, Any] | None
        try:
            started = time.perf_counter()
            cand = self.catalog.get(out.model, shadow)
            z = self.triton.infer(out.model, shadow, cand.encode([req.record()]), cand.inputs, cand.outputs[:1],
                                  timeout_s=self.own.default_deadline_s)[0]
            p = softmax(z.astype(np.float64))[0]
            result = {"version": shadow, "probabilities": [float(x) for x in p],
                      "label": cand.classes[int(np.argmax(p))], "latency_ms": (time.perf_counter() - started) * 1000,
                      "error": None}
        except BulwarkError as exc:
            result = {"version": shadow, "error": exc.reason.value}
        self._write_log(out, req, client, served, result)

    def _write_log(self, out: PredictOutput, req: PredictInput, client: str, served: ServedVersion,
                   shadow: dict[str, Any] | None) -> None:
        if self._producer is None:
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
        self._log_queue.put(None)
        self._log_thread.join(5.0)
        self._cache_writer.close()


class CacheWriter:
    """Writes cache entries off the request path: one thread, each round trip pipelines everything pending.

    A write lost to a Redis outage or a crash only costs a later cache miss, never a wrong answer.
    """

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._queue: queue.SimpleQueue[list[tuple[str, bytes]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=background_thread(self._run), name="cache-writer", daemon=True)
        self._thread.start()

    def put(self, entries: list[tuple[str, bytes]]) -> None:
        """Queue entries for writing."""
        self._queue.put(entries)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [e for item in batch if item for e in item]
            if entries:
                try:
                    pipe = self._client.pipeline(transaction=False)
                    for key, value in entries:
                        pipe.set(key, value, ex=self._ttl_s)
                    pipe.execute()
                except redis.RedisError:
                    pass
            if None in batch:
                return

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is pending, then stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)


def _verdict_doc(v: Verdict) -> dict[str, Any]:
    return {"action": v.action, "ood": v.ood_score, "adv": v.adversarial_score, "reasons": v.reasons,
            "code": v.code.value}


def _merge(before: Verdict, doc: dict[str, Any]) -> Verdict:
    """The pre-model verdict combined with the (possibly cached) post-model one."""
    out = Verdict(before.action, doc["ood"], doc["adv"], list(before.reasons), before.code)
    if doc["action"] != "allow":
        # The stored verdict already holds the range reasons (they depend only on the input, which the cache
        # key hashes): add only what the model's scores said.
        for reason in [r for r in doc["reasons"] if r not in before.reasons] or [doc["action"]]:
            out.escalate(doc["action"], reason, Reason(doc["code"]))
    return out


def _rejected(v: Verdict) -> BulwarkError:
    return BulwarkError(v.code, "input rejected by the robustness guard: " + "; ".join(v.reasons or ["unsafe input"]))


def _stack(per_item: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate([item[j] for item in per_item]) for j in range(len(per_item[0]))]
