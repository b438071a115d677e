// The bf16 wgmma model (reference/tc_emulation.h, measured by Sm90ProbeBf16 on an H100) on
// hand-worked cases and on outputs recorded from the GPU probe, plus the bf16 sm90 DSA emulation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "reference/emulate_sm90_dsa.h"
#include "reference/numerics.h"
#include "reference/problem.h"
#include "reference/tc_emulation.h"

namespace indexlab::ref {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float bf16_model(const std::vector<float>& a, const std::vector<float>& b, float acc) {
  for (float v : a) EXPECT_TRUE(is_bf16_value(v)) << v;
  for (float v : b) EXPECT_TRUE(is_bf16_value(v)) << v;
  return wgmma_bf16_chunk(a.data(), b.data(), static_cast<int>(a.size()), acc);
}
// SPEC 8's first text: the exponent of the normalized product (what the probe refuted).
float normalized_model(const std::vector<float>& a, const std::vector<float>& b, float acc) {
  TcChunkModel m;
  m.operand_exponents = false;
  return tc_chunk(a.data(), b.data(), static_cast<int>(a.size()), acc, m);
}

TEST(TcEmulationBf16, ProductAlignsAtSumOfOperandExponents) {
  // 1.5 * 1.5 = 2.25: ea + eb = 0, so the unit is u = 2^-25 (the normalized product's exponent
  // is 1, which would give 2^-24). Fifteen terms 1.5 * 2^-13 * 2^-12 = 1.5 u each truncate to
  // 1 u: 15 u. 2.25 + 15 u truncated to fp32 (spacing 2^-22 = 8 u at exponent 1): 2.25 + 2^-22.
  std::vector<float> a(16, 0x1.8p-13f), b(16, 0x1p-12f);
  a[0] = 1.5f;
  b[0] = 1.5f;
  EXPECT_EQ(bf16_model(a, b, 0.0f), 2.25f + 0x1p-22f);
  // At 2^-24 the small terms are 0.75 units each and all vanish.
  EXPECT_EQ(normalized_model(a, b, 0.0f), 2.25f);
  // With a mantissa product below 2 both agree: 1.25 * 1.25 = 1.5625, exponent 0 either way.
  a[0] = b[0] = 1.25f;
  EXPECT_EQ(bf16_model(a, b, 0.0f), normalized_model(a, b, 0.0f));
  EXPECT_EQ(bf16_model(a, b, 0.0f), 1.5625f + 0x1.8p-22f);  // 15 u -> 12 u (spacing 2^-23 = 4 u)
}

TEST(TcEmulationBf16, AccumulatorEntersWithItsOwnExponent) {
  // acc = 4 sets E = 2 (u = 2^-23); the product 1 * 2^-24 is half a unit: dropped.
  EXPECT_EQ(bf16_model({1.0f}, {0x1p-24f}, 4.0f), 4.0f);
  // A negative sum truncates toward zero: -(4 + 3 * 2^-22) keeps -(4 + 2^-21) (spacing 2^-21).
  EXPECT_EQ(bf16_model({-1.5f, -1.5f}, {0x1p-22f, 0x1p-22f}, -4.0f), -(4.0f + 0x1p-21f));
  // Exact cancellation gives +0.
  EXPECT_EQ(bits(bf16_model({1.5f, -1.5f}, {0.75f, 0.75f}, 0.0f)), 0u);
}

TEST(TcEmulationBf16, SubnormalOperandCountsAsMinNormalExponent) {
  // a0 = 2^-127 (bf16 subnormal 0x0040) times b0 = 2^120: alignment exponent -126 + 120 = -6,
  // u = 2^-31. Fifteen terms 1.75 * 2^-31 = 1.75 u truncate to 1 u: 15 u = 7.5 * 2^-30, and the
  // result (spacing 2^-30 at 2^-7) keeps 7 * 2^-30. Had the subnormal counted as its own -127,
  // u = 2^-32, each term 3 u, 45 u = 11.25 * 2^-30 -> 11 * 2^-30.
  const float sub = bf16_to_float(0x0040);
  ASSERT_EQ(sub, 0x1p-127f);
  std::vector<float> a(16, 1.75f), b(16, 0x1p-31f);
  a[0] = sub;
  b[0] = 0x1p120f;
  EXPECT_EQ(bf16_model(a, b, 0.0f), 0x1p-7f + 0x1.cp-28f);
  TcChunkModel own;
  own.operand_min_exponent = -200;
  EXPECT_EQ(tc_chunk(a.data(), b.data(), 16, 0.0f, own), 0x1p-7f + 0x1.6p-27f);
}

// Outputs recorded from the H100 probe (device run of 2026-11-28, m64n8k16 bf16, scale-d = 1):
// the non-zero products of one output element, the incoming accumulator and the GPU's result.
struct Recorded {
  std::vector<float> a, b;
  float acc, gpu, normalized;
};

TEST(TcEmulationBf16, RecordedH100Outputs) {
  const std::vector<Recorded> cases = {
      {{0x1.ecp+1f}, {0x1.b6p+2f}, -0x1.100934p-18f, 0x1.a4e3fap+4f, 0x1.a4e3fcp+4f},
      {{0x1.54p+0f, -0x1.54p-1f}, {0x1.a2p-1f, -0x1.7p-2f}, -0x1.ba5bdp-26f, 0x1.52abfep+0f, 0x1.52acp+0f},
      {{-0x1.ep+1f, -0x1.cap+0f, 0x1.64p-1f}, {-0x1.ccp-1f, 0x1.2ap+1f, 0x1.ccp+0f}, 0x1.28a3dep-21f,
       0x1.d04024p-2f, 0x1.d0402p-2f},
      {{-0x1.92p-124f, 0x1.aap-124f, 0x1.3ap-125f, -0x1.74p-126f, -0x1.dp-129f, 0x1.c8p-125f,
        0x1.8ap-125f, 0x1.62p-123f, 0x1.8p-126f, -0x1.fcp-127f, 0x1.06p-122f, 0x1.06p-122f,
        0x1.38p-121f, 0x1.8cp-123f, 0x1.dap-125f, -0x1.5ep-121f},
       {0x1.06p+72f, 0x1.fap+67f, 0x1.06p+73f, -0x1.7cp+72f, 0x1.3ap+73f, -0x1.52p+64f, 0x1.d6p+63f,
        -0x1.a6p+72f, 0x1.b8p+74f, -0x1.42p+73f, -0x1.58p+64f, -0x1.b2p+69f, -0x1.dap+68f,
        0x1.04p+63f, -0x1.dap+69f, -0x1.7cp+68f},
       -0x1.9a654cp-53f, -0x1.9c1e82p-51f, -0x1.9c1e84p-51f},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    EXPECT_EQ(bits(bf16_model(c.a, c.b, c.acc)), bits(c.gpu)) << "case " << i;
    EXPECT_EQ(bits(normalized_model(c.a, c.b, c.acc)), bits(c.normalized)) << "case " << i;
  }
}

TEST(TcEmulationBf16, DotChainsSixteenWideChunks) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<float> a(128), b(128);
    for (auto& v : a) v = round_to_bf16(std::ldexp(nd(rng), static_cast<int>(rng() % 21) - 10));
    for (auto& v : b) v = round_to_bf16(nd(rng));
    float chained = 0.0f;
    for (int c = 0; c < 8; ++c) chained = wgmma_bf16_chunk(&a[16 * c], &b[16 * c], 16, chained);
    ASSERT_EQ(bits(wgmma_bf16_dot(a.data(), b.data(), 128)), bits(chained)) << trial;
  }
}

TEST(EmulateSm90DsaBf16, EpilogueByHand) {
  // h = 8, d = 16: dot[h] = q[h,0] * k[0] exactly (h - 3.5 for head h: four negative, four
  // positive), relu keeps heads 4..7 with 0.5, 1.5, 2.5, 3.5; w = 0.25; total = 8 * 0.25 = 2;
  // times s = 3: 6.
  const int h = 8, d = 16;
  std::vector<float> q(h * d, 0.0f), w(h, 0.25f), k(d, 0.0f);
  for (int hh = 0; hh < h; ++hh) q[hh * d] = hh - 3.5f;
  k[0] = 1.0f;
  EXPECT_EQ(emulate_sm90_dsa_logit_bf16(q.data(), w.data(), h, d, k.data(), 3.0f), 6.0f);
  // All dots negative: +0, never -0.
  for (int hh = 0; hh < h; ++hh) q[hh * d] = -1.0f - hh;
  EXPECT_EQ(bits(emulate_sm90_dsa_logit_bf16(q.data(), w.data(), h, d, k.data(), 3.0f)), 0u);
}

TEST(EmulateSm90DsaBf16, PagedEqualsFlattened) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> us(0.5f, 2.0f);
  PagedInputs in;
  in.precision = Precision::kBf16;
  in.h = 16;
  in.d = 64;
  in.k = 8;
  in.next_n = 2;
  in.batch = 3;
  in.max_pages = 3;
  in.num_pages = 10;
  in.cache.resize(static_cast<size_t>(in.num_pages * in.page_bytes()));
  for (int64_t p = 0; p < in.num_pages; ++p) {
    uint8_t* base = in.cache.data() + p * in.page_bytes();
    for (int t = 0; t < 64 * in.d; ++t) {
      const uint16_t v = float_to_bf16(nd(rng));
      std::memcpy(base + 2 * t, &v, 2);
    }
    for (int t = 0; t < 64; ++t) {
      const float s = us(rng);
      std::memcpy(base + 64 * in.d * 2 + 4 * t, &s, 4);
    }
  }
  in.block_table = {7, 2, 0, 5, -1, -1, 9, 1, 3};
  in.context_lens = {150, 64, 129};
  in.q.resize(static_cast<size_t>(in.rows() * in.h * in.d));
  in.w.resize(static_cast<size_t>(in.rows() * in.h));
  for (auto& v : in.q) v = round_to_bf16(nd(rng));
  for (auto& v : in.w) v = nd(rng);
  std::vector<float> paged, flat_logits;
  ASSERT_TRUE(emulate_sm90_paged_logits(in, &paged).ok());
  Inputs flat;
  ASSERT_TRUE(flatten_paged(in, Options{}, &flat).ok());
  ASSERT_EQ(flat.precision, Precision::kBf16);
  ASSERT_TRUE(emulate_sm90_dsa_logits(flat, &flat_logits).ok());
  const int64_t cols = in.max_pages * 64, nk = flat.shape.nk;
  int64_t compared = 0;
  for (int64_t r = 0; r < in.rows(); ++r) {
    const int64_t off = flat.ks[r], vis = flat.ke[r] - flat.ks[r];
    for (int64_t t = 0; t < cols; ++t) {
      const float p = paged[r * cols + t];
      if (t < vis) {
        ASSERT_EQ(bits(p), bits(flat_logits[r * nk + off + t])) << r << "," << t;
        ++compared;
      } else {
        ASSERT_EQ(p, -INFINITY) << r << "," << t;
      }
    }
  }
  EXPECT_GT(compared, 500);
}

TEST(EmulateSm90DsaBf16, RefusesFp32WithWords) {
  Inputs in;
  in.precision = Precision::kFp32;
  std::vector<float> out;
  Status s = emulate_sm90_dsa_logits(in, &out);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("fp8 or bf16"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace indexlab::ref
