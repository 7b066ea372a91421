// bulwark::int8_linear: a dynamic int8 Linear layer in one pass, for the quantizer's `*-vnni` forms.
//
//   y = relu?( s_x * s_w[n] * sum_k (q_x[m,k] - z_x) * q_w[n,k] + b[n] )
//
// q_w are symmetric int8 weights with one fp32 scale per output row or one per tensor (s_w). The input
// x (fp32) is quantized per call to uint8 over [min(x, 0), max(x, 0)] (scale s_x, zero point z_x), as
// dynamic quantization does (Jacob et al., 2018), but over the full 8 bits: AVX512-VNNI's vpdpbusd adds
// its four u8*s8 products into int32 without the 16-bit saturation that makes fbgemm's AVX2 path quantize
// activations to 7 bits (reduce_range).
//
// Why a kernel of our own: on the trainer's default MLP (28 -> 64 -> 64 -> 2, batch 64), a call of torch's
// fbgemm dynamic Linear costs about 4.5 us whatever its size, most of it fixed: row offsets, packing the
// input into blocks, a requantization pipeline and three allocations. This kernel quantizes the input once
// into a reused buffer and runs the product straight out of registers, so three layers cost what one did.
//
// Weight layout ("VNNI packed"): int8 [ceil(K/4), N, 4], element (n, k) at ((k/4)*N + n)*4 + k%4, so the
// 4 k-values of 16 consecutive outputs are one 64-byte load. `bulwark.kernels.pack` writes it.
//
// Two paths with identical arithmetic (same rounding, one fused multiply-add per output): AVX512-VNNI
// where the CPU has it, else portable C++. `bulwark::int8_linear_portable` forces the second (tests
// compare the two bit for bit); `bulwark::int8_kernel_isa()` says which path `int8_linear` takes here.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__x86_64__) && !defined(BULWARK_PORTABLE_ONLY)
#define BULWARK_X86 1
#include <immintrin.h>
#else
#define BULWARK_X86 0  // other CPUs (or -DBULWARK_PORTABLE_ONLY) build the portable path only
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace {

struct InputQuant {
  float scale;
  int32_t zero;
};

// Asymmetric uint8 parameters covering [min(lo, 0), max(hi, 0)], so that 0 is exact (ReLU outputs, padding).
InputQuant choose(float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  float scale = (hi - lo) / 255.0f;
  if (!(scale > 0.0f)) scale = 1.0f;  // an all-zero input: any scale is exact
  const auto zero = static_cast<int32_t>(std::nearbyint(-lo / scale));
  return {scale, std::clamp(zero, 0, 255)};
}

// The shapes of one call, checked once.
struct Problem {
  const float* x;
  int64_t M, K, Kp, N;  // rows, input features, K padded to a multiple of 4, outputs
  const int8_t* w;
  const float* w_scale;
  bool per_row;
  const float* bias;  // null: no bias
  bool relu;
  float* out;
};

bool has_vnni() {
#if BULWARK_X86
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return yes;
#else
  return false;
#endif
}

// ------------------------------------------------------------------------------------------ portable path

void minmax_portable(const Problem& p, float& lo, float& hi, bool& finite) {
  lo = 0.0f, hi = 0.0f, finite = true;
  for (int64_t i = 0; i < p.M * p.K; ++i) {
    const float v = p.x[i];
    finite = finite && std::isfinite(v);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
}

// Rows padded to a multiple of 4 (zeros) and columns to Kp (the zero point: those columns add nothing,
// whatever the padding weights hold).
void quantize_portable(const Problem& p, InputQuant q, uint8_t* qa, int64_t Mp) {
  const float inv = 1.0f / q.scale;
  for (int64_t m = 0; m < Mp; ++m) {
    uint8_t* row = qa + m * p.Kp;
    if (m >= p.M) {
      std::fill(row, row + p.Kp, 0);
      continue;
    }
    for (int64_t k = 0; k < p.K; ++k) {
      const auto v = static_cast<int32_t>(std::nearbyint(p.x[m * p.K + k] * inv)) + q.zero;
      row[k] = static_cast<uint8_t>(std::clamp(v, 0, 255));
    }
    std::fill(row + p.K, row + p.Kp, static_cast<uint8_t>(q.zero));
  }
}

void colsum_portable(const Problem& p, int32_t zero, int32_t* zcs) {
  for (int64_t n = 0; n < p.N; ++n) {
    int32_t s = 0;
    for (int64_t k4 = 0; k4 < p.Kp / 4; ++k4)
      for (int j = 0; j < 4; ++j) s += p.w[(k4 * p.N + n) * 4 + j];
    zcs[n] = zero * s;
  }
}

void tiles_portable(const Problem& p, InputQuant q, const uint8_t* qa, const int32_t* zcs, int64_t t0,
                    int64_t t1) {
  for (int64_t m = t0 * 4; m < std::min(t1 * 4, p.M); ++m) {
    for (int64_t n = 0; n < p.N; ++n) {
      int32_t acc = 0;
      for (int64_t k = 0; k < p.Kp; ++k)
        acc += int32_t(qa[m * p.Kp + k]) * p.w[((k / 4) * p.N + n) * 4 + k % 4];
      const float scale = q.scale * p.w_scale[p.per_row ? n : 0];
      float v = std::fma(static_cast<float>(acc - zcs[n]), scale, p.bias ? p.bias[n] : 0.0f);
      if (p.relu) v = v > 0.0f ? v : 0.0f;
      p.out[m * p.N + n] = v;
    }
  }
}

// --------------------------------------------------------------------------------------- AVX512-VNNI path
#if BULWARK_X86
#define BULWARK_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))


BULWARK_VNNI void minmax_vnni(const Problem& p, float& lo, float& hi, bool& finite) {
  __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
  __mmask16 bad = 0;
  const int64_t total = p.M * p.K;
  for (int64_t i = 0; i < total; i += 16) {
    const __mmask16 m = total - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (total - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, p.x + i);
    // v - v is 0 for a finite v and NaN for NaN or infinity.
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    vlo = _mm512_min_ps(vlo, v);
    vhi = _mm512_max_ps(vhi, v);
  }
  lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi), finite = bad == 0;
}

BULWARK_VNNI void quantize_vnni(const Problem& p, InputQuant q, uint8_t* qa, int64_t Mp) {
  const __m512 inv = _mm512_set1_ps(1.0f / q.scale);
  const __m512i zero = _mm512_set1_epi32(q.zero);
  for (int64_t m = 0; m < Mp; ++m) {
    uint8_t* row = qa + m * p.Kp;
    if (m >= p.M) {
      std::fill(row, row + p.Kp, 0);
      continue;
    }
    const float* x = p.x + m * p.K;
    for (int64_t k = 0; k < p.K; k += 16) {
      const __mmask16 mk = p.K - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (p.K - k)) - 1);
      const __m512 scaled = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + k), inv);
      __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(scaled), zero);
      v = _mm512_max_epi32(v, _mm512_setzero_si512());          // then saturate to 255 when narrowing
      _mm_mask_storeu_epi8(row + k, mk, _mm512_cvtusepi32_epi8(v));
    }
    std::fill(row + p.K, row + p.Kp, static_cast<uint8_t>(q.zero));
  }
}

BULWARK_VNNI __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? 0xFFFF : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0;
}

BULWARK_VNNI void colsum_vnni(const Problem& p, int32_t zero, int32_t* zcs) {
  const __m512i ones = _mm512_set1_epi8(1), z = _mm512_set1_epi32(zero);
  for (int64_t n = 0; n < p.N; n += 16) {
    const __mmask16 mk = tail_mask(p.N - n);
    __m512i s = _mm512_setzero_si512();
    for (int64_t k4 = 0; k4 < p.Kp / 4; ++k4)
      s = _mm512_dpbusd_epi32(s, ones, _mm512_maskz_loadu_epi32(mk, p.w + (k4 * p.N + n) * 4));
    _mm512_mask_storeu_epi32(zcs + n, mk, _mm512_mullo_epi32(s, z));
  }
}

// MR rows x NB blocks of 16 outputs: MR*NB int32 accumulators stay in registers (MR and NB are template
// arguments so that the loops unroll; with run-time bounds the compiler spills them to the stack, 3x slower).
template <int MR, int NB>
BULWARK_VNNI inline void tile_vnni(const Problem& p, InputQuant q, const uint8_t* a, const int32_t* zcs,
                                   int64_t m0, int64_t n0) {
  __mmask16 mk[NB];
  __m512i acc[MR][NB], wv[NB];
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) mk[j] = tail_mask(p.N - n0 - 16 * j);
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  for (int64_t k4 = 0; k4 < p.Kp / 4; ++k4) {
    const int8_t* wk = p.w + (k4 * p.N + n0) * 4;
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) wv[j] = _mm512_maskz_loadu_epi32(mk[j], wk + 64 * j);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m512i ar = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(a + r * p.Kp + 4 * k4));
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], ar, wv[j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) {
    const int64_t n = n0 + 16 * j;
    const __m512 scale = p.per_row
        ? _mm512_mul_ps(_mm512_set1_ps(q.scale), _mm512_maskz_loadu_ps(mk[j], p.w_scale + n))
        : _mm512_set1_ps(q.scale * p.w_scale[0]);
    const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mk[j], p.bias + n) : _mm512_setzero_ps();
    const __m512i zc = _mm512_maskz_loadu_epi32(mk[j], zcs + n);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][j], zc)), scale, bias);
      if (p.relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
      _mm512_mask_storeu_ps(p.out + (m0 + r) * p.N + n, mk[j], v);
    }
  }
}

// MR rows starting at m0, every output: blocks of 64 outputs, then the tail.
template <int MR>
BULWARK_VNNI void rows_vnni(const Problem& p, InputQuant q, const uint8_t* a, const int32_t* zcs,
                            int64_t m0) {
  int64_t n0 = 0;
  for (; p.N - n0 > 48; n0 += 64) tile_vnni<MR, 4>(p, q, a, zcs, m0, n0);
  if (p.N - n0 > 32) tile_vnni<MR, 3>(p, q, a, zcs, m0, n0);
  else if (p.N - n0 > 16) tile_vnni<MR, 2>(p, q, a, zcs, m0, n0);
  else if (p.N - n0 > 0) tile_vnni<MR, 1>(p, q, a, zcs, m0, n0);
}

BULWARK_VNNI void tiles_vnni(const Problem& p, InputQuant q, const uint8_t* qa, const int32_t* zcs,
                             int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t m0 = t * 4;
    const uint8_t* a = qa + m0 * p.Kp;
    switch (std::min<int64_t>(4, p.M - m0)) {  // the last tile may hold fewer rows: compute only those
      case 1: rows_vnni<1>(p, q, a, zcs, m0); break;
      case 2: rows_vnni<2>(p, q, a, zcs, m0); break;
      case 3: rows_vnni<3>(p, q, a, zcs, m0); break;
      default: rows_vnni<4>(p, q, a, zcs, m0); break;
    }
  }
}

#endif  // BULWARK_X86

// ------------------------------------------------------------------------------------------------ the op

// One step on the path this call takes.
#if BULWARK_X86
#define DISPATCH(step, ...) (vnni ? step##_vnni(__VA_ARGS__) : step##_portable(__VA_ARGS__))
#else
#define DISPATCH(step, ...) step##_portable(__VA_ARGS__)
#endif

at::Tensor run(const at::Tensor& input, const at::Tensor& weight, int64_t in_features,
               const at::Tensor& w_scale, const std::optional<at::Tensor>& bias, bool relu, bool portable) {
  TORCH_CHECK(weight.scalar_type() == at::kChar && weight.dim() == 3 && weight.size(2) == 4,
              "bulwark::int8_linear: the weight must be int8 [ceil(K/4), N, 4] (bulwark.kernels.pack), got ",
              weight.scalar_type(), " ", weight.sizes());
  TORCH_CHECK(input.dim() >= 1 && input.is_floating_point(), "bulwark::int8_linear: the input must be a "
              "floating-point tensor [..., K], got ", input.scalar_type(), " ", input.sizes());
  const at::Tensor x = input.to(at::kFloat).contiguous(), w = weight.contiguous();
  const int64_t K = x.size(-1), N = w.size(1), Kp = w.size(0) * 4;
  TORCH_CHECK(in_features > 0 && (in_features + 3) / 4 * 4 == Kp, "bulwark::int8_linear: in_features ",
              in_features, " does not fit a weight packed for ", Kp, " (bulwark.kernels.pack)");
  TORCH_CHECK(K == in_features, "bulwark::int8_linear: the input has ", K, " features; the layer takes ",
              in_features);
  const at::Tensor s = w_scale.to(at::kFloat).contiguous();
  TORCH_CHECK(s.numel() == 1 || s.numel() == N, "bulwark::int8_linear: w_scale needs 1 or ", N,
              " values, got ", s.numel());
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) {
    b = bias->to(at::kFloat).contiguous();
    TORCH_CHECK(b->numel() == N, "bulwark::int8_linear: bias needs ", N, " values, got ", b->numel());
  }
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = N;
  at::Tensor out = at::empty(shape, x.options());
  const int64_t M = x.numel() / K;
  if (M == 0) return out;

  const bool vnni = !portable && has_vnni();
  Problem p{x.data_ptr<float>(), M, K, Kp, N, w.data_ptr<int8_t>(), s.data_ptr<float>(), s.numel() > 1,
            b ? b->data_ptr<float>() : nullptr, relu, out.data_ptr<float>()};
  float lo, hi;
  bool finite;
  DISPATCH(minmax, p, lo, hi, finite);
  TORCH_CHECK(finite, "bulwark::int8_linear: the input holds NaN or infinity; an int8 layer needs finite "
              "inputs (the guard in front of inference rejects them)");
  const InputQuant q = choose(lo, hi);
  TORCH_CHECK(std::isfinite(q.scale), "bulwark::int8_linear: the input's range (", lo, " to ", hi,
              ") overflows float32; an int8 layer cannot represent it");

  // Buffers reused across calls on this thread: no allocation on the hot path but the output.
  static thread_local std::vector<uint8_t> qa;
  static thread_local std::vector<int32_t> zcs;
  const int64_t tiles = (M + 3) / 4;
  qa.resize(tiles * 4 * Kp);
  zcs.resize(N);
  DISPATCH(quantize, p, q, qa.data(), tiles * 4);
  DISPATCH(colsum, p, q.zero, zcs.data());
  // Row tiles split across torch's intra-op threads (inline with one thread, as Triton's instances run).
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / (4 * Kp * N));
  const uint8_t* qd = qa.data();
  const int32_t* zd = zcs.data();
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
    DISPATCH(tiles, p, q, qd, zd, t0, t1);
  });
  return out;
}

at::Tensor int8_linear(const at::Tensor& input, const at::Tensor& weight, int64_t in_features,
                       const at::Tensor& w_scale, const std::optional<at::Tensor>& bias, bool relu) {
  return run(input, weight, in_features, w_scale, bias, relu, /*portable=*/false);
}

at::Tensor int8_linear_portable(const at::Tensor& input, const at::Tensor& weight, int64_t in_features,
                                const at::Tensor& w_scale, const std::optional<at::Tensor>& bias, bool relu) {
  return run(input, weight, in_features, w_scale, bias, relu, /*portable=*/true);
}

std::string int8_kernel_isa() { return has_vnni() ? "avx512_vnni" : "portable"; }

}  // namespace

TORCH_LIBRARY(bulwark, m) {
  m.def("int8_linear(Tensor input, Tensor weight, int in_features, Tensor w_scale, Tensor? bias, bool relu) "
        "-> Tensor");
  m.def("int8_linear_portable(Tensor input, Tensor weight, int in_features, Tensor w_scale, Tensor? bias, "
        "bool relu) -> Tensor");
  m.def("int8_kernel_isa() -> str", &int8_kernel_isa);
}

TORCH_LIBRARY_IMPL(bulwark, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("int8_linear_portable", &int8_linear_portable);
}
