"""The explainer's data plane and gRPC adapter on an in-memory model: naming, baseline, caching, request ids,
limits and errors, refinement, batches; and the summaries' pure parts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from bulwark.api.v1 import explain_pb2
from bulwark.errors import BulwarkError, NotFoundError, Reason
from bulwark.families import FAMILIES, LoadedModel
from bulwark.features import REFERENCE_FEATURES, FeatureSpec
from bulwark.health import ServiceStats
from bulwark.live import LiveState
from bulwark.reference import ReferenceGenerator
from bulwark.settings import CommonSettings
from services.explainer.dataplane import ExplainerDataPlane, ExplainInput
from services.explainer.methods import ExplainModel
from services.explainer.models import ExplainableVersion, explainable
from services.explainer.servicer import ExplainServicer, to_response
from services.explainer.settings import ExplainerSettings
from services.explainer.summaries import SummaryHandler, importance, increments, sampled

_GEN = ReferenceGenerator(seed=3, customers=300, pii_note_fraction=0.0)
RECORDS = [_GEN.payload() for _ in range(300)]


class FakeRedis:
    """GET/SET with TTLs in a dict: the only Redis calls the data plane makes."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttl: dict[str, int] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def set(self, key: str, value: bytes, ex: int | None = None) -> None:
        self.data[key] = value
        self.ttl[key] = ex or -1

    def register_script(self, body: str) -> Any:
        return lambda **_: pytest.fail("the summary script ran in a unit test")


class FakeLoader:
    def __init__(self, *versions: ExplainableVersion) -> None:
        self.versions = {(v.model, v.version): v for v in versions}

    def get(self, model: str, version: int) -> ExplainableVersion:
        if (model, version) not in self.versions:
            raise NotFoundError(f"model {model!r} has no version {version}")
        return self.versions[(model, version)]


class FakeLive:
    def get(self, model: str) -> LiveState:
        if model != "fraud":
            raise NotFoundError(f"model {model!r} is not deployed")
        return LiveState(model=model, live_version=1)


def _version() -> ExplainableVersion:
    spec = FeatureSpec.fit(RECORDS, REFERENCE_FEATURES)
    family = FAMILIES.get("mlp")
    torch.manual_seed(1)
    module = family.build(spec, {"hidden": [16], "dropout": 0.0}).eval()
    quantized = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
    served = ExplainModel("mlp", torch.jit.script(quantized), "quantized", "q-digest")
    profile = {"input_space": {"mean": spec.encode(RECORDS).mean(0).tolist()}}
    return explainable("fraud", 1, LoadedModel(family, module, {}, spec), digest="t-digest", profile=profile,
                       load_served=lambda: served)


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def plane(redis: FakeRedis) -> ExplainerDataPlane:
    return ExplainerDataPlane(CommonSettings(), ExplainerSettings(), redis, FakeLoader(_version()), FakeLive())


def _features(i: int = 0) -> dict[str, Any]:
    return {f["name"]: RECORDS[i][f["name"]] for f in REFERENCE_FEATURES}


def test_attributions_are_per_field_strongest_first_with_baseline_and_convergence(plane: ExplainerDataPlane) -> None:
    out = plane.explain(ExplainInput("fraud", 1, _features()))
    names = [n for n, _ in out.attributions]
    assert sorted(names) == sorted(f["name"] for f in REFERENCE_FEATURES)
    assert [abs(v) for _, v in out.attributions] == sorted((abs(v) for _, v in out.attributions), reverse=True)
    assert out.method == "integrated_gradients" and out.model_form == "trained" and out.artifact_digest == "t-digest"
    assert out.baseline_kind == "training_mean" and out.target in ("legitimate", "fraud")
    assert 5 < out.baseline["amount"] < 500 and 0 < out.baseline["country=DE"] < 1 and "country" not in out.baseline
    c = out.convergence
    assert c.converged and c.steps >= 50
    assert math.isclose(sum(v for _, v in out.attributions) - (out.output - out.baseline_output), c.delta, abs_tol=1e-6)
    assert c.relative_delta == pytest.approx(abs(c.delta) / abs(out.output - out.baseline_output))


def test_repeat_request_is_cached_per_version_method_steps_and_target(plane: ExplainerDataPlane,
                                                                     redis: FakeRedis) -> None:
    first = plane.explain(ExplainInput("fraud", 1, _features(4), request_id="r1"))
    again = plane.explain(ExplainInput("fraud", 1, _features(4), request_id="r2"))
    assert not first.cached and again.cached and again.request_id == "r2"
    assert again.attributions == first.attributions and again.convergence == first.convergence
    assert not plane.explain(ExplainInput("fraud", 1, _features(4), steps=64)).cached
    other = "legitimate" if first.target == "fraud" else "fraud"
    assert not plane.explain(ExplainInput("fraud", 1, _features(4), target=other)).cached
    assert len(redis.data) == 3 and set(redis.ttl.values()) == {3600}


def test_feature_ablation_runs_on_the_served_form(plane: ExplainerDataPlane) -> None:
    out = plane.explain(ExplainInput("fraud", 1, _features(2), method="feature_ablation"))
    assert out.model_form == "quantized" and out.artifact_digest == "q-digest"
    assert out.convergence.steps == 0 and len(out.attributions) == len(REFERENCE_FEATURES)


@pytest.mark.parametrize(
    ("change", "reason", "fragment"),
    [
        # a missing field, named
        (lambda r: r.features.pop("amount"), Reason.INVALID_ARGUMENT, "features.amount: missing"),
        # a wrong type, named
        (lambda r: r.features.update(amount="lots"), Reason.INVALID_ARGUMENT, "features.amount: expected a number"),
        (lambda r: r.features.update(device_new=1.0), Reason.INVALID_ARGUMENT, "features.device_new: expected a flag"),
        # an extra field: counted, never echoed (a field name may itself be personal)
        (lambda r: r.features.update(email="x"), Reason.INVALID_ARGUMENT, "1 field(s) this model does not take"),
        (lambda r: setattr(r, "steps", 5000), Reason.RESOURCE_EXHAUSTED, "limit of 1000"),
        (lambda r: setattr(r, "steps", -1), Reason.INVALID_ARGUMENT, "steps: must be positive"),
        (lambda r: setattr(r, "method", "kernel_shap"), Reason.INVALID_ARGUMENT,
         "feature_ablation, integrated_gradients"),
        (lambda r: setattr(r, "target", "maybe"), Reason.INVALID_ARGUMENT, "classes are legitimate, fraud"),
        (lambda r: setattr(r, "model", ""), Reason.INVALID_ARGUMENT, "model: required"),
        (lambda r: setattr(r, "model", "no-such-model"), Reason.NOT_FOUND, "no-such-model"),
        (lambda r: setattr(r, "version", 9), Reason.NOT_FOUND, "no version 9"),
        (lambda r: setattr(r, "text", "a note"), Reason.INVALID_ARGUMENT, "send one of them"),
        (lambda r: r.features.clear(), Reason.INVALID_ARGUMENT, "features or text: one is required"),
    ],
)
def test_bad_requests_name_the_problem(plane: ExplainerDataPlane, change, reason: Reason, fragment: str) -> None:
    req = ExplainInput("fraud", 1, _features(1))
    change(req)
    with pytest.raises(BulwarkError) as info:
        plane.explain(req)
    assert info.value.reason == reason and fragment in info.value.message
    assert "email" not in info.value.message


def test_text_sent_to_a_tabular_model_is_invalid(plane: ExplainerDataPlane) -> None:
    with pytest.raises(BulwarkError) as info:
        plane.explain(ExplainInput("fraud", 1, text="urgent wire transfer"))
    assert info.value.reason == Reason.INVALID_ARGUMENT and "tabular model" in info.value.message


def test_unpinned_version_is_the_live_one(plane: ExplainerDataPlane) -> None:
    assert plane.explain(ExplainInput("fraud", None, _features(3))).version == 1


def test_logged_request_is_explained_by_request_id_with_its_label_as_target(plane: ExplainerDataPlane,
                                                                           redis: FakeRedis) -> None:
    plane.remember({"request_id": "req-7", "model": "fraud", "version": 1, "label": "legitimate",
                    "features": _features(7)})
    assert set(redis.ttl.values()) == {86_400}
    out = plane.explain(ExplainInput("fraud", None, request_id="req-7"))
    assert out.target == "legitimate" and out.version == 1 and out.request_id == "req-7"
    direct = plane.explain(ExplainInput("fraud", 1, _features(7), target="legitimate"))
    assert direct.cached and direct.attributions == out.attributions


def test_unknown_request_id_is_not_found_saying_how_long_records_are_kept(plane: ExplainerDataPlane) -> None:
    with pytest.raises(NotFoundError) as info:
        plane.explain(ExplainInput("fraud", None, request_id="never-logged"))
    assert "kept 24 h" in info.value.message and "BULWARK_EXPLAINER_REQUEST_TTL_S" in info.value.message


def test_refinement_doubles_steps_up_to_its_cap(redis: FakeRedis) -> None:
    strict = ExplainerSettings(tolerance=1e-9, tolerance_abs=0.0, refine_max_steps=200, cache_ttl_s=0)
    out = ExplainerDataPlane(CommonSettings(), strict, redis, FakeLoader(_version()), None).explain(
        ExplainInput("fraud", 1, _features(5)))
    assert out.convergence.steps == 200 and not out.convergence.converged
    off = ExplainerSettings(tolerance=1e-9, tolerance_abs=0.0, refine_max_steps=0, cache_ttl_s=0)
    out = ExplainerDataPlane(CommonSettings(), off, redis, FakeLoader(_version()), None).explain(
        ExplainInput("fraud", 1, _features(5)))
    assert out.convergence.steps == 50


def test_batch_items_answer_independently(plane: ExplainerDataPlane) -> None:
    results = plane.explain_many([ExplainInput("fraud", 1, _features(0)), ExplainInput("fraud", 1, {"amount": 3.0}),
                                  ExplainInput("fraud", 1, _features(1))])
    assert not isinstance(results[0], BulwarkError) and not isinstance(results[2], BulwarkError)
    assert isinstance(results[1], BulwarkError) and results[1].reason == Reason.INVALID_ARGUMENT


class _Context:
    def time_remaining(self) -> None:
        return None


def test_explain_batch_limits_items_and_carries_errors_per_item(plane: ExplainerDataPlane) -> None:
    from bulwark.api.v1 import common_pb2

    good = explain_pb2.ExplainRequest(model="fraud", version=1, request_id="ok", features={
        k: common_pb2.Value(flag=v) if isinstance(v, bool) else common_pb2.Value(number=float(v))
        if isinstance(v, (int, float)) else common_pb2.Value(category=v) for k, v in _features(0).items()})
    bad = explain_pb2.ExplainRequest(model="fraud", version=1, request_id="bad", method="nope")
    servicer = ExplainServicer(plane)
    answer = servicer.ExplainBatch(explain_pb2.ExplainBatchRequest(items=[good, bad, good]), _Context())
    assert [i.request_id for i in answer.items] == ["ok", "bad", "ok"]
    assert answer.items[1].error.reason == "INVALID_ARGUMENT" and answer.items[1].error.code == 3
    assert answer.items[0].attributions and answer.items[0].convergence.steps >= 50 and not answer.items[0].error.reason
    with pytest.raises(BulwarkError) as info:
        servicer.ExplainBatch(explain_pb2.ExplainBatchRequest(items=[good] * 65), _Context())
    assert info.value.reason == Reason.RESOURCE_EXHAUSTED and "limit of 64" in info.value.message


def test_response_carries_baseline_form_and_digest(plane: ExplainerDataPlane) -> None:
    resp = to_response(plane.explain(ExplainInput("fraud", 1, _features(0))))
    assert resp.baseline_kind == "training_mean" and resp.model_form == "trained" and resp.family == "mlp"
    assert resp.artifact_digest == "t-digest" and "currency=EUR" in resp.baseline


def test_sampling_is_stable_and_near_its_share() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    picks = [sampled(i, 0.05) for i in ids]
    assert picks == [sampled(i, 0.05) for i in ids] and 0.04 < sum(picks) / len(ids) < 0.06
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])


def test_summary_means_come_from_sums_and_count(plane: ExplainerDataPlane) -> None:
    out = plane.explain(ExplainInput("fraud", 1, _features(0)))
    inc = increments(out)
    assert inc[f"abs:{out.attributions[0][0]}"] == abs(out.attributions[0][1])
    n, rows = importance({"n": 4.0, "abs:amount": 2.0, "sum:amount": -2.0, "abs:country": 0.4, "sum:country": 0.4}, 10)
    assert n == 4 and rows == [{"feature": "amount", "mean_abs": 0.5, "mean": -0.5},
                               {"feature": "country", "mean_abs": 0.1, "mean": 0.1}]


def test_summary_handler_remembers_every_record_and_skips_unknown_versions(plane: ExplainerDataPlane,
                                                                          redis: FakeRedis) -> None:
    from bulwark.events import Envelope

    stats = ServiceStats()
    handler = SummaryHandler(CommonSettings(), ExplainerSettings(sample_share=1.0), plane, redis, stats)
    event = Envelope(type="inference.record", source="inference", payload={
        "request_id": "gone-1", "model": "fraud", "version": 9, "label": "fraud", "features": _features(0)})
    assert list(handler.handle(event, None)) == []  # type: ignore[arg-type]
    assert stats.extra["summary_skipped"] == "1"
    assert plane.keys.explanation_request("fraud", "gone-1") in redis.data
