/// Bit-exact emulation of Hopper wgmma accumulation (SPEC section 8, as measured): align, truncate, sum.
#include "reference/tc_emulation.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

namespace indexlab::ref {
namespace {

constexpr int kFp8ChunkK = 32;
constexpr int kBf16ChunkK = 16;

// Exponent of an operand for alignment: its exponent field, min_exponent for subnormals.
inline int operand_exponent(float v, int min_exponent) {
  return std::max(std::ilogb(std::fabs(v)), min_exponent);
}

// One k-chunk (n is the instruction's k, or fewer): the products a[t] * b[t] (exact in fp64) and
// acc are aligned to the largest exponent E among the non-zero terms and truncated toward zero to
// multiples of 2^(E - align_bits); their exact sum is truncated toward zero to result_bits
// significant bits within the fp32 range (spacing at least 2^-149; above FLT_MAX gives FLT_MAX).
// A product's exponent is ea + eb, the sum of its operands' exponents (subnormals count as
// operand_min_exponent), when operand_min_exponent > INT32_MIN; otherwise it is the exponent of
// the normalized product. The accumulator enters with its own exponent.
// An exact zero sum gives +0, a negative sum truncated to zero gives -0. Non-finite terms fall
// back to plain fp32 arithmetic, so a NaN or inf comes out.
float aligned_truncated_chunk(const float* a, const float* b, int n, float acc, int align_bits,
                              int result_bits, int operand_min_exponent) {
  auto product = [&](int t) { return static_cast<double>(a[t]) * static_cast<double>(b[t]); };
  bool finite = std::isfinite(acc);
  int max_exponent = acc != 0.0f && finite ? std::ilogb(acc) : INT32_MIN;  // of the largest term
  for (int t = 0; t < n; ++t) {
    const double p = product(t);
    if (!std::isfinite(p)) {
      finite = false;
    } else if (p != 0.0) {
      const int e = operand_min_exponent > INT32_MIN
                        ? operand_exponent(a[t], operand_min_exponent) + operand_exponent(b[t], operand_min_exponent)
                        : std::ilogb(p);
      max_exponent = std::max(max_exponent, e);
    }
  }
  if (!finite) {
    float sum = acc;
    for (int t = 0; t < n; ++t) sum += a[t] * b[t];
    return sum;
  }
  if (max_exponent == INT32_MIN) return 0.0f;

  // Each term becomes an integer count of units 2^unit_exponent; |count| < 2^(align_bits + 2).
  const int unit_exponent = max_exponent - align_bits;
  auto truncated_units = [&](double term) {
    return static_cast<int64_t>(std::trunc(std::ldexp(term, -unit_exponent)));
  };
  int64_t units = truncated_units(acc);
  for (int t = 0; t < n; ++t) units += truncated_units(product(t));
  if (units == 0) return 0.0f;

  const bool negative = units < 0;
  uint64_t magnitude = static_cast<uint64_t>(negative ? -units : units);
  int bit_length = 0;
  while ((magnitude >> bit_length) != 0) ++bit_length;
  const int result_exponent = unit_exponent + bit_length - 1;
  const int keep_exponent = std::max(result_exponent - (result_bits - 1), -149);
  if (keep_exponent > unit_exponent) {
    const int drop = keep_exponent - unit_exponent;
    magnitude = drop >= 64 ? 0 : (magnitude >> drop) << drop;
  }
  double value = std::ldexp(static_cast<double>(magnitude), unit_exponent);  // exact: < 54 bits
  value = std::min(value, static_cast<double>(FLT_MAX));
  return static_cast<float>(negative ? -value : value);
}

}  // namespace

float wgmma_fp8_chunk(const float* a, const float* b, int n, float acc) {
  return aligned_truncated_chunk(a, b, n, acc, 13, 14, /*e4m3 min normal exponent*/ -6);
}

float wgmma_fp8_dot(const float* a, const float* b, int n, float acc) {
  for (int start = 0; start < n; start += kFp8ChunkK) {
    acc = wgmma_fp8_chunk(a + start, b + start, std::min(kFp8ChunkK, n - start), acc);
  }
  return acc;
}

float wgmma_bf16_chunk(const float* a, const float* b, int n, float acc) {
  return aligned_truncated_chunk(a, b, n, acc, 25, 24, /*bf16 min normal exponent*/ -126);
}

float tc_chunk(const float* a, const float* b, int n, float acc, const TcChunkModel& m) {
  const int min_e = m.operand_exponents ? m.operand_min_exponent : INT32_MIN;
  if (!m.ftz_operands) return aligned_truncated_chunk(a, b, n, acc, m.align_bits, m.result_bits, min_e);
  std::vector<float> fa(a, a + n), fb(b, b + n);
  for (int t = 0; t < n; ++t) {
    if (std::fpclassify(fa[t]) == FP_SUBNORMAL) fa[t] = 0.0f;
    if (std::fpclassify(fb[t]) == FP_SUBNORMAL) fb[t] = 0.0f;
  }
  return aligned_truncated_chunk(fa.data(), fb.data(), n, acc, m.align_bits, m.result_bits, min_e);
}

float wgmma_bf16_dot(const float* a, const float* b, int n, float acc) {
  for (int start = 0; start < n; start += kBf16ChunkK) {
    acc = wgmma_bf16_chunk(a + start, b + start, std::min(kBf16ChunkK, n - start), acc);
  }
  return acc;
}

}  // namespace indexlab::ref
