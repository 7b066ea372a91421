"""The explainer's logic, independent of gRPC: resolve the version, encode the input, attribute, cache.

One request: check its limits, find the input (sent, or logged in inference.log under a request id), resolve
the version (pinned, or the live one), encode the input in that version's feature space, pick the form the
method needs (the trained eager model for gradients, the served form otherwise), answer from the Redis cache
or attribute, and report per field (or per token) with the baseline, the outputs and the convergence check.

Convergence: delta = sum(attributions) - (F(input) - F(baseline)), Captum's definition; the relative delta
divides |delta| by |F(input) - F(baseline)|, the change the attributions decompose. (Dividing by |F(input)|
instead would call an exact explanation of an input near the decision boundary, where F is near 0,
unconverged.) Converged means |delta| <= tolerance * |F(input) - F(baseline)| + tolerance_abs, numpy.isclose's
rule: the small absolute term keeps float rounding on a near-zero change from reading as a failure. When
integrated gradients miss the bound, steps double up to `refine_max_steps` while the call's deadline allows;
the response says how many steps were used.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import orjson
import redis
import torch

from bulwark.errors import BulwarkError, InvalidArgumentError, NotFoundError, Reason, UnavailableError
from bulwark.live import LiveReader
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from services.explainer.methods import METHODS, AttributionResult, ExplainModel
from services.explainer.models import Encoded, ExplainableVersion, VersionLoader
from services.explainer.settings import ExplainerSettings

log = logging.getLogger(__name__)
SERVICE = "explainer"


@dataclass
class ExplainInput:
    """One explanation request, transport-free."""

    model: str
    version: int | None = None
    features: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    request_id: str = ""
    method: str = ""
    steps: int = 0
    target: str = ""


@dataclass
class Convergence:
    """How well the attributions account for the change they explain."""

    delta: float
    relative_delta: float
    converged: bool
    steps: int


@dataclass
class ExplainOutput:
    """One explanation."""

    model: str
    version: int
    family: str
    method: str
    target: str
    attributions: list[tuple[str, float]]
    baseline: dict[str, float]
    baseline_kind: str
    output: float
    baseline_output: float
    convergence: Convergence
    model_form: str
    artifact_digest: str
    cached: bool = False
    request_id: str = ""

    def to_cache(self) -> bytes:
        """The cached form (without the per-call fields)."""
        doc = asdict(self)
        del doc["cached"], doc["request_id"]
        return orjson.dumps(doc)

    @classmethod
    def from_cache(cls, raw: bytes, request_id: str) -> ExplainOutput:
        """Inverse of `to_cache`, marked as cached."""
        doc = orjson.loads(raw)
        doc["attributions"] = [tuple(a) for a in doc["attributions"]]
        doc["convergence"] = Convergence(**doc["convergence"])
        return cls(**doc, cached=True, request_id=request_id)


def relative(delta: float, change: float) -> float:
    """|delta| / |change|; 0 for an exact zero, infinity when there is no change to decompose but a gap."""
    if abs(delta) < 1e-12:
        return 0.0
    return abs(delta) / abs(change) if change else float("inf")


class ExplainerDataPlane:
    """Everything an explanation needs; shared by Explain, ExplainBatch and the inference.log consumer."""

    def __init__(self, settings: CommonSettings, own: ExplainerSettings, client: redis.Redis, loader: VersionLoader,
                 live: LiveReader | None) -> None:
        self.settings = settings
        self.own = own
        self.redis = client
        self.keys = RedisKeys(settings.redis_prefix)
        self.loader = loader
        self.live = live

    # ------------------------------------------------------------------ public
    def explain(self, req: ExplainInput, *, deadline_s: float | None = None) -> ExplainOutput:
        """One explanation; raises BulwarkError (the transport maps it to a status)."""
        result = self.explain_many([req], deadline_s=deadline_s)[0]
        if isinstance(result, BulwarkError):
            raise result
        return result

    def explain_many(self, reqs: Sequence[ExplainInput], *,
                     deadline_s: float | None = None) -> list[ExplainOutput | BulwarkError]:
        """Many explanations; each item answers or fails on its own."""
        started = time.perf_counter()
        budget = deadline_s if deadline_s is not None else self.own.default_deadline_s
        out: list[ExplainOutput | BulwarkError] = []
        for req in reqs:
            if time.perf_counter() - started >= budget:
                out.append(BulwarkError(Reason.DEADLINE_EXCEEDED, "the deadline passed before this item was "
                                        "explained; send fewer items or a longer deadline"))
                continue
            try:
                out.append(self._one(req, started, budget))
            except BulwarkError as exc:
                out.append(exc)
            except Exception as exc:  # one item's bug must not fail its neighbours
                log.error("explanation failed model=%s exception=%s", req.model, type(exc).__name__)
                out.append(BulwarkError(Reason.INTERNAL, "internal error explaining this item; see the explainer log"))
        return out

    def remember(self, payload: dict[str, Any]) -> None:
        """Keep a logged prediction's input for `Explain(request_id=...)` (the inference.log consumer calls
        this). Features are the clean event's pseudonymous values; text was scrubbed before it was logged."""
        doc = {"version": payload["version"], "label": payload.get("label", "")}
        if "text" in payload:
            doc["text"] = payload["text"]
        else:
            doc["features"] = payload.get("features") or {}
        try:
            self.redis.set(self.keys.explanation_request(payload["model"], payload["request_id"]), orjson.dumps(doc),
                           ex=self.own.request_ttl_s)
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for logged requests ({type(exc).__name__})") from None

    # ------------------------------------------------------------------ steps
    def _one(self, req: ExplainInput, started: float, budget: float) -> ExplainOutput:
        if not req.model:
            raise InvalidArgumentError('model: required (e.g. "fraud")')
        method_cls = METHODS.get(req.method or self.own.default_method)
        if req.steps < 0:
            raise InvalidArgumentError("steps: must be positive, or empty for the default")
        steps = req.steps or self.own.default_steps
        if steps > self.own.max_steps:
            raise BulwarkError(Reason.RESOURCE_EXHAUSTED, f"steps: {steps} exceeds the limit of {self.own.max_steps} "
                               "(BULWARK_EXPLAINER_MAX_STEPS)")
        features, text, version, target = req.features, req.text, req.version, req.target
        if features and text:
            raise InvalidArgumentError("features and text: send one of them, not both")
        if not features and not text:
            if not req.request_id:
                raise InvalidArgumentError("features or text: one is required, or the request_id of a logged "
                                           "prediction")
            logged = self._logged(req.model, req.request_id)
            features, text = logged.get("features") or {}, logged.get("text", "")
            version = version or int(logged["version"])
            target = target or logged.get("label", "")
        version = version or self._live(req.model)
        ev = self.loader.get(req.model, version)
        enc = ev.encode(features, text)
        form = ev.trained if method_cls.needs_gradients else ev.served()
        t = self._target(ev, form, enc, target)
        label = ev.classes[t]
        digest = hashlib.blake2b(enc.digest_bytes, digest_size=16).hexdigest()
        key = self.keys.explanation_cache(req.model, str(version), method_cls.name, f"{steps}:{label}:{digest}")
        hit = self._cache_get(key)
        if hit is not None:
            return ExplainOutput.from_cache(hit, req.request_id)
        result = self.attribute(method_cls(form), enc, t, steps, deadline_s=budget - (time.perf_counter() - started))
        out = self._output(ev, method_cls.name, label, enc, result, form, req.request_id)
        self._cache_put(key, out)
        return out

    def attribute(self, method: Any, enc: Encoded, target: int, steps: int, *,
                  deadline_s: float = float("inf")) -> AttributionResult:
        """Run `method`, doubling the steps of an integrating method until it converges, reaches
        `refine_max_steps`, or the next round would not fit in `deadline_s`."""
        started = time.perf_counter()
        while True:
            round_started = time.perf_counter()
            r = method.attribute(enc.inputs, enc.baselines, target=target, steps=steps, groups=enc.groups,
                                 n_groups=len(enc.names))
            if not method.integrates or self.converged(r):
                return r
            took = time.perf_counter() - round_started
            if steps * 2 > self.own.refine_max_steps or time.perf_counter() - started + 2.5 * took > deadline_s:
                return r
            steps *= 2

    def converged(self, r: AttributionResult) -> bool:
        """Whether the attributions add up to the output change within the bound (see the module docstring)."""
        return abs(r.delta) <= self.own.tolerance * abs(r.change) + self.own.tolerance_abs

    def _output(self, ev: ExplainableVersion, method: str, label: str, enc: Encoded, r: AttributionResult,
                form: ExplainModel, request_id: str) -> ExplainOutput:
        pairs = [(name, float(r.values[i])) for i, name in enumerate(enc.names) if i not in enc.skip]
        if ev.family.name != "text":
            pairs.sort(key=lambda p: -abs(p[1]))  # strongest first; tokens keep their reading order
        rel = relative(r.delta, r.change)
        conv = Convergence(r.delta, min(rel, 1e308), self.converged(r), r.steps)
        return ExplainOutput(ev.model, ev.version, ev.family.name, method, label, pairs, dict(ev.baseline.by_feature),
                             ev.baseline.kind, r.output, r.baseline_output, conv, form.form, form.digest,
                             request_id=request_id)

    def _target(self, ev: ExplainableVersion, form: ExplainModel, enc: Encoded, target: str) -> int:
        if target:
            if target not in ev.classes:
                raise InvalidArgumentError(f"target: unknown class; this model's classes are {', '.join(ev.classes)}")
            return ev.classes.index(target)
        with torch.no_grad():
            return int(form.logits(*enc.inputs)[0].argmax())

    def _live(self, model: str) -> int:
        if self.live is None:
            raise InvalidArgumentError("version: required (this explainer reads no live state)")
        state = self.live.get(model)
        version = state.live_version if state.live_version is not None else state.candidate
        if version is None:
            raise NotFoundError(f"model {model!r} has no live version yet; name a version")
        return int(version)

    def _logged(self, model: str, request_id: str) -> dict[str, Any]:
        try:
            raw = self.redis.get(self.keys.explanation_request(model, request_id))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for logged requests ({type(exc).__name__})") from None
        if raw is None:
            hours = self.own.request_ttl_s / 3600
            raise NotFoundError(f"request_id: no logged prediction of model {model!r} under this id; logged inputs "
                                f"are kept {hours:g} h (BULWARK_EXPLAINER_REQUEST_TTL_S), and only the predictions "
                                "the front door samples into inference.log are logged")
        return orjson.loads(raw)

    def _cache_get(self, key: str) -> bytes | None:
        if not self.own.cache_ttl_s:
            return None
        try:
            return self.redis.get(key)
        except redis.RedisError:
            return None  # a cache outage costs time, never answers

    def _cache_put(self, key: str, out: ExplainOutput) -> None:
        if not self.own.cache_ttl_s:
            return
        try:
            self.redis.set(key, out.to_cache(), ex=self.own.cache_ttl_s)
        except redis.RedisError:
            pass
