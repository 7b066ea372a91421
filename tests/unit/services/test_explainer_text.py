"""Per-token attributions for the text family (MiniLM encoder, shipped offline), in memory."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch

from bulwark.errors import BulwarkError, Reason
from bulwark.families import FAMILIES, LoadedModel
from bulwark.families.text import DEFAULT_CONFIG
from bulwark.settings import CommonSettings
from services.explainer.dataplane import ExplainerDataPlane, ExplainInput
from services.explainer.models import ExplainableVersion, explainable
from services.explainer.settings import ExplainerSettings

NOTE = "urgent wire transfer requested; call <PHONE_NUMBER> now"


class _OneVersion:
    def __init__(self, ev: ExplainableVersion) -> None:
        self.ev = ev

    def get(self, model: str, version: int) -> ExplainableVersion:
        return self.ev


@pytest.fixture(scope="module")
def plane() -> Iterator[ExplainerDataPlane]:
    family = FAMILIES.get("text")
    torch.manual_seed(0)
    module = family.build({}, DEFAULT_CONFIG).eval()
    with torch.no_grad():
        module.head.weight.mul_(20)  # a random head's output barely moves; scale it so tokens matter
    tok = family.tokenizer(max_tokens=int(DEFAULT_CONFIG["max_tokens"]))
    loaded = LoadedModel(family, module, dict(DEFAULT_CONFIG), dict(DEFAULT_CONFIG), None, {"tokenizer": tok})
    ev = explainable("notes", 1, loaded, digest="t")
    yield ExplainerDataPlane(CommonSettings(), ExplainerSettings(cache_ttl_s=0), None, _OneVersion(ev), None)


def test_text_attributions_are_per_token_in_reading_order_and_add_up(plane: ExplainerDataPlane) -> None:
    out = plane.explain(ExplainInput("notes", 1, text=NOTE))
    tokens = [t for t, _ in out.attributions]
    assert tokens[:4] == ["urgent", "wire", "transfer", "requested"] and "[CLS]" not in tokens and "[SEP]" not in tokens
    assert "phone" in tokens  # placeholders of scrubbed text are tokens like any other
    assert out.baseline_kind == "pad_tokens" and out.baseline == {} and out.family == "text"
    assert out.convergence.converged and out.convergence.steps >= 50
    assert abs(sum(v for _, v in out.attributions) - (out.output - out.baseline_output)) <= 0.01 * abs(
        out.output - out.baseline_output) + 1e-3


def test_feature_ablation_removes_one_token_at_a_time(plane: ExplainerDataPlane) -> None:
    out = plane.explain(ExplainInput("notes", 1, text=NOTE, method="feature_ablation"))
    ig = plane.explain(ExplainInput("notes", 1, text=NOTE, target=out.target))
    assert [t for t, _ in out.attributions] == [t for t, _ in ig.attributions]
    assert out.convergence.steps == 0 and out.output == pytest.approx(ig.output, abs=1e-4)


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (ExplainInput("notes", 1, text=" "), "needs non-empty text"),
        (ExplainInput("notes", 1, text="x" * 5000), "the limit is 4096"),
        (ExplainInput("notes", 1, features={"amount": 3.0}), "is a text model"),
    ],
)
def test_bad_text_is_invalid_naming_the_field(plane: ExplainerDataPlane, req: ExplainInput, fragment: str) -> None:
    with pytest.raises(BulwarkError) as info:
        plane.explain(req)
    assert info.value.reason == Reason.INVALID_ARGUMENT and fragment in info.value.message
