/// Tests of the wgmma accumulation emulation (reference/tc_emulation.h) on hand-worked chunks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "reference/numerics.h"
#include "reference/tc_emulation.h"

namespace indexlab::ref {
namespace {

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

uint32_t seed_from_env() {
  const char* env = std::getenv("INDEXLAB_SEED");
  return env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 20261127u;
}

// Checks that every input of a hand-worked case is representable, so the case means what it says.
void expect_all(const std::vector<float>& v, bool (*is_value)(float)) {
  for (float x : v) EXPECT_TRUE(is_value(x)) << x;
}

float fp8_chunk(const std::vector<float>& a, const std::vector<float>& b, float acc) {
  expect_all(a, is_e4m3_value);
  expect_all(b, is_e4m3_value);
  const float r = wgmma_fp8_chunk(a.data(), b.data(), static_cast<int>(a.size()), acc);
  EXPECT_EQ(bits(r) & 0x3FFu, 0u) << "low 10 mantissa bits of " << r;
  return r;
}

float bf16_chunk(const std::vector<float>& a, const std::vector<float>& b, float acc) {
  expect_all(a, is_bf16_value);
  expect_all(b, is_bf16_value);
  return wgmma_bf16_chunk(a.data(), b.data(), static_cast<int>(a.size()), acc);
}

// Slow oracle of the rule in SPEC section 8, in fp64 with frexp and division by powers of two:
// align to the largest exponent keeping align_bits fraction bits (toward zero), sum, then keep
// result_bits significant bits (toward zero, fp32 spacing at least 2^-149). A term's exponent is
// floor(log2 |term|) for the accumulator; for a product it is the same when min_operand_exponent
// is 0 (SPEC 8's text), else the sum of the operands' floor(log2 |x|), each at least
// min_operand_exponent (the measured Hopper fp8 rule: ea + eb, subnormals at -6).
int floor_log2(double x) {
  int e;
  std::frexp(x, &e);  // |x| = m * 2^e with m in [0.5, 1)
  return e - 1;
}
float slow_chunk(const float* a, const float* b, int n, float acc, int align_bits,
                 int result_bits, int min_operand_exponent = 0) {
  std::vector<double> terms = {acc};
  for (int t = 0; t < n; ++t) terms.push_back(static_cast<double>(a[t]) * b[t]);
  int top = acc != 0 ? floor_log2(acc) : -100000;  // exponent of the largest term
  for (int t = 0; t < n; ++t) {
    if (terms[t + 1] == 0) continue;
    const int e = min_operand_exponent == 0
                      ? floor_log2(terms[t + 1])
                      : std::max(floor_log2(a[t]), min_operand_exponent) +
                            std::max(floor_log2(b[t]), min_operand_exponent);
    top = std::max(top, e);
  }
  if (top == -100000) return 0.0f;
  const double unit = std::ldexp(1.0, top - align_bits);
  double sum = 0;
  for (double t : terms) sum += std::trunc(t / unit) * unit;
  if (sum == 0) return 0.0f;
  int e;
  std::frexp(sum, &e);
  const double keep = std::ldexp(1.0, std::max(e - result_bits, -149));
  return static_cast<float>(std::trunc(sum / keep) * keep);
}

// ---- fp8 chunks: 13 fraction bits at the largest exponent, result truncated to 14 bits ----------

TEST(TcEmulation, Fp8WidelyDifferingExponents) {
  // Largest term 1.75 * 1.125 = 1.96875: E = 0, unit u = 2^-13 (counts below are in u).
  //   1.96875                                 = 16128      u
  //   0.01171875 * 0.02734375 = 2.625 u       -> 2         (truncated)
  //   -0.40625 * 0.001953125  = -6.5 u        -> -6        (toward zero, not -7)
  //   0.3125 * 0.0390625      = 100 u         -> 100
  //   acc 0.3f = 2457.6002 u                  -> 2457
  // Sum 18681 u = 2.2803955 has exponent 1: 13 fraction bits there is 2u, so 18680 u.
  const std::vector<float> a = {1.75f, 0.01171875f, -0.40625f, 0.3125f};
  const std::vector<float> b = {1.125f, 0.02734375f, 0.001953125f, 0.0390625f};
  EXPECT_EQ(fp8_chunk(a, b, 0.3f), 18680.0f / 8192.0f);
}

TEST(TcEmulation, Fp8AccumulatorLargerThanProducts) {
  // acc = 1000.3f sets E = 9, u = 2^-4:
  //   acc 1000.29999 = 16004.8 u -> 16004; 0.6875 * 1.125 = 0.7734375 = 12.375 u -> 12;
  //   -0.40625 * 0.15625 = -0.0634765625 = -1.015625 u -> -1.
  // Sum 16015 u = 1000.9375 (14 significant bits already). Round-to-nearest would give 1001.01.
  const std::vector<float> a = {0.6875f, -0.40625f};
  const std::vector<float> b = {1.125f, 0.15625f};
  EXPECT_EQ(fp8_chunk(a, b, 1000.3f), 1000.9375f);
}

TEST(TcEmulation, Fp8CancellationExposesAlignmentTruncation) {
  // +-1.96875 cancel; 0.01171875 * 0.0390625 = 0.000457763671875 = 3.75 u at E = 0 -> 3 u.
  const std::vector<float> a = {1.75f, -1.75f, 0.01171875f};
  const std::vector<float> b = {1.125f, 1.125f, 0.0390625f};
  EXPECT_EQ(fp8_chunk(a, b, 0.0f), 3.0f / 8192.0f);
  // Negative small term: -3.75 u -> -3 u (toward zero).
  const std::vector<float> a_neg = {1.75f, -1.75f, -0.01171875f};
  EXPECT_EQ(fp8_chunk(a_neg, b, 0.0f), -3.0f / 8192.0f);
  // 0.01171875 * 0.009765625 = 0.9375 u vanishes entirely: +0, though the exact sum is 1.1e-4.
  const std::vector<float> b_small = {1.125f, 1.125f, 0.009765625f};
  const float r = fp8_chunk(a, b_small, 0.0f);
  EXPECT_EQ(r, 0.0f);
  EXPECT_FALSE(std::signbit(r));
}

TEST(TcEmulation, Fp8NegativeSumTruncatesTowardZero) {
  // -1.875 * 1.125 = -2.109375 twice: E = 1, u = 2^-12, each -8640 u; -0.015625^2 = -1 u.
  // Sum -17281 u = -4.2189941 has exponent 2, where 13 fraction bits is 2u: -17280 u = -4.21875
  // (flooring would give -4.2192383).
  const std::vector<float> a = {-1.875f, -1.875f, -0.015625f};
  const std::vector<float> b = {1.125f, 1.125f, 0.015625f};
  EXPECT_EQ(fp8_chunk(a, b, 0.0f), -4.21875f);
}

TEST(TcEmulation, Fp8IncomingAccumulatorIsTruncatedToo) {
  // acc = 1.3f (0x3FA66666) is the largest term, E = 0: 10649.6 u -> 10649 u; the product
  // 0.5 * 0.0625 = 256 u. Result 10905 u = 1.3311767578125.
  const std::vector<float> a = {0.5f};
  const std::vector<float> b = {0.0625f};
  EXPECT_EQ(fp8_chunk(a, b, 1.3f), 10905.0f / 8192.0f);
  // 1.5 * 1.375 = 2.0625 is larger than acc, but a product aligns at the sum of its operands'
  // exponents (0 + 0; measured on an H100), so E stays 0: acc -1.3f = -10649.6 u -> -10649 u,
  // the product 16896 u. Result 6247 u = 0.7625732421875. (Aligning at the normalized product's
  // exponent 1, SPEC 8's text, would give 3124 u of 2^-12 = 0.7626953125.)
  EXPECT_EQ(fp8_chunk({1.5f}, {1.375f}, -1.3f), 6247.0f / 8192.0f);
}

TEST(TcEmulation, Fp8ChainOfFourChunksRetruncates) {
  // n = 128. Chunks 0..2 each hold 0.01171875 * 0.009765625 = 30 * 2^-18, which is 0.9375 u
  // with u = 2^-13; alone they are aligned to their own exponent, so the accumulator reaches
  // 90 * 2^-18 = 2.8125 u exactly. Chunk 3 holds 1.75 * 1.125 = 1.96875, which moves E to 0:
  // the accumulator truncates to 2 u, result 1.96875 + 2 u. One 128-wide alignment would
  // truncate each small product to 0 and give 1.96875.
  std::vector<float> a(128, 0.0f), b(128, 0.0f);
  for (int c = 0; c < 3; ++c) {
    a[32 * c + 5] = 0.01171875f;
    b[32 * c + 5] = 0.009765625f;
  }
  a[96 + 17] = 1.75f;
  b[96 + 17] = 1.125f;
  const float after_three = wgmma_fp8_dot(a.data(), b.data(), 96);
  EXPECT_EQ(after_three, 90.0f * 0x1p-18f);
  EXPECT_EQ(wgmma_fp8_dot(a.data(), b.data(), 128), 1.96875f + 2.0f / 8192.0f);
  EXPECT_EQ(wgmma_fp8_chunk(a.data() + 96, b.data() + 96, 32, after_three),
            1.96875f + 2.0f / 8192.0f);
  EXPECT_EQ(wgmma_fp8_chunk(a.data(), b.data(), 128, 0.0f), 1.96875f);
}

TEST(TcEmulation, Fp8DotMatchesChunkChainAndSlowOracle) {
  const uint32_t seed = seed_from_env();
  SCOPED_TRACE("INDEXLAB_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> code(0, 255);
  std::uniform_real_distribution<float> acc_dist(-30.0f, 30.0f);
  auto random_e4m3 = [&] {
    int c;
    do c = code(rng); while ((c & 0x7F) == 0x7F);
    return e4m3_to_float(static_cast<uint8_t>(c));
  };
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> a(128), b(128);
    for (int t = 0; t < 128; ++t) {
      a[t] = random_e4m3();
      b[t] = random_e4m3();
    }
    const float acc0 = trial % 3 == 0 ? 0.0f : acc_dist(rng);
    float chained = acc0;
    for (int c = 0; c < 4; ++c) {
      const float want = slow_chunk(&a[32 * c], &b[32 * c], 32, chained, 13, 14, -6);
      const float got = wgmma_fp8_chunk(&a[32 * c], &b[32 * c], 32, chained);
      ASSERT_EQ(bits(got), bits(want)) << "trial " << trial << " chunk " << c;
      ASSERT_EQ(bits(got) & 0x3FFu, 0u);
      chained = got;
    }
    ASSERT_EQ(bits(wgmma_fp8_dot(a.data(), b.data(), 128, acc0)), bits(chained)) << trial;
  }
}

// ---- bf16 chunks: 25 fraction bits at the largest exponent (of a product: ea + eb, measured by
// Sm90ProbeBf16), result truncated to fp32 ---------------------------------------------------------

TEST(TcEmulation, Bf16SubUlpTermsSurviveAlignmentThenTruncate) {
  // 1.25 * 0.75 = 0.9375 sets E = -1, u = 2^-26; 0.00018310546875 * 2^-12 = 1.5 * 2^-25 = 3 u is
  // kept exactly. 0.9375 + 1.5 * 2^-25 is 0.75 fp32 ulp (2^-24) above 0.9375: truncation drops
  // it (round-to-nearest would not).
  const std::vector<float> a = {1.25f, 0x1.8p-13f};
  const std::vector<float> b = {0.75f, 0x1p-12f};
  EXPECT_EQ(bf16_chunk(a, b, 0.0f), 0.9375f);
  // Two such terms sum to 6 u = 1.5 ulp before truncation: one ulp survives.
  const std::vector<float> a2 = {1.25f, 0x1.8p-13f, 0x1.8p-13f};
  const std::vector<float> b2 = {0.75f, 0x1p-12f, 0x1p-12f};
  EXPECT_EQ(bf16_chunk(a2, b2, 0.0f), 0.9375f + 0x1p-24f);
  // Negative: -0.9375 - 1.5 ulp truncates toward zero to -0.9375 - 1 ulp.
  EXPECT_EQ(bf16_chunk({-1.25f, -0x1.8p-13f, -0x1.8p-13f}, b2, 0.0f), -0.9375f - 0x1p-24f);
}

TEST(TcEmulation, Bf16CancellationExposesAlignmentTruncation) {
  // 1.5 * 2^-13 * 2^-14 = 0.75 u at E = -1: dropped, so the result is +0 although the exact sum
  // (1.1e-8) is an fp32 number.
  const std::vector<float> a = {1.25f, -1.25f, 0x1.8p-13f};
  const std::vector<float> b = {0.75f, 0.75f, 0x1p-14f};
  EXPECT_EQ(bf16_chunk(a, b, 0.0f), 0.0f);
  // An incoming accumulator below the products is aligned too: acc = 0.3f at E = -1 keeps
  // 25 fraction bits there: 0x3E99999A = 0.3000000119 = 20132660 u exactly; with
  // 0.9375 = 62914560 u the sum 83047220 u = 1.2375000 truncated to fp32 (spacing 2^-23 = 8 u):
  // 83047216 u = 0x1.3cccccp+0.
  EXPECT_EQ(bf16_chunk({1.25f}, {0.75f}, 0.3f), 0x1.3cccccp+0f);
}

TEST(TcEmulation, Bf16DotMatchesChunkChainAndSlowOracle) {
  const uint32_t seed = seed_from_env();
  SCOPED_TRACE("INDEXLAB_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> spread(-20, 20);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> a(64), b(64);
    for (int t = 0; t < 64; ++t) {
      a[t] = round_to_bf16(std::ldexp(normal(rng), spread(rng)));
      b[t] = round_to_bf16(normal(rng));
    }
    const float acc0 = trial % 2 ? 0.0f : normal(rng);
    float chained = acc0;
    for (int c = 0; c < 4; ++c) {
      const float want = slow_chunk(&a[16 * c], &b[16 * c], 16, chained, 25, 24, -126);
      const float got = wgmma_bf16_chunk(&a[16 * c], &b[16 * c], 16, chained);
      ASSERT_EQ(bits(got), bits(want)) << "trial " << trial << " chunk " << c;
      chained = got;
    }
    ASSERT_EQ(bits(wgmma_bf16_dot(a.data(), b.data(), 64, acc0)), bits(chained)) << trial;
  }
}

TEST(TcEmulation, EmptyAndNonFiniteInputs) {
  const float none[1] = {0.0f};
  EXPECT_EQ(wgmma_fp8_dot(none, none, 0, 0.3f), 0.3f);  // no instruction runs
  EXPECT_EQ(wgmma_fp8_chunk(none, none, 0, 0.3f), 4915.0f / 16384.0f);  // 0.3 truncated, E = -2
  const float nan_code[1] = {e4m3_to_float(0x7F)};
  const float one[1] = {1.5f};
  EXPECT_TRUE(std::isnan(wgmma_fp8_chunk(nan_code, one, 1, 0.0f)));
  EXPECT_TRUE(std::isinf(wgmma_bf16_chunk(one, one, 1, -INFINITY)));
}

}  // namespace
}  // namespace indexlab::ref
