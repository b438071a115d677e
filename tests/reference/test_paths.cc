// Reference paths: hand-worked cases, the identities of SPEC 2-6, paged vs flat, exactness.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "reference/numerics.h"
#include "reference/problem.h"
#include "reference/scoring.h"
#include "tests/common/random_problem.h"

namespace indexlab::ref {
namespace {

using indexlab::testing::random_inputs;
using indexlab::testing::test_seed;

std::vector<int32_t> row(const Result& r, int64_t i) {
  return std::vector<int32_t>(r.index.begin() + i * r.k, r.index.begin() + (i + 1) * r.k);
}

Result must_run(Path p, const Inputs& in, const Options& o = {}) {
  Result r;
  Status st = run(p, in, o, &r);
  EXPECT_TRUE(st.ok()) << st.message();
  return r;
}

void expect_same_selection(const Result& a, const Result& b, const char* what) {
  ASSERT_EQ(a.nq, b.nq);
  ASSERT_EQ(a.k, b.k);
  for (int64_t i = 0; i < a.nq; ++i) {
    ASSERT_EQ(row(a, i), row(b, i)) << what << ": row " << i;
  }
}

// ---- hand-worked cases --------------------------------------------------------------------------

// H = 2, D = 2, four keys. q0 = (0.5, -0.25), q1 = (1.5, 0.75); w = (0.75, -0.5).
// keys: k0 = (1, 2)      -> dots (0, 3)      -> 0.75*0 - 0.5*3      = -1.5
//       k1 = (0.5, -1)   -> dots (0.5, 0)    -> 0.75*0.5 - 0         = 0.375
//       k2 = (2, 0.5)    -> dots (0.875, 3.375) -> 0.65625 - 1.6875 = -1.03125
//       k3 = (-1, 0.25)  -> dots (-0.5625, -1.3125) -> 0
TEST(RefDsa, HandWorkedFp32) {
  Inputs in;
  in.shape = Shape{1, 4, 2, 2, 3};
  in.q = {0.5f, -0.25f, 1.5f, 0.75f};
  in.k = {1, 2, 0.5f, -1, 2, 0.5f, -1, 0.25f};
  in.w = {0.75f, -0.5f};
  in.ks = {0};
  in.ke = {4};
  Options o;
  o.want_logits = true;
  Result r = must_run(Path::kDsa, in, o);
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{1, 3, 2}));
  EXPECT_EQ(r.score[0], 0.375f);
  EXPECT_EQ(r.score[1], 0.0f);
  EXPECT_EQ(r.score[2], -1.03125f);
  EXPECT_EQ(r.logits, (std::vector<float>{-1.5f, 0.375f, -1.03125f, 0.0f}));
  // Restricting the range masks keys and makes indices relative to ks.
  in.ks = {2};
  r = must_run(Path::kDsa, in, o);
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{1, 0, -1}));  // keys 3 then 2, then padding
  EXPECT_EQ(r.logits[0], -INFINITY);
  EXPECT_EQ(r.logits[1], -INFINITY);
  EXPECT_EQ(r.score[2], -INFINITY);
  o.index_base = IndexBase::kAbsolute;
  r = must_run(Path::kDsa, in, o);
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{3, 2, -1}));
}

TEST(RefDsa, KeyScaleAppliesBeforeRelu) {
  // One head, negative weight: score = w * relu(s * dot); a scale of 0.5 halves the score.
  Inputs in;
  in.precision = Precision::kFp8;
  in.shape = Shape{1, 2, 1, 2, 2};
  in.q = {1.5f, 0.5f};
  in.k = {0.25f, 1.0f, 2.0f, -0.125f};
  in.k_scale = {0.5f, 3.0f};
  in.w = {-1.25f};
  in.ks = {0};
  in.ke = {2};
  Result r = must_run(Path::kDsa, in);
  // key 0: dot = 0.875, * 0.5 = 0.4375, * -1.25 = -0.546875; key 1: dot = 2.9375 * 3 * -1.25
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(r.score[0], -0.546875f);
  EXPECT_EQ(r.score[1], -11.015625f);
}

// HISA with B = 2, m = 3 over 8 keys (4 blocks): first and last blocks forced, one more by J.
TEST(RefHisa, HandWorkedBlockChoice) {
  Inputs in;
  in.shape = Shape{1, 8, 1, 1, 2};
  // Block means: b0 = 0.25, b1 = 1.5, b2 = 0.75, b3 = -0.5 (last block keeps a slot anyway).
  in.k = {0.125f, 0.375f, 1.25f, 1.75f, 0.5f, 1.0f, -0.25f, -0.75f};
  in.q = {1.0f};
  in.w = {1.0f};
  in.ks = {0};
  in.ke = {8};
  Options o;
  o.hisa_block = 2;
  o.hisa_m = 3;
  o.want_logits = true;
  Result r = must_run(Path::kHisa, in, o);
  // Candidates: blocks 0, 1, 3 -> keys 0, 1, 2, 3, 6, 7. Top 2 by score: key 3 (1.75), key 2.
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{3, 2}));
  // Block 2 (keys 4, 5) is not a candidate: -inf logits there, candidates keep their scores.
  EXPECT_EQ(r.logits[4], -INFINITY);
  EXPECT_EQ(r.logits[5], -INFINITY);
  EXPECT_EQ(r.logits[6], 0.0f);
  EXPECT_EQ(r.logits[0], 0.125f);
  // With m = 2 only the two end blocks survive: keys 0, 1, 6, 7 -> top 2 = 1 (0.375), 0 (0.125).
  o.hisa_m = 2;
  o.hisa_block = 2;
  in.shape.k = 2;
  r = must_run(Path::kHisa, in, o);
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{1, 0}));
  // The paper's form (top-m plus ends) with m = 2 keeps blocks 1 and 2 plus both ends.
  o.hisa_topm_plus_ends = true;
  r = must_run(Path::kHisa, in, o);
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{3, 2}));
}

TEST(RefHisa, PooledMeanIsExactThenRoundedOnce) {
  // Summing 1 + 2^-30 + (-1) in fp32 would give 0; the exact sum is 2^-30, mean 2^-30 / 3.
  Inputs in;
  in.shape = Shape{1, 3, 1, 1, 1};
  in.k = {1.0f, std::ldexp(1.0f, -30), -1.0f};
  in.q = {1.0f};
  in.w = {1.0f};
  in.ks = {0};
  in.ke = {3};
  float pooled = 0.0f;
  pooled_mean(in, 0, 3, &pooled);
  EXPECT_EQ(pooled, std::ldexp(1.0f, -30) / 3.0f);
}

// MISA: three heads, one active. Head weights and queries make head 2 win the router.
TEST(RefMisa, HandWorkedRouting) {
  Inputs in;
  in.shape = Shape{1, 4, 3, 1, 2};
  in.k = {0.5f, -1.0f, 2.0f, 0.25f};  // pooled mean (one block of 4) = 0.4375
  in.q = {1.0f, -1.0f, 0.5f};          // router E = |w| relu(q * 0.4375): 0.4375*0.5, 0, 0.4375*0.5*2
  in.w = {0.5f, 4.0f, -2.0f};
  in.ks = {0};
  in.ke = {4};
  Options o;
  o.misa_heads = 1;
  o.misa_block = 4;
  Result r = must_run(Path::kMisa, in, o);
  EXPECT_EQ(r.active_heads, (std::vector<int32_t>{2}));
  // Head 2 has negative weight: score = -2 relu(0.5 k): keys 1 (0), then 3 (-0.25).
  EXPECT_EQ(row(r, 0), (std::vector<int32_t>{1, 3}));
  // q-norm routing picks the largest |q|: a tie between heads 0 and 1 goes to the lower index.
  o.routing = Routing::kQNorm;
  r = must_run(Path::kMisa, in, o);
  EXPECT_EQ(r.active_heads, (std::vector<int32_t>{0}));
  // own-key routing on the last visible key (0.25): E = w relu(0.25 q) = (0.125, 0, -0.25).
  o.routing = Routing::kOwnKey;
  r = must_run(Path::kMisa, in, o);
  EXPECT_EQ(r.active_heads, (std::vector<int32_t>{0}));
}

TEST(RefMisaDagger, RescoresStageOneCandidates) {
  // Head 0 alone ranks keys 2 > 1 > 0; stage 2 with both heads prefers key 0.
  Inputs in;
  in.shape = Shape{1, 3, 2, 1, 1};
  in.k = {0.5f, 1.0f, 1.5f};
  in.q = {1.0f, 1.0f};
  in.w = {1.0f, -0.75f};  // full score = 0.25 k: still 2 > 1 > 0 ... make head 1 win routing
  in.ks = {0};
  in.ke = {3};
  Options o;
  o.misa_heads = 1;
  o.misa_block = 4;
  o.dagger_k1 = 2;
  Result misa = must_run(Path::kMisa, in, o);
  Result dag = must_run(Path::kMisaDagger, in, o);
  EXPECT_EQ(misa.active_heads, (std::vector<int32_t>{0}));
  EXPECT_EQ(row(misa, 0), (std::vector<int32_t>{2}));
  EXPECT_EQ(row(dag, 0), (std::vector<int32_t>{2}));
  EXPECT_EQ(dag.score[0], 0.375f);  // 1.5 - 0.75*1.5
}

// ---- identities --------------------------------------------------------------------------------

class RefIdentity : public ::testing::TestWithParam<Precision> {};

TEST_P(RefIdentity, HisaWithFewBlocksEqualsDsa) {
  std::mt19937_64 rng(test_seed() + 1);
  SCOPED_TRACE("seed " + std::to_string(test_seed() + 1));
  Inputs in = random_inputs(rng, GetParam(), 24, 300, 8, 32, 40);
  Options o;
  o.hisa_block = 16;
  o.hisa_m = 19;  // ceil(300 / 16) = 19 eligible blocks at most
  expect_same_selection(must_run(Path::kDsa, in), must_run(Path::kHisa, in, o), "hisa");
  o.align = BlockAlign::kRelease;
  expect_same_selection(must_run(Path::kDsa, in), must_run(Path::kHisa, in, o), "hisa release");
}

TEST_P(RefIdentity, MisaAllHeadsEqualsDsa) {
  std::mt19937_64 rng(test_seed() + 2);
  Inputs in = random_inputs(rng, GetParam(), 20, 257, 8, 16, 33, false);
  Options o;
  o.misa_heads = 8;
  o.misa_block = 64;
  Result d = must_run(Path::kDsa, in), m = must_run(Path::kMisa, in, o);
  expect_same_selection(d, m, "misa");
  EXPECT_EQ(d.score, m.score);
}

TEST_P(RefIdentity, DaggerWithLargeK1EqualsDsa) {
  std::mt19937_64 rng(test_seed() + 3);
  Inputs in = random_inputs(rng, GetParam(), 20, 200, 8, 16, 25);
  Options o;
  o.misa_heads = 2;
  o.misa_block = 32;
  o.dagger_k1 = 200;
  Result d = must_run(Path::kDsa, in), g = must_run(Path::kMisaDagger, in, o);
  expect_same_selection(d, g, "dagger");
  EXPECT_EQ(d.score, g.score);
}

TEST_P(RefIdentity, ShortRowsSelectEverythingAndPad) {
  std::mt19937_64 rng(test_seed() + 4);
  Inputs in = random_inputs(rng, GetParam(), 16, 40, 4, 16, 64);
  for (Path p : {Path::kDsa, Path::kHisa, Path::kMisa, Path::kMisaDagger}) {
    Options o;
    o.hisa_block = 8;
    o.hisa_m = 8;
    o.misa_heads = 2;
    o.misa_block = 16;
    o.dagger_k1 = 64;
    Result r = must_run(p, in, o);
    for (int64_t i = 0; i < in.shape.nq; ++i) {
      std::vector<int32_t> got = row(r, i);
      const int n = in.ke[i] - in.ks[i];
      std::vector<int32_t> sel(got.begin(), got.begin() + n), want(n);
      std::sort(sel.begin(), sel.end());
      std::iota(want.begin(), want.end(), 0);
      EXPECT_EQ(sel, want) << path_name(p) << " row " << i;
      for (int t = n; t < r.k; ++t) EXPECT_EQ(got[t], -1) << path_name(p) << " row " << i;
    }
  }
}

TEST_P(RefIdentity, PermutingHeadsChangesNothing) {
  std::mt19937_64 rng(test_seed() + 5);
  Inputs in = random_inputs(rng, GetParam(), 12, 180, 8, 16, 20, false);
  Inputs p = in;
  const int H = 8, D = 16;
  std::vector<int> perm(H);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t i = 0; i < in.shape.nq; ++i)
    for (int h = 0; h < H; ++h) {
      p.w[i * H + h] = in.w[i * H + perm[h]];
      for (int d = 0; d < D; ++d) p.q[(i * H + h) * D + d] = in.q[(i * H + perm[h]) * D + d];
    }
  for (Path path : {Path::kDsa, Path::kHisa}) {
    Options o;
    o.hisa_block = 16;
    o.hisa_m = 3;
    expect_same_selection(must_run(path, in, o), must_run(path, p, o), path_name(path));
  }
}

TEST_P(RefIdentity, ScalingWeightsKeepsSelection) {
  std::mt19937_64 rng(test_seed() + 6);
  Inputs in = random_inputs(rng, GetParam(), 12, 200, 8, 16, 20);
  Inputs s = in;
  for (auto& w : s.w) w *= 2.0f;  // exact: the selection and the scores' order are unchanged
  for (Path path : {Path::kDsa, Path::kHisa, Path::kMisa, Path::kMisaDagger}) {
    Options o;
    o.hisa_block = 16;
    o.hisa_m = 4;
    o.misa_heads = 3;
    o.misa_block = 32;
    o.dagger_k1 = 40;
    expect_same_selection(must_run(path, in, o), must_run(path, s, o), path_name(path));
  }
  Inputs t = in;
  for (auto& w : t.w) w *= 0.3f;  // rounded: the DSA selection must survive a non-power-of-two
  Result a = must_run(Path::kDsa, in), b = must_run(Path::kDsa, t);
  int64_t amb = 0;
  for (auto x : a.ambiguous) amb += x;
  for (int64_t i = 0; i < a.nq; ++i) {
    // A positive scale keeps the order exactly except where two scores are within rounding.
    std::vector<int32_t> ra = row(a, i), rb = row(b, i);
    std::sort(ra.begin(), ra.end());
    std::sort(rb.begin(), rb.end());
    EXPECT_EQ(ra, rb) << "row " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllPrecisions, RefIdentity,
                         ::testing::Values(Precision::kFp32, Precision::kBf16, Precision::kFp8),
                         [](const auto& info) { return std::string(precision_name(info.param)); });

// ---- paged decode ------------------------------------------------------------------------------

PagedInputs make_paged(std::mt19937_64& rng, const Inputs& flat_keys, const std::vector<int32_t>& ctx,
                       int next_n, int h, int d, int k, Precision p) {
  PagedInputs pg;
  pg.precision = p;
  pg.h = h;
  pg.d = d;
  pg.k = k;
  pg.next_n = next_n;
  pg.batch = static_cast<int64_t>(ctx.size());
  pg.page_tokens = 64;
  int64_t max_ctx = *std::max_element(ctx.begin(), ctx.end());
  pg.max_pages = (max_ctx + 63) / 64 + 1;
  int64_t need = 0;
  for (int32_t c : ctx) need += (c + 63) / 64;
  pg.num_pages = need + 3;  // a few unused pages
  pg.cache.assign(pg.num_pages * pg.page_bytes(), 0xAB);
  std::vector<int32_t> phys(pg.num_pages);
  std::iota(phys.begin(), phys.end(), 0);
  std::shuffle(phys.begin(), phys.end(), rng);  // pages out of order
  pg.block_table.assign(pg.batch * pg.max_pages, -7);
  pg.context_lens = ctx;
  const int eb = element_bytes(p);
  int64_t next_page = 0, key = 0;
  for (int64_t b = 0; b < pg.batch; ++b) {
    for (int64_t lp = 0; lp < (ctx[b] + 63) / 64; ++lp) pg.block_table[b * pg.max_pages + lp] = phys[next_page++];
    for (int64_t t = 0; t < ctx[b]; ++t, ++key) {
      uint8_t* base = &pg.cache[pg.block_table[b * pg.max_pages + t / 64] * pg.page_bytes()];
      for (int dd = 0; dd < d; ++dd) {
        const float x = flat_keys.k[key * d + dd];
        uint8_t* dst = base + ((t % 64) * d + dd) * eb;
        if (p == Precision::kFp8) {
          *dst = float_to_e4m3_satfinite(x);
        } else if (p == Precision::kBf16) {
          const uint16_t v = float_to_bf16(x);
          dst[0] = v & 0xFF;
          dst[1] = v >> 8;
        } else {
          std::memcpy(dst, &x, 4);
        }
      }
      const float sc = flat_keys.k_scale.empty() ? 1.0f : flat_keys.k_scale[key];
      std::memcpy(base + 64 * d * eb + (t % 64) * 4, &sc, 4);
    }
  }
  return pg;
}

class RefPaged : public ::testing::TestWithParam<std::tuple<Precision, int>> {};

TEST_P(RefPaged, MatchesFlatLayout) {
  const auto [prec, next_n] = GetParam();
  std::mt19937_64 rng(test_seed() + 10 + next_n);
  const int H = 4, D = 32, K = 50;
  const std::vector<int32_t> ctx = {200, 65, 1, 130, 64};
  int64_t total = 0;
  for (int32_t c : ctx) total += c;
  const int64_t rows = static_cast<int64_t>(ctx.size()) * next_n;
  Inputs keys = random_inputs(rng, prec, rows, total, H, D, K);
  PagedInputs pg = make_paged(rng, keys, ctx, next_n, H, D, K, prec);
  pg.q = keys.q;
  pg.w = keys.w;
  // Hand-built flat problem: sequence b's keys at offset off_b, row r sees ctx - next_n + r + 1.
  Inputs flat = keys;
  int64_t off = 0;
  for (size_t b = 0; b < ctx.size(); ++b) {
    for (int r = 0; r < next_n; ++r) {
      const int64_t i = b * next_n + r;
      flat.ks[i] = static_cast<int32_t>(off);
      flat.ke[i] = static_cast<int32_t>(off + std::max<int64_t>(0, std::min<int64_t>(ctx[b], ctx[b] - next_n + r + 1)));
    }
    off += ctx[b];
  }
  for (Path path : {Path::kDsa, Path::kMisa}) {
    Options o;
    o.misa_heads = 2;
    o.misa_block = 64;
    o.strict_pooling = true;  // pooling over visible keys: identical in both layouts
    Result pr, fr;
    Status st = run_paged(path, pg, o, &pr);
    ASSERT_TRUE(st.ok()) << st.message();
    fr = must_run(path, flat, o);
    expect_same_selection(pr, fr, path_name(path));
    EXPECT_EQ(pr.score, fr.score);
  }
  // Absolute indices are physical cache slots holding the same key.
  Options o;
  o.index_base = IndexBase::kAbsolute;
  o.want_logits = true;
  Result pa, pr;
  ASSERT_TRUE(run_paged(Path::kDsa, pg, o, &pa).ok());
  o.index_base = IndexBase::kRelative;
  ASSERT_TRUE(run_paged(Path::kDsa, pg, o, &pr).ok());
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t b = i / next_n;
    for (int t = 0; t < K; ++t) {
      const int32_t pos = pr.index[i * K + t], slot = pa.index[i * K + t];
      ASSERT_EQ(pos < 0, slot < 0);
      if (pos < 0) continue;
      EXPECT_EQ(slot, pg.block_table[b * pg.max_pages + pos / 64] * 64 + pos % 64);
      EXPECT_EQ(pr.logits[i * pr.logits_cols + pos], pr.score[i * K + t]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(NextN, RefPaged,
                         ::testing::Combine(::testing::Values(Precision::kFp8, Precision::kBf16,
                                                              Precision::kFp32),
                                            ::testing::Values(1, 2, 3)),
                         [](const auto& info) {
                           return std::string(precision_name(std::get<0>(info.param))) + "_next" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(RefPagedOwnKey, RoutesOnTheLastKey) {
  std::mt19937_64 rng(test_seed() + 20);
  const std::vector<int32_t> ctx = {90, 17};
  Inputs keys = random_inputs(rng, Precision::kFp8, 2, 107, 8, 16, 10);
  PagedInputs pg = make_paged(rng, keys, ctx, 1, 8, 16, 10, Precision::kFp8);
  pg.q = keys.q;
  pg.w = keys.w;
  Options o;
  o.misa_heads = 3;
  o.routing = Routing::kOwnKey;
  Result r;
  Status st = run_paged(Path::kMisa, pg, o, &r);
  ASSERT_TRUE(st.ok()) << st.message();
  // Recompute the router by hand for sequence 0 (its own key is position 89).
  std::vector<std::pair<double, int>> e;
  for (int h = 0; h < 8; ++h) {
    double dot = 0;
    for (int d = 0; d < 16; ++d) dot += double(keys.q[h * 16 + d]) * keys.k[89 * 16 + d];
    const double v = double(keys.w[h]) * std::max(0.0, double(keys.k_scale[89]) * dot);
    e.push_back({-static_cast<float>(v), h});
  }
  std::sort(e.begin(), e.end());
  std::vector<int32_t> want = {e[0].second, e[1].second, e[2].second};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(std::vector<int32_t>(r.active_heads.begin(), r.active_heads.begin() + 3), want);
  pg.next_n = 2;
  pg.q.resize(4 * 8 * 16, 0.5f);
  pg.w.resize(4 * 8, 0.25f);
  EXPECT_FALSE(run_paged(Path::kMisa, pg, o, &r).ok());
}

// ---- the exactness claim (SPEC 8) ---------------------------------------------------------------

TEST(RefOracle, Fp8DotsAreExactIntegers) {
  std::mt19937_64 rng(test_seed() + 30);
  Inputs in = random_inputs(rng, Precision::kFp8, 6, 300, 4, 128, 8);
  RowScorer scorer(in);
  for (int64_t i = 0; i < in.shape.nq; ++i) {
    std::vector<double> dots;
    scorer.head_dots(i, 0, in.shape.nk, &dots);
    for (int64_t j = 0; j < in.shape.nk; ++j)
      for (int h = 0; h < 4; ++h) {
        // Every e4m3 value is an integer multiple of 2^-9: sum integer products exactly.
        __int128 acc = 0;
        for (int d = 0; d < 128; ++d) {
          const int64_t a = static_cast<int64_t>(std::ldexp(in.q[(i * 4 + h) * 128 + d], 9));
          const int64_t b = static_cast<int64_t>(std::ldexp(in.k[j * 128 + d], 9));
          acc += static_cast<__int128>(a) * b;
        }
        ASSERT_EQ(dots[j * 4 + h], std::ldexp(static_cast<double>(acc), -18)) << i << "," << j << "," << h;
      }
  }
}

TEST(RefOracle, Fp8ScoresCarryTinyBoundsAndFlags) {
  std::mt19937_64 rng(test_seed() + 31);
  Inputs in = random_inputs(rng, Precision::kFp8, 16, 400, 16, 64, 32);
  Result r = must_run(Path::kDsa, in);
  for (size_t t = 0; t < r.score.size(); ++t) {
    if (r.index[t] < 0) continue;
    // (H + 3) 2^-53 relative to the absolute sum: far below one fp32 ulp of typical scores.
    EXPECT_LE(r.bound[t], std::fabs(r.score[t]) * 1e-12 + 1e-30);
  }
  Inputs b = random_inputs(rng, Precision::kBf16, 16, 400, 16, 64, 32);
  Result rb = must_run(Path::kDsa, b);
  for (size_t t = 0; t < rb.score.size(); ++t)
    if (rb.index[t] >= 0) EXPECT_GT(rb.bound[t], 0.0f);  // bf16 dots in fp64 are not exact
}

// ---- quantize_inputs -----------------------------------------------------------------------------

TEST(RefQuantizeInputs, Fp8FoldsQueryScalesIntoWeights) {
  std::mt19937_64 rng(test_seed() + 40);
  RawInputs raw = indexlab::testing::random_raw(rng, 3, 10, 2, 16, 4);
  Inputs in;
  ASSERT_TRUE(quantize_inputs(raw, Precision::kFp8, {}, &in).ok());
  for (int64_t ih = 0; ih < 6; ++ih) {
    EXPECT_EQ(in.w[ih], raw.w[ih] * in.q_scale[ih]);
    float amax = 0;
    for (int d = 0; d < 16; ++d) amax = std::max(amax, std::fabs(raw.q[ih * 16 + d]));
    EXPECT_EQ(in.q_scale[ih], std::max(amax, 1e-10f) / 448.0f);
  }
  for (float x : in.k) EXPECT_TRUE(is_e4m3_value(x));
  Inputs bf;
  ASSERT_TRUE(quantize_inputs(raw, Precision::kBf16, {}, &bf).ok());
  for (size_t t = 0; t < raw.k.size(); ++t) EXPECT_EQ(bf.k[t], round_to_bf16(raw.k[t]));
  raw.k[7] = NAN;
  Status st = quantize_inputs(raw, Precision::kFp8, {}, &in);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("k[0,7]"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace indexlab::ref
