/// Tests of the per-row e4m3 quantizers (reference/quant.h): hand-worked rows, pinned regressions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "reference/numerics.h"
#include "reference/quant.h"

namespace indexlab::ref {
namespace {

struct Quantized {
  float scale;
  std::vector<int> codes;  // int, so that failures print numbers rather than characters
};

Quantized quantize(const std::vector<float>& x, Quantizer kind, bool ue8m0, float eps = 1e-4f) {
  QuantConfig cfg;
  cfg.kind = kind;
  cfg.ue8m0 = ue8m0;
  cfg.eps = eps;
  std::vector<uint8_t> codes(x.size());
  Quantized q;
  q.scale = quantize_row_e4m3(x.data(), static_cast<int64_t>(x.size()), cfg, codes.data());
  q.codes.assign(codes.begin(), codes.end());
  return q;
}

using Codes = std::vector<int>;
constexpr Quantizer kAll[] = {Quantizer::kDeepGemm, Quantizer::kVllmCache, Quantizer::kDeepSeek};

uint32_t seed_from_env() {
  const char* env = std::getenv("INDEXLAB_SEED");
  return env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 20261127u;
}

TEST(Quant, HandWorkedPowerOfTwoScale) {
  // amax = 3.5, so s = 3.5 / 448 = 2^-7 exactly for every kind (3.5 * fl(1/448) rounds to 2^-7
  // too), UE8M0 keeps it, and x / s = x * 128:
  //   1.3f * 128 = 166.4 -> spacing 16 in [128, 256): 160 (exp 14, mantissa 2)   -> 0x72
  //   -3.5 * 128 = -448                                                          -> 0xFE
  //   0.4f * 128 = 51.2  -> spacing 4 in [32, 64): 52 (exp 12, mantissa 5)       -> 0x65
  //   0.01f * 128 = 1.28 -> spacing 1/8 in [1, 2): 1.25 (exp 7, mantissa 2)      -> 0x3A
  const std::vector<float> x = {1.3f, -3.5f, 0.4f, 0.01f};
  for (Quantizer kind : kAll) {
    for (bool ue8m0 : {false, true}) {
      const Quantized q = quantize(x, kind, ue8m0);
      EXPECT_EQ(q.scale, 0x1p-7f) << quantizer_name(kind) << " ue8m0=" << ue8m0;
      EXPECT_EQ(q.codes, (Codes{0x72, 0xFE, 0x65, 0x3A})) << quantizer_name(kind) << " " << ue8m0;
    }
  }
}

TEST(Quant, HandWorkedUe8m0RoundsScaleUp) {
  // amax = 5: s = fl(5/448) = 0x1.6db6dcp-7 in (2^-7, 2^-6); every UE8M0 rule gives 2^-6.
  //   without UE8M0: 5/s -> 448 (0x7E); -1.7/s = -152.3 -> -160 (0xF2); 0.3/s = 26.9 -> 26 (0x5D)
  //   with s = 2^-6 (x * 64): 320 (0x7A); -108.8 -> -112 (0xEE); 19.2 -> 20 (0x5A)
  const std::vector<float> x = {5.0f, -1.7f, 0.3f};
  for (Quantizer kind : kAll) {
    const Quantized plain = quantize(x, kind, false);
    EXPECT_EQ(plain.scale, 0x1.6db6dcp-7f) << quantizer_name(kind);
    EXPECT_EQ(plain.codes, (Codes{0x7E, 0xF2, 0x5D})) << quantizer_name(kind);
    const Quantized ue = quantize(x, kind, true);
    EXPECT_EQ(ue.scale, 0x1p-6f) << quantizer_name(kind);
    EXPECT_EQ(ue.codes, (Codes{0x7A, 0xEE, 0x5A})) << quantizer_name(kind);
  }
}

TEST(Quant, VllmUe8m0LandsBelowScaleAndSaturates) {
  // amax = next_up(7) = 7 + 2^-21, s = fl(amax / 448) = next_up(2^-6).
  //   deepgemm / deepseek UE8M0 (bits): mantissa non-zero -> 2^-5; codes x * 32:
  //     224.0000x -> 224 (0x76); -73.6 -> -72 (0xE9); 3.2 -> 3.25 (0x45)
  //   vllm_cache UE8M0: log2f(s) = -6 + 1.7e-7 rounds to -6, so exp2f(ceilf(.)) = 2^-6 < s and
  //     x / s = x * 64: 448.0002 saturates to 448 (0x7E); -147.2 -> -144 (0xF1); 6.4 -> 6.5 (0x4D)
  const std::vector<float> x = {next_up(7.0f), -2.3f, 0.1f};
  EXPECT_EQ(quantize(x, Quantizer::kVllmCache, false).scale, next_up(0x1p-6f));
  const Quantized vllm = quantize(x, Quantizer::kVllmCache, true);
  EXPECT_EQ(vllm.scale, 0x1p-6f);
  EXPECT_EQ(vllm.codes, (Codes{0x7E, 0xF1, 0x4D}));
  for (Quantizer kind : {Quantizer::kDeepGemm, Quantizer::kDeepSeek}) {
    const Quantized q = quantize(x, kind, true);
    EXPECT_EQ(q.scale, 0x1p-5f) << quantizer_name(kind);
    EXPECT_EQ(q.codes, (Codes{0x76, 0xE9, 0x45})) << quantizer_name(kind);
  }
}

TEST(Quant, RegressionReciprocalMultiplyAndDivisionGiveDifferentCodes) {
  // Found by a search over random rows near e4m3 midpoints. s = fl(amax / 448) = 0x1.6ec306p-9:
  // x[0] * fl(1/s) = 400 exactly, the 384 | 416 midpoint, which ties to 384 (0x7C, even); but
  // fl(x[0] / s) = 400.00003 rounds to 416 (0x7D). The exact quotient is 400.000028.
  const std::vector<float> x = {0x1.1e885ep+0f, -0.3f, 0x1.40eaa6p+0f, 0.05f};
  const Quantized deepgemm = quantize(x, Quantizer::kDeepGemm, false);
  const Quantized vllm = quantize(x, Quantizer::kVllmCache, false);
  EXPECT_EQ(deepgemm.scale, 0x1.6ec306p-9f);
  EXPECT_EQ(vllm.scale, 0x1.6ec306p-9f);
  EXPECT_EQ(deepgemm.codes, (Codes{0x7C, 0xED, 0x7E, 0x59}));
  EXPECT_EQ(vllm.codes, (Codes{0x7D, 0xED, 0x7E, 0x59}));
  // deepseek's s = amax * fl(1/448) is one ulp above; x[0] / s = 399.99997 gives 0x7C.
  const Quantized deepseek = quantize(x, Quantizer::kDeepSeek, false);
  EXPECT_EQ(deepseek.scale, 0x1.6ec308p-9f);
  EXPECT_EQ(deepseek.codes, (Codes{0x7C, 0xED, 0x7E, 0x59}));
  // With UE8M0 all three use s = 2^-8 and agree: 286.5 -> 288 (0x79) etc.
  for (Quantizer kind : kAll) {
    const Quantized q = quantize(x, kind, true);
    EXPECT_EQ(q.scale, 0x1p-8f) << quantizer_name(kind);
    EXPECT_EQ(q.codes, (Codes{0x79, 0xEA, 0x7A, 0x55})) << quantizer_name(kind);
  }
}

TEST(Quant, RegressionDeepSeekScaleOneUlpAboveFlipsCode) {
  // amax * fl(1/448) = 0x1.d3fb20p-10 is one ulp above fl(amax / 448) = 0x1.d3fb1ep-10, and
  // x[0] / s crosses the 0.1015625 | 0.109375 midpoint 0.10546875: 0x1E with division by the
  // smaller s, 0x1D with deepseek's.
  const std::vector<float> x = {0x1.8adbe2p-13f, -0.6f, 0x1.997bbap-1f};
  const Quantized deepgemm = quantize(x, Quantizer::kDeepGemm, false);
  const Quantized vllm = quantize(x, Quantizer::kVllmCache, false);
  const Quantized deepseek = quantize(x, Quantizer::kDeepSeek, false);
  EXPECT_EQ(deepgemm.scale, 0x1.d3fb1ep-10f);
  EXPECT_EQ(deepseek.scale, 0x1.d3fb20p-10f);
  EXPECT_EQ(deepgemm.codes, (Codes{0x1E, 0xFB, 0x7E}));
  EXPECT_EQ(vllm.codes, (Codes{0x1E, 0xFB, 0x7E}));
  EXPECT_EQ(deepseek.codes, (Codes{0x1D, 0xFB, 0x7E}));
}

TEST(Quant, ZeroRowUsesEpsFloor) {
  // amax = 0: s = eps / 448 (eps = 1e-4f gives 0x1.df595ap-23); codes are +-0, -0 keeping its sign.
  const std::vector<float> x = {0.0f, -0.0f, 0.0f};
  for (Quantizer kind : kAll) {
    const Quantized q = quantize(x, kind, false);
    EXPECT_EQ(q.scale, 0x1.df595ap-23f) << quantizer_name(kind);
    EXPECT_EQ(q.codes, (Codes{0x00, 0x80, 0x00})) << quantizer_name(kind);
    EXPECT_EQ(quantize(x, kind, true).scale, 0x1p-22f) << quantizer_name(kind);
  }
  EXPECT_EQ(quantize(x, Quantizer::kVllmCache, false, 1e-10f).scale, 0x1.f6a246p-43f);
  EXPECT_EQ(quantize(x, Quantizer::kVllmCache, true, 1e-10f).scale, 0x1p-42f);
  EXPECT_EQ(quantize({}, Quantizer::kDeepGemm, false).scale, 0x1.df595ap-23f);
}

TEST(Quant, AmaxBelowEps) {
  // amax = 3e-5 < eps = 1e-4: s = 1e-4 / 448, so 3e-5 / s = 134.4 -> 128 (0x70) and
  // -1e-5 / s = -44.8 -> -44 (0xE3). With UE8M0 s = 2^-22: 125.8 -> 128, -41.9 -> -40 (0xE2).
  // vLLM's q quantizer (eps = 1e-10) scales by the true amax: 448 (0x7E) and -149.3 -> -144 (0xF1).
  const std::vector<float> x = {3e-5f, -1e-5f};
  for (Quantizer kind : kAll) {
    EXPECT_EQ(quantize(x, kind, false).codes, (Codes{0x70, 0xE3})) << quantizer_name(kind);
    EXPECT_EQ(quantize(x, kind, true).codes, (Codes{0x70, 0xE2})) << quantizer_name(kind);
  }
  const Quantized q = quantize(x, Quantizer::kVllmCache, false, 1e-10f);
  EXPECT_EQ(q.scale, 0x1.1f9c02p-24f);
  EXPECT_EQ(q.codes, (Codes{0x7E, 0xF1}));
}

// Spacing of the e4m3 grid at magnitude y < 448.
double e4m3_spacing(double y) {
  return y < 0x1p-6 ? 0x1p-9 : std::ldexp(1.0, static_cast<int>(std::floor(std::log2(y))) - 3);
}

TEST(Quant, RandomRowsDecodeWithinHalfSpacing) {
  const uint32_t seed = seed_from_env();
  SCOPED_TRACE("INDEXLAB_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> log_amax(-12.0f, 12.0f);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int row = 0; row < 500; ++row) {
    const float amax = std::exp2(log_amax(rng)) * 1.01f;
    std::vector<float> x(64);
    for (float& v : x) v = amax * unit(rng);
    x[row % 64] = row % 2 ? amax : -amax;
    for (Quantizer kind : kAll) {
      for (bool ue8m0 : {false, true}) {
        const Quantized q = quantize(x, kind, ue8m0);
        ASSERT_GT(q.scale, 0.0f);
        ASSERT_GE(static_cast<double>(q.scale) * 448 * (1 + 0x1p-20), amax * (ue8m0 ? 0.999 : 1));
        for (size_t t = 0; t < x.size(); ++t) {
          // y is the exact quotient to fp64 rounding; deepgemm's fp32 reciprocal adds ~2^-22 |y|.
          const double y = static_cast<double>(x[t]) / q.scale;
          const double decoded = e4m3_to_float(static_cast<uint8_t>(q.codes[t]));
          if (std::fabs(y) >= 448) {
            ASSERT_EQ(std::fabs(decoded), 448.0) << quantizer_name(kind) << " t=" << t;
          } else {
            ASSERT_LE(std::fabs(decoded - y), 0.5 * e4m3_spacing(std::fabs(y)) * (1 + 0x1p-16))
                << quantizer_name(kind) << " ue8m0=" << ue8m0 << " row=" << row << " t=" << t;
          }
        }
      }
    }
  }
}

TEST(Quant, NamesRoundTripAndUnknownIsRejected) {
  for (Quantizer kind : kAll) {
    Quantizer parsed = Quantizer::kDeepGemm;
    ASSERT_TRUE(parse_quantizer(quantizer_name(kind), &parsed).ok());
    EXPECT_EQ(parsed, kind);
  }
  EXPECT_STREQ(quantizer_name(Quantizer::kVllmCache), "vllm_cache");
  Quantizer parsed = Quantizer::kVllmCache;
  const Status status = parse_quantizer("DeepGEMM", &parsed);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("DeepGEMM"), std::string::npos) << status.message();
  EXPECT_EQ(parsed, Quantizer::kVllmCache);
  EXPECT_FALSE(parse_quantizer("", &parsed).ok());
}

}  // namespace
}  // namespace indexlab::ref
