/// Number formats of the contract (SPEC section 7): e4m3fn, bf16 and UE8M0, bit-exact on the host.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace indexlab::ref {

// ---- e4m3fn (OCP): bias 7, max finite 448, no infinity, NaN = 0x7F / 0xFF -------------------

/// Exact decode of an e4m3fn code (every code; 0x7F and 0xFF decode to NaN).
float e4m3_to_float(uint8_t code);
/// CUDA's satfinite conversion: round to nearest even; |x| >= 464 (and +-inf) saturate to +-448;
/// NaN gives 0x7F (sign dropped); subnormals handled exactly; -0 keeps its sign (0x80).
uint8_t float_to_e4m3_satfinite(float x);
/// The non-saturating conversion of PyTorch / ml_dtypes: as satfinite for |x| <= 464 (464 is the
/// midpoint of 448 and 480 and ties to 448, the even code), but |x| > 464 and +-inf become NaN
/// (0x7F with the sign of x, i.e. 0xFF for negatives; CUDA's __NV_NOSAT gives 0x7F for both).
uint8_t float_to_e4m3_nonsat(float x);
/// True when x is exactly an e4m3fn value (finite; +-0 included). Inline: validation runs it on
/// every key element.
inline bool is_e4m3_value(float x) {
  // Normal e4m3 values in [2^-6, 448] have 3 mantissa bits; subnormals are multiples of 2^-9.
  const float a = std::fabs(x);
  if (!(a <= 448.0f)) return false;  // NaN, inf, out of range
  uint32_t u;
  std::memcpy(&u, &a, sizeof u);
  if (a >= 0x1p-6f) return (u & 0xFFFFFu) == 0;
  const float m = a * 512.0f;  // exact: a power-of-two scaling of a small number
  return m == std::floor(m);
}
/// Rounds x to the nearest e4m3 value with the satfinite rule and decodes it.
inline float round_to_e4m3(float x) { return e4m3_to_float(float_to_e4m3_satfinite(x)); }

// ---- bf16 ----------------------------------------------------------------------------------

/// Exact decode of a bf16 bit pattern.
float bf16_to_float(uint16_t bits);
/// fp32 -> bf16, round to nearest even: (u + 0x7FFF + ((u >> 16) & 1)) >> 16 for non-NaN u;
/// NaN gives a quiet NaN with the sign kept (0x7FC0 | sign; CUDA's __float2bfloat16_rn gives
/// 0x7FFF for every NaN, verified on an H100 over all 2^32 inputs: only NaNs differ).
uint16_t float_to_bf16(float x);
inline float round_to_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }
inline bool is_bf16_value(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return x == x && (u & 0xFFFFu) == 0;
}

// ---- UE8M0 scales (powers of two) -------------------------------------------------------------

/// DeepGEMM / DeepSeek rule, from the bits of a positive finite fp32 s: 2^e where e is s's
/// exponent, plus one when the mantissa is non-zero; clamped to [2^-126, 2^127].
float ue8m0_from_bits(float s);
/// vLLM cache-writer rule: exp2f(ceilf(log2f(s))) in fp32 (host libm; CUDA's log2f may differ).
float ue8m0_exp2_ceil_log2(float s);

// ---- small helpers ----------------------------------------------------------------------------

/// Distance in units in the last place between two finite floats (monotone integer mapping;
/// +0 and -0 are 0 apart). Returns UINT64_MAX when either is NaN.
uint64_t ulp_distance(float a, float b);
/// Next representable fp32 toward +inf / -inf.
float next_up(float x);
float next_down(float x);

}  // namespace indexlab::ref
