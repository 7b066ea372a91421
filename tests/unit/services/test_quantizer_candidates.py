"""Quantizer forms on a small trained MLP: each compresses, serializes to TorchScript that loads from bytes,
keeps the family's interface, and agrees with fp32; forms that do not apply say why."""

from __future__ import annotations

import copy
import io
import typing
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from bulwark import kernels
from bulwark.families import FAMILIES, LoadedModel, script_bytes
from bulwark.features import REFERENCE_FEATURES, FeatureSpec
from bulwark.reference import ReferenceGenerator
from services.quantizer.candidates import (
    FORMS,
    Int8Linear,
    Candidate,
    DynamicInt8,
    Float16,
    PrunedInt8,
    StaticInt8,
    TraceError,
    VnniInt8Linear,
    prune_units,
    serialize,
)
from services.quantizer.evaluate import weight_bytes
from services.quantizer.settings import FormName


@pytest.fixture(scope="module")
def trained() -> tuple[LoadedModel, list[dict], list[dict]]:
    """A [32, 32] MLP trained briefly on reference events, with held-out and calibration records."""
    records = [e.payload for e in ReferenceGenerator(seed=5, labeled_fraction=1.0).events(2400)]
    train, val = records[:2000], records[2000:]
    spec = FeatureSpec.fit(train, REFERENCE_FEATURES)
    family = FAMILIES.get("mlp")
    torch.manual_seed(0)
    module = family.build(spec, {"hidden": [32, 32], "dropout": 0.0})
    x = torch.from_numpy(spec.encode(train))
    y = torch.tensor([int(r["is_fraud"]) for r in train])
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(4):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            nn.functional.cross_entropy(module(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    return LoadedModel(family, module.eval(), {"hidden": [32, 32]}, spec), train, val


def _load(data: bytes) -> torch.jit.ScriptModule:
    return kernels.load_torchscript(data)


@pytest.mark.parametrize(
    ("form", "min_agreement"),
    [
        (DynamicInt8(), 0.98),
        (DynamicInt8(per_row=False), 0.98),
        (DynamicInt8(vnni=True), 0.98),
        (DynamicInt8(per_row=False, vnni=True), 0.98),
        (StaticInt8(), 0.97),   # activation ranges fixed by calibration: a little coarser
        (Float16(), 0.99),
    ],
)
def test_form_serializes_loads_from_bytes_and_agrees_with_fp32(trained, form, min_agreement: float) -> None:
    loaded, train, val = trained
    calibration = [loaded.inputs(train[i:i + 64]) for i in range(0, 512, 64)]
    candidate = form.compress(loaded, calibration)
    module = _load(serialize(candidate, loaded.inputs(val[:2])))
    x = loaded.inputs(val)[0]
    with torch.no_grad():
        ours, ref = module(x), loaded.module(x)
        assert ours.dtype == torch.float32 and ours.shape == ref.shape  # the family's fp32 interface
        assert float(np.mean((ours.argmax(1) == ref.argmax(1)).numpy())) >= min_agreement
        assert module.embed(x).shape == loaded.module.embed(x).shape  # embed() survives every form


def test_per_tensor_scales_make_a_small_mlp_smaller_than_per_row_scales(trained) -> None:
    # A [32, 32] MLP: every output row of its first layer holds ~28 int8 weights, and a per-row scale and
    # zero point add 16 bytes to each. One scale per tensor leaves the weights close to a quarter of fp32.
    loaded, _, val = trained
    example = loaded.inputs(val[:2])
    fp32 = weight_bytes(script_bytes(loaded.module, example))
    per_row, per_tensor = (DynamicInt8(per_row=p).compress(loaded, []) for p in (True, False))
    assert (per_row.notes["weight_scales"], per_tensor.notes["weight_scales"]) == ("per row", "per tensor")
    row_bytes, tensor_bytes = (weight_bytes(serialize(c, example)) for c in (per_row, per_tensor))
    assert tensor_bytes < row_bytes
    assert fp32 / tensor_bytes >= 3.5 > fp32 / row_bytes


def test_dynamic_int8_fuses_linear_relu_and_drops_dropout_without_changing_answers(trained) -> None:
    # The default MLP is Linear, ReLU, Dropout twice, then the head: 7 ops at inference, 3 int8 kernels fused.
    loaded, _, val = trained
    candidate = DynamicInt8().compress(loaded, [])
    kinds = [type(m).__name__ for m in candidate.module.modules()]
    lean = [m for m in candidate.module.modules() if isinstance(m, Int8Linear)]
    assert candidate.notes["fused_linear_relu"] == 2 and [m.relu for m in lean] == [True, True, False]
    assert "Dropout" not in kinds and "ReLU" not in kinds
    # The same int8 weights unfused (quantize_dynamic straight on the model) give the same logits.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unfused = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(loaded.module), {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8)
    x = loaded.inputs(val)[0]
    with torch.no_grad():
        torch.testing.assert_close(candidate.module(x), unfused(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(candidate.module.embed(x), unfused.embed(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_row", [True, False])
def test_vnni_form_holds_fbgemms_int8_weights_and_gives_the_same_answers(trained, per_row: bool) -> None:
    # Same weights, scales and bias; only the kernel and the activations' range (8 bits, fbgemm 7) differ,
    # so each errs against fp32 on its own: ours no more than fbgemm's (a margin for rounding luck).
    loaded, _, val = trained
    fbgemm = DynamicInt8(per_row=per_row).compress(loaded, [])
    vnni = DynamicInt8(per_row=per_row, vnni=True).compress(loaded, [])
    theirs = [m for m in fbgemm.module.modules() if isinstance(m, Int8Linear)]
    ours = [m for m in vnni.module.modules() if isinstance(m, VnniInt8Linear)]
    assert [m.relu for m in ours] == [m.relu for m in theirs] == [True, True, False]
    for a, b in zip(theirs, ours):
        qweight, bias = torch.ops.quantized.linear_unpack(a.packed)
        assert torch.equal(kernels.unpack(b.weight, b.in_features), qweight.int_repr())
        assert torch.equal(b.bias, bias)
    assert vnni.notes["kernel"] == "bulwark::int8_linear" and fbgemm.notes["kernel"] == "fbgemm"
    x = loaded.inputs(val)[0]
    with torch.no_grad():
        ref, a, b = loaded.module(x), fbgemm.module(x), vnni.module(x)
        assert (b - ref).abs().mean() <= 1.1 * (a - ref).abs().mean()
        assert (b - ref).abs().max() <= 1.5 * (a - ref).abs().max()


def test_vnni_form_stores_a_row_scale_in_4_bytes_not_16(trained) -> None:
    loaded, _, val = trained
    example = loaded.inputs(val[:2])
    fbgemm, vnni = (weight_bytes(serialize(DynamicInt8(vnni=v).compress(loaded, []), example))
                    for v in (False, True))
    rows = sum(m.out_features for m in loaded.module.modules() if isinstance(m, nn.Linear))
    assert fbgemm - vnni == 12 * rows


def test_vnni_form_is_not_offered_where_the_kernel_cannot_run_fast(trained,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = trained[0]
    monkeypatch.setattr(kernels, "isa", lambda: "portable")
    assert "no AVX512-VNNI" in DynamicInt8(vnni=True).supports(loaded)
    assert DynamicInt8().supports(loaded) is None

    def unbuildable() -> str:
        raise kernels.KernelError("Bulwark's int8 kernel needs a C++ compiler to build")

    monkeypatch.setattr(kernels, "isa", unbuildable)
    assert "needs a C++ compiler" in DynamicInt8(per_row=False, vnni=True).supports(loaded)


def test_dynamic_int8_leaves_the_loaded_model_untouched(trained) -> None:
    loaded, _, val = trained
    before = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    DynamicInt8().compress(loaded, [])
    assert all(torch.equal(before[k], v) for k, v in loaded.module.state_dict().items())
    assert all(type(m) is nn.Linear for m in loaded.module.modules() if isinstance(m, nn.Linear))


def test_static_int8_without_calibration_refuses(trained) -> None:
    with pytest.raises(ValueError, match="calibration"):
        StaticInt8().compress(trained[0], [])


def test_pruning_drops_weakest_units_of_all_but_the_last_hidden_layer(trained) -> None:
    loaded, _, val = trained
    pruned, notes = prune_units(loaded.module, 0.25)
    linears = [m for m in pruned.body if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [24, 32] and linears[1].in_features == 24
    assert notes["hidden_units"] == ["32->24"]
    first = [m for m in loaded.module.body if isinstance(m, nn.Linear)][0]
    norms = first.weight.abs().sum(1)
    kept = sorted(norms.tolist(), reverse=True)[:24]
    assert sorted(linears[0].weight.abs().sum(1).tolist(), reverse=True) == pytest.approx(kept)
    candidate = PrunedInt8(0.25).compress(loaded, [])
    module = _load(serialize(candidate, loaded.inputs(val[:2])))
    assert module(loaded.inputs(val)[0]).shape == (len(val), 2)


class _NoisyBranches(nn.Module):
    """A module whose output is not a tensor: neither scripts nor traces."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor):  # noqa: ANN201 - deliberately untyped
        return {"logits": self.linear(x), "note": [object()]}


def test_serialize_untraceable_module_raises_trace_error() -> None:
    with pytest.raises(TraceError, match="neither scripts nor traces"):
        serialize(Candidate("dynamic-int8", _NoisyBranches()), (torch.zeros(2, 4),))


def test_forms_that_do_not_apply_say_why(trained) -> None:
    loaded = trained[0]
    scripted = LoadedModel(loaded.family, torch.jit.load(io.BytesIO(script_bytes(loaded.module))), {}, loaded.spec)
    for form in FORMS:
        assert "only TorchScript" in form.supports(scripted)
    plain = LoadedModel(loaded.family, nn.Sequential(nn.Linear(4, 2)), {}, loaded.spec)
    assert DynamicInt8().supports(plain) is None
    assert "mlp family only" in StaticInt8().supports(plain)
    assert "mlp family only" in PrunedInt8().supports(plain)


def test_settings_name_exactly_the_registered_forms() -> None:
    assert sorted(typing.get_args(FormName)) == FORMS.names()
