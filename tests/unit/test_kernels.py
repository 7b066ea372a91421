"""bulwark::int8_linear against an exact reference, its two paths against each other, and its refusals."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from bulwark import kernels
from bulwark.kernels import KernelError, load_torchscript, needed_by, pack, unpack

kernels.load()
OP = torch.ops.bulwark.int8_linear
PORTABLE = torch.ops.bulwark.int8_linear_portable


def _weights(n: int, k: int, per_row: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n if per_row else 1, generator=g) * 0.01 + 1e-4
    return q, scale


def _reference(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
               relu: bool) -> torch.Tensor:
    """The kernel's arithmetic in float64: quantize x to uint8 over [min(x, 0), max(x, 0)], exact integer
    products, one scale per row (or tensor), bias, ReLU."""
    f32 = torch.float32
    lo, hi = torch.clamp(x.min(), max=0).to(f32), torch.clamp(x.max(), min=0).to(f32)
    s = (hi - lo) / torch.tensor(255, dtype=f32) if hi > lo else torch.tensor(1.0, dtype=f32)
    zero = int(torch.clamp(torch.round(-lo / s), 0, 255))
    qx = torch.clamp(torch.round(x.to(f32) * (torch.tensor(1.0, dtype=f32) / s)) + zero, 0, 255).double()
    acc = (qx - zero) @ q.double().T
    y = acc * (s * scale).double() + (0 if bias is None else bias.double())
    return (torch.relu(y) if relu else y).float()


@pytest.mark.parametrize("m,k,n", [
    (64, 28, 64),    # the default MLP's first layer
    (64, 64, 2),     # its head: one partial block of 16 outputs
    (1, 7, 33),      # one row; K not a multiple of 4; a 1-output tail block
    (5, 30, 70),     # rows not a multiple of 4; two full blocks and a tail
    (9, 384, 129),   # a MiniLM-sized K
    (0, 12, 8),      # an empty batch
])
@pytest.mark.parametrize("per_row", [True, False])
@pytest.mark.parametrize("relu", [True, False])
def test_int8_linear_matches_the_exact_reference(m: int, k: int, n: int, per_row: bool, relu: bool) -> None:
    q, scale = _weights(n, k, per_row)
    bias = torch.randn(n)
    x = torch.randn(m, k) * 3
    got = OP(x, pack(q), k, scale, bias, relu)
    assert got.shape == (m, n)
    if m:
        want = _reference(x, q, scale, bias, relu)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_vnni_and_portable_paths_agree_bit_for_bit() -> None:
    # On a CPU without AVX512-VNNI both calls take the portable path; CI's machine has it (kernels.isa()).
    for shape, per_row in (((64, 28, 64), False), ((3, 61, 50), True), ((130, 384, 96), True)):
        m, k, n = shape
        q, scale = _weights(n, k, per_row, seed=m)
        x, bias = torch.randn(m, k), torch.randn(n)
        for relu in (True, False):
            args = (x, pack(q), k, scale, bias, relu)
            assert torch.equal(OP(*args), PORTABLE(*args))


def test_int8_linear_keeps_leading_dimensions_and_accepts_no_bias() -> None:
    q, scale = _weights(16, 12, True)
    x = torch.randn(2, 3, 12)
    got = OP(x, pack(q), 12, scale, None, False)
    assert got.shape == (2, 3, 16)
    torch.testing.assert_close(got.reshape(6, 16), _reference(x.reshape(6, 12), q, scale, None, False))


def test_all_zero_input_gives_the_bias_exactly() -> None:
    q, scale = _weights(20, 8, False)
    bias = torch.randn(20)
    assert torch.equal(OP(torch.zeros(4, 8), pack(q), 8, scale, bias, False), bias.expand(4, 20))


def test_int8_linear_is_as_close_to_fp32_as_torch_dynamic_int8() -> None:
    # Same weights (torch.ao's per-tensor observer), fp32 layer as the truth: full-range uint8 activations
    # should err no more than fbgemm's 7-bit ones.
    torch.manual_seed(3)
    lin = torch.nn.Linear(64, 64)
    x = torch.randn(64, 64)
    ref = lin(x).detach()
    lin.qconfig = torch.ao.quantization.default_dynamic_qconfig
    fbgemm = torch.ao.nn.quantized.dynamic.Linear.from_float(lin)
    wq = fbgemm.weight()
    ours = OP(x, pack(wq.int_repr()), 64, torch.tensor([wq.q_scale()]), lin.bias.detach(), False)
    assert (ours - ref).abs().max() <= (fbgemm(x) - ref).abs().max()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_refused_with_the_reason(bad: float) -> None:
    q, scale = _weights(8, 8, False)
    x = torch.randn(4, 8)
    x[2, 5] = bad
    for op in (OP, PORTABLE):
        with pytest.raises(RuntimeError, match="NaN or infinity"):
            op(x, pack(q), 8, scale, None, True)


def test_an_input_range_past_float32_is_refused_not_quantized_to_garbage() -> None:
    q, scale = _weights(8, 8, False)
    x = torch.zeros(2, 8)
    x[0, 0], x[1, 1] = 3e38, -3e38
    for op in (OP, PORTABLE):
        with pytest.raises(RuntimeError, match="overflows float32"):
            op(x, pack(q), 8, scale, None, False)


@pytest.mark.parametrize("call,message", [
    (lambda q, s: OP(torch.randn(2, 9), pack(q), 12, s, None, False), "has 9 features; the layer takes 12"),
    (lambda q, s: OP(torch.randn(2, 16), pack(q), 16, s, None, False), "in_features 16 does not fit"),
    (lambda q, s: OP(torch.randn(2, 12), q, 12, s, None, False), r"int8 \[ceil\(K/4\), N, 4\]"),
    (lambda q, s: OP(torch.randn(2, 12), pack(q), 12, torch.ones(3), None, False), "w_scale needs 1 or 8"),
    (lambda q, s: OP(torch.randn(2, 12), pack(q), 12, s, torch.ones(5), False), "bias needs 8 values"),
    (lambda q, s: OP(torch.ones(2, 12, dtype=torch.int64), pack(q), 12, s, None, False), "floating-point"),
])
def test_malformed_calls_say_what_is_wrong(call, message: str) -> None:
    q, scale = _weights(8, 12, False)
    with pytest.raises(RuntimeError, match=message):
        call(q, scale)


def test_pack_and_unpack_round_trip_and_pad_k_with_zeros() -> None:
    q, _ = _weights(5, 7, False)
    packed = pack(q)
    assert packed.shape == (2, 5, 4)
    assert torch.equal(unpack(packed, 7), q)
    assert torch.equal(packed[1, :, 3], torch.zeros(5, dtype=torch.int8))
    with pytest.raises(ValueError, match="int8 weights"):
        pack(q.float())


class _Layer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        q, scale = _weights(6, 10, True)
        self.register_buffer("weight", pack(q))
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.bulwark.int8_linear(x, self.weight, 10, self.scale, None, True)


def test_a_fresh_process_loads_a_model_that_calls_the_kernel_through_load_torchscript(tmp_path) -> None:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_Layer()), buf)
    data = buf.getvalue()
    assert needed_by(data)
    plain = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), plain)
    assert not needed_by(plain.getvalue())
    (tmp_path / "m.pt").write_bytes(data)
    code = ("import sys, torch; from bulwark.kernels import load_torchscript; "
            "m = load_torchscript(open(sys.argv[1], 'rb')); print(tuple(m(torch.randn(3, 10)).shape))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3, 6)"
    assert load_torchscript(data)(torch.randn(1, 10)).shape == (1, 6)


def test_build_without_a_compiler_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(kernels, "BUILD_DIR", tmp_path)
    monkeypatch.setattr(kernels.shutil, "which", lambda name: None)
    with pytest.raises(KernelError, match="apt-get install g\\+\\+"):
        kernels.build()
    assert not any(tmp_path.iterdir())  # no half-built file left behind


def test_library_name_changes_with_the_source(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    edited = tmp_path / "int8_linear.cpp"
    edited.write_bytes(kernels.SOURCE.read_bytes() + b"\n// edited\n")
    before = kernels.library_path()
    monkeypatch.setattr(kernels, "SOURCE", edited)
    assert kernels.library_path() != before
