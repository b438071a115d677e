// The sm90 HISA emulation (reference/emulate_sm90_hisa.cc): equals the emulated DSA where SPEC 4.7
// says HISA equals DSA, pooling with power-of-two scales equals the reference's pooled key, paged
// emulation equals the flat one on the flattened problem, block-selection structure.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "reference/emulate_sm90_dsa.h"
#include "reference/emulate_sm90_sparse.h"
#include "reference/numerics.h"
#include "reference/problem.h"
#include "reference/quant.h"
#include "reference/scoring.h"
#include "tests/common/hisa_problems.h"
#include "tests/common/canonical_topk.h"
#include "tests/common/sm90_test.h"

namespace indexlab {
namespace {

using ::indexlab::testing::bits;
using ::indexlab::testing::same_float;
using ::indexlab::testing::seed_for;

using ref::Inputs;
using ref::Options;
using ref::PagedInputs;
using ref::Result;


using ::indexlab::testing::hisa::FlatCase;
using ::indexlab::testing::hisa::make_flat;
using ::indexlab::testing::hisa::make_paged;
using ::indexlab::testing::hisa::Values;

/// HISA emulation == canonical top-k of the emulated DSA logits (index, score and logits).
void expect_equals_emulated_dsa(const Inputs& in, const Options& opt, const std::string& what) {
  Options o = opt;
  o.want_logits = true;
  Result h;
  Status st = ref::emulate_sm90_hisa(in, o, &h);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  std::vector<float> dsa;
  ASSERT_TRUE(ref::emulate_sm90_dsa_logits(in, &dsa).ok());
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int k = in.shape.k;
  ASSERT_EQ(h.logits.size(), dsa.size());
  for (size_t t = 0; t < dsa.size(); ++t)
    ASSERT_EQ(bits(h.logits[t]), bits(dsa[t])) << what << ": logit " << t / nk << "," << t % nk;
  std::vector<int32_t> ci(k);
  std::vector<float> cs(k);
  const bool rel = opt.index_base == ref::IndexBase::kRelative;
  for (int64_t i = 0; i < nq; ++i) {
    ::indexlab::testing::canonical_topk_offset(dsa.data() + i * nk, in.ks[i], in.ke[i], k, rel ? in.ks[i] : 0, ci.data(), cs.data());
    for (int t = 0; t < k; ++t) {
      ASSERT_EQ(h.index[i * k + t], ci[t]) << what << ": row " << i << " slot " << t;
      ASSERT_TRUE(same_float(h.score[i * k + t], cs[t])) << what << ": row " << i << " slot " << t;
    }
  }
}

TEST(EmuSm90Hisa, EqualsEmulatedDsaWithAtMostMBlocks) {
  // Sequence-aligned, nb <= m for every row (SPEC 4.7): causal and ragged rows, ks not a multiple of B.
  FlatCase c;
  c.nq = 24;
  c.nk = 700;
  c.h = 16;
  c.d = 64;
  c.k = 96;
  Options opt;
  opt.hisa_block = 64;
  opt.hisa_m = 12;  // ceil(700 / 64) = 11 blocks at most
  expect_equals_emulated_dsa(make_flat(c, seed_for("eqdsa1")), opt, "causal");
  std::mt19937_64 rng(seed_for("eqdsa2"));
  c.ks.resize(c.nq);
  c.ke.resize(c.nq);
  for (int64_t i = 0; i < c.nq; ++i) {
    int64_t a = rng() % c.nk, b = rng() % (c.nk + 1);
    if (a > b) std::swap(a, b);
    c.ks[i] = static_cast<int32_t>(a);
    c.ke[i] = static_cast<int32_t>(b);
  }
  c.ks[0] = 5;
  c.ke[0] = 5;  // empty row
  c.ks[1] = 63;
  c.ke[1] = 64;  // one key
  expect_equals_emulated_dsa(make_flat(c, seed_for("eqdsa3")), opt, "ragged");
  opt.index_base = ref::IndexBase::kAbsolute;
  expect_equals_emulated_dsa(make_flat(c, seed_for("eqdsa3")), opt, "ragged absolute");
}

TEST(EmuSm90Hisa, KAtLeastVisibleSelectsEverything) {
  // ke - ks <= K: every visible key is selected (SPEC 4.7), and the selection is ascending-key
  // canonical among equal scores.
  FlatCase c;
  c.nq = 10;
  c.nk = 300;
  c.k = 300;
  Options opt;
  opt.hisa_block = 64;
  opt.hisa_m = 5;
  Result h;
  Inputs in = make_flat(c, seed_for("kall"));
  ASSERT_TRUE(ref::emulate_sm90_hisa(in, opt, &h).ok());
  for (int64_t i = 0; i < c.nq; ++i) {
    std::vector<int32_t> sel;
    for (int t = 0; t < c.k; ++t)
      if (h.index[i * c.k + t] >= 0) sel.push_back(h.index[i * c.k + t]);
    std::sort(sel.begin(), sel.end());
    ASSERT_EQ(static_cast<int64_t>(sel.size()), in.ke[i] - in.ks[i]) << "row " << i;
    for (size_t t = 0; t < sel.size(); ++t) ASSERT_EQ(sel[t], static_cast<int32_t>(t));
  }
}

TEST(EmuSm90Hisa, PoolingWithPowerOfTwoScalesEqualsReference) {
  FlatCase c;
  c.nq = 1;
  c.nk = 333;
  c.d = 128;
  Inputs in = make_flat(c, seed_for("pool2"));
  std::mt19937_64 rng(seed_for("pool2s"));
  for (auto& s : in.k_scale) s = std::ldexp(1.0f, static_cast<int>(rng() % 9) - 6);
  std::vector<float> mean(c.d);
  for (auto [a, b] : std::vector<std::pair<int64_t, int64_t>>{{0, 128}, {128, 256}, {256, 333}, {5, 6}, {17, 300}}) {
    ref::EmulatedPool ep;
    ref::emulate_sm90_pool(in, a, b, true, &ep);
    ref::pooled_mean(in, a, b, mean.data());
    float amax = 0.0f;
    for (float x : mean) amax = std::max(amax, std::fabs(x));
    const float scale = std::max(amax / 448.0f, 1e-10f);
    EXPECT_EQ(bits(ep.scale), bits(scale)) << a << ".." << b;
    for (int x = 0; x < c.d; ++x)
      ASSERT_EQ(bits(ep.value[x]), bits(ref::round_to_e4m3(mean[x] / scale))) << a << ".." << b << " x " << x;
  }
}

TEST(EmuSm90Hisa, SelectionKeepsFirstLastAndMBlocks) {
  // nb = m + 1 and more: exactly m blocks' visible keys are candidates (m + 2 with the option),
  // first and last always among them.
  FlatCase c;
  c.nq = 12;
  c.nk = 64 * 9 + 17;
  c.k = 8;
  for (bool plus : {false, true}) {
    Options opt;
    opt.hisa_block = 64;
    opt.hisa_m = 4;
    opt.hisa_topm_plus_ends = plus;
    opt.want_logits = true;
    Inputs in = make_flat(c, seed_for(plus ? "selp" : "sel"));
    Result h;
    ASSERT_TRUE(ref::emulate_sm90_hisa(in, opt, &h).ok());
    for (int64_t i = 0; i < c.nq; ++i) {
      const int64_t ke = in.ke[i], nb = (ke + 63) / 64;
      std::vector<int> kept(nb, 0);
      for (int64_t j = 0; j < ke; ++j) kept[j / 64] |= h.logits[i * c.nk + j] > -INFINITY;
      int64_t n = 0;
      for (int v : kept) n += v;
      EXPECT_TRUE(kept[0] && kept[nb - 1]) << "row " << i;
      if (nb <= 4) {
        EXPECT_EQ(n, nb);
      } else if (!plus) {
        EXPECT_EQ(n, 4) << "row " << i;
      } else {
        EXPECT_GE(n, 4);
        EXPECT_LE(n, 6);
      }
    }
  }
}

TEST(EmuSm90Hisa, PagedEqualsFlattened) {
  for (int nn : {1, 2, 3}) {
    PagedInputs pg = make_paged(3, nn, 16, 64, 40, {300, 65, 2}, seed_for("paged") + nn);
    Options opt;
    opt.hisa_block = 64;
    opt.hisa_m = 3;
    opt.want_logits = true;
    Result pr, fr, pa;
    ASSERT_TRUE(ref::emulate_sm90_hisa_paged(pg, opt, &pr).ok());
    Inputs flat;
    std::vector<int64_t> slots;
    ASSERT_TRUE(ref::flatten_paged(pg, opt, &flat, &slots).ok());
    ASSERT_TRUE(ref::emulate_sm90_hisa(flat, opt, &fr).ok());
    Options oa = opt;
    oa.index_base = ref::IndexBase::kAbsolute;
    ASSERT_TRUE(ref::emulate_sm90_hisa_paged(pg, oa, &pa).ok());
    const int64_t cols = pg.max_pages * 64;
    for (int64_t r = 0; r < pg.rows(); ++r) {
      for (int t = 0; t < pg.k; ++t) {
        ASSERT_EQ(pr.index[r * pg.k + t], fr.index[r * pg.k + t]);
        ASSERT_TRUE(same_float(pr.score[r * pg.k + t], fr.score[r * pg.k + t]));
        const int32_t x = pr.index[r * pg.k + t];
        ASSERT_EQ(pa.index[r * pg.k + t], x < 0 ? -1 : static_cast<int32_t>(slots[flat.ks[r] + x]));
      }
      for (int64_t j = 0; j < flat.seq_end[r] - flat.ks[r]; ++j)
        ASSERT_EQ(bits(pr.logits[r * cols + j]), bits(fr.logits[r * flat.shape.nk + flat.ks[r] + j]));
    }
  }
}

TEST(EmuSm90Hisa, RejectsNonFp8) {
  FlatCase c;
  Inputs in = make_flat(c, 1);
  in.precision = ref::Precision::kFp32;
  Result r;
  EXPECT_FALSE(ref::emulate_sm90_hisa(in, Options{}, &r).ok());
}

}  // namespace
}  // namespace indexlab
