"""Compressed forms of a trained model: each takes the fp32 eager model and returns a smaller module, which
is then serialized to TorchScript (the form Triton's Python backend loads) and evaluated against fp32.

- `dynamic-int8`: Linear weights int8 with one scale per output row, activations quantized on the fly per
  batch (Jacob et al., 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
  Only Inference"; the recipe of PyTorch's BERT dynamic quantization tutorial). Vocabulary-sized embeddings
  get weight-only int8 with one (scale, zero point) per row, `x ≈ scale_r * (q - zero_r)`: in MiniLM the
  30522x384 word table is half the weights, so int8 Linear layers alone shrink it only ~1.55x. A Linear
  followed by a ReLU in a Sequential is first fused into one int8 kernel, and Dropout (the identity at
  inference) is dropped, as PyTorch's quantization recipe fuses modules before converting: on the default
  2x64 MLP at batch 64 that is 3 kernels instead of 7. Each int8 layer is then an `Int8Linear`, which calls
  its kernel and nothing else.
- `dynamic-int8-tensor`: the same with one scale per Linear weight tensor. A row's scale and zero point take
  16 bytes: next to a 384-wide row that is 4%, next to the 28-wide first layer of the default MLP it is
  more than half the row, and the per-row form shrinks that model's weights only 2.85x (per tensor: 3.76x).
  Per-row scales keep more accuracy where a few rows have outlying ranges (on MiniLM they cut the sentence-
  embedding error by a third); the accuracy budget decides, per model, whether the smaller form may ship.
- `dynamic-int8-vnni`, `dynamic-int8-vnni-tensor`: the same int8 weights (per row, per tensor), each Linear
  run by Bulwark's own kernel, `bulwark::int8_linear` (`bulwark.kernels`), instead of fbgemm's. fbgemm's
  dynamic Linear costs about 4.5 us a call whatever the layer's size (row offsets, input packing, a
  requantization pipeline, allocations): on the default 2x64 MLP at batch 64 its three calls are most of the
  int8 forward, and int8 gained only 1.4x over fp32. The kernel quantizes the input once into a reused buffer
  and multiplies with AVX512-VNNI straight from registers, over the full 8 bits (fbgemm's AVX2 path keeps 7).
  A row's scale takes 4 bytes here (fbgemm: a float64 scale and an int64 zero point). Offered where the CPU
  has AVX512-VNNI; the kernel has a portable path with the same arithmetic for serving elsewhere.
- `static-int8`: weights and activations int8, activation ranges calibrated on training-sample records
  (histogram observer), Linear+ReLU fused. Needs quantization stubs at a known module boundary: the MLP
  family only (a transformer's LayerNorm, GELU and softmax have no int8 kernels here).
- `fp16`: half-precision weights and arithmetic behind the family's fp32 interface, for GPU serving.
- `pruned-int8`: structured magnitude pruning (Li et al., 2017, "Pruning Filters for Efficient ConvNets":
  drop the units whose incoming weights have the smallest L1 norm), then dynamic int8. Unstructured zeros
  would neither shrink a dense TorchScript file nor speed up dense kernels; removing whole units does both.
  The last hidden layer keeps its width, so `embed()` and the parent's hidden-space profile keep their meaning.

The int8 forms use `torch.ao.quantization` eager mode: its successor (torchao) targets torch.compile and
AOTInductor, not the TorchScript that Triton's Python backend loads from bytes (and a torch.compile'd 2x64
MLP call cost 64 us here against its TorchScript's 34, torchao's dynamic int8 form 77 us: the guards and the
Python around a compiled graph outweigh such a model).
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import torch
from torch import nn
from torch.ao import quantization as tq
from torch.ao.nn.intrinsic import LinearReLU
from torch.ao.nn.intrinsic.quantized.dynamic import LinearReLU as DynamicLinearReLU
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from bulwark import kernels
from bulwark.errors import BulwarkError, Reason
from bulwark.families import LoadedModel, script_bytes
from bulwark.families.mlp import TabularMLP
from bulwark.plugins import Registry

# Embedding tables at least this many rows are vocabularies (indexed by the model's input ids) and worth
# int8; position and token-type tables are tiny and HF BERT indexes them with expanded, non-contiguous
# tensors that the int8 embedding kernel refuses.
EMBEDDING_MIN_ROWS = 4096

Inputs = tuple[torch.Tensor, ...]


class TraceError(BulwarkError):
    """A module that neither scripts nor traces to TorchScript (so Triton could not load it)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.FAILED_PRECONDITION, message)


@dataclass
class Candidate:
    """One compressed form before serialization: the module and what was done to it."""

    name: str
    module: nn.Module
    notes: dict[str, Any] = field(default_factory=dict)


class Form(Protocol):
    """A way to compress a model. `device` is where the form serves: int8 kernels here are CPU-only."""

    name: str
    device: str

    def supports(self, loaded: LoadedModel) -> str | None:
        """None when the form applies to this model, else why it does not."""
        ...

    def compress(self, loaded: LoadedModel, calibration: Sequence[Inputs]) -> Candidate:
        """The compressed module; `loaded` is left untouched."""
        ...


def serialize(candidate: Candidate, example: Inputs) -> bytes:
    """TorchScript bytes of a candidate (scripted; traced with `example` where scripting fails), checked by
    loading them back; `TraceError` when neither works."""
    try:
        data = script_bytes(candidate.module, example)
        kernels.load_torchscript(data)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not servable"; the class says which
        raise TraceError(f"{candidate.name}: the module neither scripts nor traces to loadable TorchScript "
                         f"({type(exc).__name__})") from exc
    return data


def _eager(loaded: LoadedModel) -> str | None:
    if isinstance(loaded.module, torch.jit.ScriptModule):
        return "the artifact holds only TorchScript (no state.pt): there are no eager layers to compress"
    return None


@contextmanager
def _quiet() -> Iterator[None]:
    # torch.ao warns on every call that it is deprecated in favour of torchao (see the module docstring).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _fuse_linear_relu(module: nn.Module) -> int:
    """In every nn.Sequential, drop Dropout (the identity at inference) and fuse each Linear directly followed
    by a ReLU into one LinearReLU, which dynamic int8 runs as one kernel with no separate ReLU pass. Exact
    for an eval-mode module; returns how many pairs were fused."""
    pairs: list[list[str]] = []
    for name, seq in module.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i, child in enumerate(seq):
            if isinstance(child, nn.Dropout):
                seq[i] = nn.Identity()
        pairs += [[f"{name}.{i}" if name else str(i), f"{name}.{i + 1}" if name else str(i + 1)]
                  for i in range(len(seq) - 1) if type(seq[i]) is nn.Linear and type(seq[i + 1]) is nn.ReLU]
    if pairs:
        tq.fuse_modules(module, pairs, inplace=True)
    return len(pairs)


class Int8Linear(nn.Module):
    """A dynamic int8 Linear, ReLU fused when `relu`, that only calls its kernel. torch.ao's module also
    checks its dtype and version and casts the result on every call: on the 2x64 MLP, whose three kernels
    each take about 3 µs, those steps cost 4 to 8% of the int8 call (two measurements)."""

    __constants__ = ["relu"]

    def __init__(self, source: nn.Module, relu: bool) -> None:
        super().__init__()
        self.packed = source._packed_params._packed_params
        self.relu = relu
        self.in_features, self.out_features = source.in_features, source.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 in, fp32 out; activations quantized per call, reduce_range as torch.ao's modules call it."""
        if self.relu:
            return torch.ops.quantized.linear_relu_dynamic(x, self.packed, True)
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)


def _lean(module: nn.Module) -> nn.Module:
    """`module` with every torch.ao dynamic int8 Linear (and LinearReLU) replaced by an `Int8Linear`."""
    for name, child in module.named_children():
        if isinstance(child, DynamicLinear) and child._packed_params.dtype == torch.qint8:
            setattr(module, name, Int8Linear(child, relu=isinstance(child, DynamicLinearReLU)))
        else:
            _lean(child)
    return module


class VnniInt8Linear(nn.Module):
    """A dynamic int8 Linear, ReLU fused when `relu`, on Bulwark's kernel: int8 weights in the kernel's packed
    layout, one fp32 scale per output row (or one for the tensor), fp32 bias."""

    __constants__ = ["relu", "in_features"]

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight", kernels.pack(qweight))
        self.register_buffer("scale", scale.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self.relu = relu
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]

    @classmethod
    def from_fbgemm(cls, layer: Int8Linear) -> VnniInt8Linear:
        """The same int8 weights, scales and bias as an fbgemm `Int8Linear` (symmetric: zero points 0)."""
        qweight, bias = torch.ops.quantized.linear_unpack(layer.packed)
        if qweight.qscheme() in (torch.per_tensor_symmetric, torch.per_tensor_affine):
            scale, zeros = torch.tensor([qweight.q_scale()]), torch.tensor([qweight.q_zero_point()])
        else:
            scale, zeros = qweight.q_per_channel_scales(), qweight.q_per_channel_zero_points()
        if bool(zeros.ne(0).any()):
            raise ValueError("the kernel takes symmetric int8 weights (zero point 0)")
        return cls(qweight.int_repr(), scale, bias, layer.relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 in, fp32 out; the input quantized per call (bulwark.kernels)."""
        return torch.ops.bulwark.int8_linear(x, self.weight, self.in_features, self.scale, self.bias,
                                             self.relu)


def _to_vnni(module: nn.Module) -> nn.Module:
    """`module` with every `Int8Linear` replaced by a `VnniInt8Linear` holding the same int8 weights."""
    for name, child in module.named_children():
        if isinstance(child, Int8Linear):
            setattr(module, name, VnniInt8Linear.from_fbgemm(child))
        else:
            _to_vnni(child)
    return module


def _dynamic(module: nn.Module, *, per_row: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    # Per-row weight scales cost nothing at run time and, on MiniLM, cut the sentence-embedding error by a
    # third against a per-tensor scale (outlier rows set the range); per tensor is smaller (module docstring).
    linear_qconfig = tq.per_channel_dynamic_qconfig if per_row else tq.default_dynamic_qconfig
    linear = sum(isinstance(m, nn.Linear) for m in module.modules())
    fused = _fuse_linear_relu(module)
    spec: dict[Any, Any] = {nn.Linear: linear_qconfig, LinearReLU: linear_qconfig}
    tables = [name for name, m in module.named_modules()
              if isinstance(m, nn.Embedding) and m.num_embeddings >= EMBEDDING_MIN_ROWS]
    for name in tables:
        spec[name] = tq.float_qparams_weight_only_qconfig
    with _quiet():
        quantized = _lean(tq.quantize_dynamic(module, spec, dtype=torch.qint8))
    scales = "per row" if per_row else "per tensor"
    return quantized.eval(), {"int8_linear_layers": linear, "fused_linear_relu": fused,
                              "int8_embeddings": tables, "weight_scales": scales}


class DynamicInt8:
    """Linear layers (and vocabulary embeddings) to int8 weights; activations quantized per batch. Weight
    scales per output row (`dynamic-int8`) or one per tensor (`-tensor`); Linear layers run by fbgemm, or by
    Bulwark's kernel (`-vnni`)."""

    device = "cpu"

    def __init__(self, *, per_row: bool = True, vnni: bool = False) -> None:
        self.per_row, self.vnni = per_row, vnni
        self.name = "dynamic-int8" + ("-vnni" if vnni else "") + ("" if per_row else "-tensor")

    def supports(self, loaded: LoadedModel) -> str | None:
        """Any eager model with at least one Linear layer; for `-vnni`, on a CPU with AVX512-VNNI."""
        if why := _eager(loaded):
            return why
        if not any(isinstance(m, nn.Linear) for m in loaded.module.modules()):
            return "the model has no Linear layers"
        if self.vnni:
            try:
                isa = kernels.isa()
            except kernels.KernelError as exc:
                return exc.message
            if isa != "avx512_vnni":
                return ("this CPU has no AVX512-VNNI, so Bulwark's int8 kernel would run its portable path; "
                        "the fbgemm forms serve here")
        return None

    def compress(self, loaded: LoadedModel, calibration: Sequence[Inputs]) -> Candidate:
        """quantize_dynamic on a copy; no calibration needed (activation ranges are taken per batch)."""
        module, notes = _dynamic(copy.deepcopy(loaded.module).eval(), per_row=self.per_row)
        if self.vnni:
            module = _to_vnni(module)
            notes = {**notes, "kernel": "bulwark::int8_linear", "isa": kernels.isa()}
        else:
            notes = {**notes, "kernel": "fbgemm"}
        return Candidate(self.name, module, notes)


class _StaticTabular(nn.Module):
    """A TabularMLP between a quantize and a dequantize stub: int8 from the first layer to the logits."""

    def __init__(self, mlp: TabularMLP) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        # Dropout is the identity at inference and has no int8 kernel: leave it out.
        self.body = nn.Sequential(*[copy.deepcopy(m) for m in mlp.body if not isinstance(m, nn.Dropout)])
        self.head = copy.deepcopy(mlp.head)
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (fp32 in, fp32 out)."""
        return self.dequant(self.head(self.body(self.quant(x))))

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations, as the fp32 model's `embed`."""
        return self.dequant(self.body(self.quant(x)))


class StaticInt8:
    """Weights and activations int8 with calibrated activation ranges; MLP family only."""

    name = "static-int8"
    device = "cpu"

    def supports(self, loaded: LoadedModel) -> str | None:
        """An eager TabularMLP (other modules have no stub boundary or no int8 kernels for their ops)."""
        if why := _eager(loaded):
            return why
        if not isinstance(loaded.module, TabularMLP):
            return "static int8 needs a module of known structure; supported for the mlp family only"
        return None

    def compress(self, loaded: LoadedModel, calibration: Sequence[Inputs]) -> Candidate:
        """Fuse Linear+ReLU, observe activation ranges on `calibration`, convert."""
        if not calibration:
            raise ValueError("static int8 needs calibration records (heldout.json has no train_sample)")
        module = _StaticTabular(loaded.module).eval()  # type: ignore[arg-type]
        layers = list(module.body)
        fused = [[str(i), str(i + 1)] for i, m in enumerate(layers[:-1])
                 if isinstance(m, nn.Linear) and isinstance(layers[i + 1], nn.ReLU)]
        with _quiet():
            tq.fuse_modules(module.body, fused, inplace=True)
            module.qconfig = tq.get_default_qconfig(torch.backends.quantized.engine)
            tq.prepare(module, inplace=True)
            with torch.no_grad():
                for batch in calibration:
                    module(*batch)
            tq.convert(module, inplace=True)
        n = sum(len(b[0]) for b in calibration)
        return Candidate(self.name, module, {"calibration_records": n, "fused_linear_relu": len(fused),
                                             "engine": torch.backends.quantized.engine})


def _half(t: torch.Tensor) -> torch.Tensor:
    return t.half() if t.is_floating_point() else t


class _HalfOne(nn.Module):
    """fp16 inside, the family's fp32 interface outside (one input; logits back in fp32)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits in fp32."""
        return self.inner(_half(x)).float()


class _HalfTabular(_HalfOne):
    """fp16 TabularMLP that keeps `embed`."""

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations in fp32."""
        return self.inner.embed(_half(x)).float()


class _HalfPair(nn.Module):
    """fp16 inside, two inputs (token ids and attention mask) outside."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Class logits in fp32."""
        return self.inner(_half(a), _half(b)).float()


class Float16:
    """Half-precision weights and arithmetic (2x smaller; fast on GPU tensor cores, slow on most CPUs)."""

    name = "fp16"
    device = "gpu"

    def supports(self, loaded: LoadedModel) -> str | None:
        """Eager models served with one or two inputs."""
        if why := _eager(loaded):
            return why
        inputs, _ = loaded.family.io(loaded.spec)
        if len(inputs) not in (1, 2):
            return f"the fp16 wrapper serves one or two inputs; this model has {len(inputs)}"
        return None

    def compress(self, loaded: LoadedModel, calibration: Sequence[Inputs]) -> Candidate:
        """A half copy behind an fp32 wrapper, so Triton's config (FP32 in, FP32 out) stays the family's."""
        inner = copy.deepcopy(loaded.module).eval()
        inputs, _ = loaded.family.io(loaded.spec)
        if len(inputs) == 2:
            wrapper: nn.Module = _HalfPair(inner)
        elif hasattr(inner, "embed"):
            wrapper = _HalfTabular(inner)
        else:
            wrapper = _HalfOne(inner)
        return Candidate(self.name, wrapper.eval(), {"dtype": "float16"})


def prune_units(mlp: TabularMLP, amount: float) -> tuple[TabularMLP, dict[str, Any]]:
    """A copy of `mlp` without the `amount` share of units (smallest L1 norm of incoming weights) of every
    hidden layer but the last; the next layer loses the matching input columns."""
    pruned = copy.deepcopy(mlp).eval()
    linears = [i for i, m in enumerate(pruned.body) if isinstance(m, nn.Linear)]
    before, after = [], []
    with torch.no_grad():
        for pos, i in enumerate(linears[:-1]):
            layer: nn.Linear = pruned.body[i]
            keep_n = max(1, round(layer.out_features * (1 - amount)))
            norms = layer.weight.abs().sum(dim=1)
            keep = torch.sort(torch.topk(norms, keep_n).indices).values
            nxt: nn.Linear = pruned.body[linears[pos + 1]]
            pruned.body[i] = _linear(layer.weight[keep], layer.bias[keep])
            pruned.body[linears[pos + 1]] = _linear(nxt.weight[:, keep], nxt.bias)
            before.append(layer.out_features)
            after.append(keep_n)
    return pruned, {"hidden_units": [f"{b}->{a}" for b, a in zip(before, after)]}


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    return layer


class PrunedInt8:
    """Structured magnitude pruning of hidden units, then dynamic int8; MLP family only."""

    name = "pruned-int8"
    device = "cpu"

    def __init__(self, amount: float = 0.3) -> None:
        self.amount = amount

    def supports(self, loaded: LoadedModel) -> str | None:
        """An eager TabularMLP with at least two hidden layers (the last keeps its width)."""
        if why := _eager(loaded):
            return why
        if not isinstance(loaded.module, TabularMLP):
            return "structured pruning needs a module of known structure; supported for the mlp family only"
        if sum(isinstance(m, nn.Linear) for m in loaded.module.body) < 2:
            return "only one hidden layer, which keeps its width: nothing to prune"
        return None

    def compress(self, loaded: LoadedModel, calibration: Sequence[Inputs]) -> Candidate:
        """Prune `amount` of the units of every hidden layer but the last, then quantize dynamically."""
        pruned, notes = prune_units(loaded.module, self.amount)  # type: ignore[arg-type]
        module, qnotes = _dynamic(pruned)
        return Candidate(self.name, module, {"amount": self.amount, **notes, **qnotes})


FORMS: Registry[Form] = Registry("compressed form")
FORMS.register(DynamicInt8())
FORMS.register(DynamicInt8(per_row=False))
FORMS.register(DynamicInt8(vnni=True))
FORMS.register(DynamicInt8(per_row=False, vnni=True))
FORMS.register(StaticInt8())
FORMS.register(Float16())
FORMS.register(PrunedInt8())


def form(name: str, *, pruning_amount: float) -> Form:
    """The registered form `name`, configured (pruning takes its amount from settings)."""
    found = FORMS.get(name)
    return PrunedInt8(pruning_amount) if isinstance(found, PrunedInt8) else found
