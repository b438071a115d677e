/// Number formats of SPEC section 7 (e4m3fn, bf16, UE8M0) by bit manipulation, exact on any host.
#include "reference/numerics.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace indexlab::ref {
namespace {

uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;
constexpr uint32_t k464Bits = 0x43E80000u;            // 1.8125 * 2^8, midpoint of 448 and 480
constexpr uint32_t kE4m3MinNormalBits = 0x3C800000u;  // 2^-6
constexpr uint8_t kE4m3MaxCode = 0x7E;                // 448
constexpr uint8_t kE4m3NanCode = 0x7F;

// Rounds a finite |x| <= 464 (bits a, sign cleared) to an e4m3 magnitude code, nearest even.
uint8_t round_magnitude_to_e4m3(uint32_t a) {
  const uint32_t fields = a & 0x7FFFFFu;
  if (a >= kE4m3MinNormalBits) {
    // Normal: keep 3 of the 23 fraction bits; a carry out of the fraction bumps the exponent.
    const int exponent = static_cast<int>(a >> 23) - 127;  // in [-6, 8]
    uint32_t code = (static_cast<uint32_t>(exponent + 7) << 3) | (fields >> 20);
    const uint32_t rest = fields & 0xFFFFFu;
    if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) ++code;
    return static_cast<uint8_t>(code);
  }
  // Subnormal range: the code is |x| / 2^-9 rounded to an integer in [0, 8] (8 is 2^-6, code 0x08).
  const int biased = static_cast<int>(a >> 23);
  if (biased == 0) return 0;  // fp32 subnormals are below 2^-126, far under half of 2^-9
  const uint32_t significand = fields | 0x800000u;   // |x| = significand * 2^(biased - 150)
  const int shift = 141 - biased;                    // |x| / 2^-9 = significand / 2^shift
  if (shift >= 25) return 0;                         // below 0.5 units
  const uint32_t code = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return static_cast<uint8_t>(code + ((rest > half || (rest == half && (code & 1u))) ? 1u : 0u));
}

}  // namespace

float e4m3_to_float(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t exponent = (code >> 3) & 0xFu;
  const uint32_t mantissa = code & 0x7u;
  if (exponent == 0xFu && mantissa == 0x7u) return float_of(sign | 0x7FC00000u);
  if (exponent == 0) {
    // Subnormal: mantissa * 2^-9, exact in fp32.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-9f;
    return float_of(sign | bits_of(magnitude));
  }
  return float_of(sign | ((exponent - 7 + 127) << 23) | (mantissa << 20));
}

uint8_t float_to_e4m3_satfinite(float x) {
  const uint32_t u = bits_of(x);
  const uint32_t a = u & kAbsMask;
  if (a > kInfBits) return kE4m3NanCode;
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (a > k464Bits) return sign | kE4m3MaxCode;  // +-inf included
  return sign | round_magnitude_to_e4m3(a);
}

uint8_t float_to_e4m3_nonsat(float x) {
  const uint32_t u = bits_of(x);
  const uint32_t a = u & kAbsMask;
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  // NaN, +-inf and |x| > 464 (464 itself ties to 448, as in PyTorch, ml_dtypes and __NV_NOSAT).
  if (a > k464Bits) return sign | kE4m3NanCode;
  return sign | round_magnitude_to_e4m3(a);
}

float bf16_to_float(uint16_t bits) { return float_of(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_bf16(float x) {
  const uint32_t u = bits_of(x);
  if ((u & kAbsMask) > kInfBits) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float ue8m0_from_bits(float s) {
  const uint32_t u = bits_of(s);
  int exponent = static_cast<int>((u >> 23) & 0xFFu) - 127 + ((u & 0x7FFFFFu) != 0 ? 1 : 0);
  if (exponent < -126) exponent = -126;
  if (exponent > 127) exponent = 127;
  return float_of(static_cast<uint32_t>(exponent + 127) << 23);
}

float ue8m0_exp2_ceil_log2(float s) {
  // Host libm's exp2f, ceilf and log2f; CUDA's device log2f may round differently.
  return std::exp2f(std::ceil(std::log2f(s)));
}

uint64_t ulp_distance(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<uint64_t>::max();
  // Map to a monotone integer line on which +0 and -0 are both 0.
  auto key = [](float x) {
    const uint32_t u = bits_of(x);
    const int64_t magnitude = static_cast<int64_t>(u & kAbsMask);
    return (u >> 31) ? -magnitude : magnitude;
  };
  const int64_t ka = key(a);
  const int64_t kb = key(b);
  return static_cast<uint64_t>(ka > kb ? ka - kb : kb - ka);
}

float next_up(float x) { return std::nextafter(x, std::numeric_limits<float>::infinity()); }

float next_down(float x) { return std::nextafter(x, -std::numeric_limits<float>::infinity()); }

}  // namespace indexlab::ref
