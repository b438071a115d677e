/// Seeded random data for the benchmark fixtures (host only): splitmix64, random finite e4m3
/// codes, bf16 bits, uniform floats in [0, 1).
#pragma once
#include <cstdint>

namespace indexlab::cuda::detail {

inline uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
/// Random finite e4m3 code of magnitude in about [2^-3, 2^3), random sign: never 0 or NaN.
inline uint8_t rand_code(uint64_t& s) {
  const uint64_t r = splitmix(s);
  const uint8_t exp = static_cast<uint8_t>(4 + (r % 7));  // biased exponent 4..10
  const uint8_t man = static_cast<uint8_t>((r >> 8) & 7);
  return static_cast<uint8_t>(((r >> 16) & 1) << 7 | exp << 3 | man);
}
/// Random finite non-zero bf16 bits of magnitude in about [2^-3, 2^3), random sign, 7 random
/// mantissa bits.
inline uint16_t rand_bf16(uint64_t& s) {
  const uint64_t r = splitmix(s);
  const uint16_t exp = static_cast<uint16_t>(124 + (r % 6));  // 2^-3 .. 2^2
  return static_cast<uint16_t>(((r >> 16) & 1) << 15 | exp << 7 | ((r >> 8) & 0x7F));
}
inline float rand_unit(uint64_t& s) { return static_cast<float>((splitmix(s) >> 40) * (1.0 / 16777216.0)); }

}  // namespace indexlab::cuda::detail
