// The sm90 MISA / MISA-dagger emulation (reference/emulate_sm90_misa.cc): identities with the
// emulated DSA, router order and tie handling, agreement with the reference router.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
#include "tests/common/canonical_topk.h"
#include "tests/common/problems.h"
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


Inputs make_flat(int64_t nq, int64_t nk, int h, int d, int k, uint64_t seed, bool packed = false) {
  std::mt19937_64 rng(seed);
  ref::RawInputs raw;
  raw.shape = ref::Shape{nq, nk, h, d, k};
  testing::fill_raw_values(&raw, testing::ValueClass::kNormal, rng, testing::ValueBias{0.05f, 0.0f});
  raw.ks.resize(static_cast<size_t>(nq));
  raw.ke.resize(static_cast<size_t>(nq));
  if (packed) {  // two sequences side by side; seq_end marks each one's end
    raw.seq_end.resize(static_cast<size_t>(nq));
    raw.block_origin.resize(static_cast<size_t>(nq));
    const int64_t half = nk / 2 + 37;
    for (int64_t i = 0; i < nq; ++i) {
      const bool second = i >= nq / 2;
      const int64_t s0 = second ? half : 0, s1 = second ? nk : half;
      raw.ks[i] = static_cast<int32_t>(s0);
      raw.ke[i] = static_cast<int32_t>(std::min<int64_t>(s1, s0 + 1 + (i * 97) % (s1 - s0)));
      raw.seq_end[i] = static_cast<int32_t>(s1);
      raw.block_origin[i] = static_cast<int32_t>(s0);
    }
  } else {
    testing::causal_tail_ranges(&raw);
  }
  Inputs in;
  Status st = ref::quantize_inputs(raw, ref::Precision::kFp8, ref::QuantizeOptions{}, &in);
  EXPECT_TRUE(st.ok()) << st.message();
  return in;
}

PagedInputs make_paged(int64_t batch, int next_n, int h, int d, int k, const std::vector<int32_t>& ctx,
                       uint64_t seed) {
  testing::PagedStyle style;
  style.key_bias = 0.1f;
  style.q_scale = true;
  return testing::make_paged(batch, next_n, h, d, k, ctx, seed, style);
}

/// Emulated DSA selection of a flat problem (canonical top-k of emulate_sm90_dsa_logits).
void emu_dsa(const Inputs& in, const Options& opt, Result* out, std::vector<float>* logits) {
  ASSERT_TRUE(ref::emulate_sm90_dsa_logits(in, logits).ok());
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int k = in.shape.k;
  out->index.assign(static_cast<size_t>(nq * k), -1);
  out->score.assign(static_cast<size_t>(nq * k), -INFINITY);
  for (int64_t i = 0; i < nq; ++i)
    ::indexlab::testing::canonical_topk_offset(logits->data() + i * nk, in.ks[i], in.ke[i], k,
                   opt.index_base == ref::IndexBase::kRelative ? in.ks[i] : 0, out->index.data() + i * k,
                   out->score.data() + i * k);
}

void expect_same_selection(const Result& a, const Result& b, const std::string& what) {
  ASSERT_EQ(a.index.size(), b.index.size()) << what;
  int shown = 0;
  for (size_t t = 0; t < a.index.size(); ++t) {
    if (a.index[t] != b.index[t] || !same_float(a.score[t], b.score[t])) {
      if (shown++ < 5)
        ADD_FAILURE() << what << ": slot " << t << " index " << a.index[t] << " vs " << b.index[t]
                      << ", score " << a.score[t] << " vs " << b.score[t];
    }
  }
}

TEST(EmuSm90Misa, AllHeadsIsEmulatedDsa) {
  for (int H : {8, 16, 64}) {
    for (auto base : {ref::IndexBase::kRelative, ref::IndexBase::kAbsolute}) {
      Inputs in = make_flat(12, 700, H, 64, 40, seed_for("allheads") + H, base == ref::IndexBase::kAbsolute);
      for (auto routing : {ref::Routing::kPooled, ref::Routing::kOwnKey, ref::Routing::kQNorm}) {
        Options opt;
        opt.misa_heads = H;
        opt.misa_block = 128;
        opt.routing = routing;
        opt.index_base = base;
        opt.want_logits = true;
        Result misa, dsa;
        std::vector<float> dl;
        ASSERT_TRUE(ref::emulate_sm90_misa(in, opt, &misa).ok());
        emu_dsa(in, opt, &dsa, &dl);
        const std::string what = "H" + std::to_string(H) + " routing " + ref::routing_name(routing);
        expect_same_selection(misa, dsa, what);
        ASSERT_EQ(misa.logits.size(), dl.size());
        for (size_t t = 0; t < dl.size(); ++t)
          ASSERT_TRUE(same_float(misa.logits[t], dl[t])) << what << " logit " << t;
        for (int64_t i = 0; i < in.shape.nq; ++i)
          for (int g = 0; g < H; ++g) ASSERT_EQ(misa.active_heads[i * H + g], g);
      }
    }
  }
}

TEST(EmuSm90Misa, DaggerWithLargeK1IsEmulatedDsa) {
  for (int h : {1, 3, 8}) {
    Inputs in = make_flat(10, 500, 16, 64, 24, seed_for("dagger") + h, h == 3);
    Options opt;
    opt.misa_heads = h;
    opt.misa_block = 64;
    opt.dagger_k1 = 600;  // >= every row's visible keys
    opt.want_logits = true;
    Result dag, dsa;
    std::vector<float> dl;
    ASSERT_TRUE(ref::emulate_sm90_misa_dagger(in, opt, &dag).ok());
    emu_dsa(in, opt, &dsa, &dl);
    expect_same_selection(dag, dsa, "dagger h" + std::to_string(h));
    for (size_t t = 0; t < dl.size(); ++t) ASSERT_TRUE(same_float(dag.logits[t], dl[t])) << t;
  }
}

TEST(EmuSm90Misa, DaggerStageTwoRescoresOnlyStageOneKeys) {
  Inputs in = make_flat(6, 900, 16, 64, 16, seed_for("stage2"));
  Options opt;
  opt.misa_heads = 2;
  opt.misa_block = 256;
  opt.dagger_k1 = 64;
  opt.want_logits = true;
  Result misa, dag;
  Options om = opt;
  in.shape.k = 64;  // MISA's top 64 = dagger's candidates
  ASSERT_TRUE(ref::emulate_sm90_misa(in, om, &misa).ok());
  in.shape.k = 16;
  ASSERT_TRUE(ref::emulate_sm90_misa_dagger(in, opt, &dag).ok());
  for (int64_t i = 0; i < in.shape.nq; ++i) {
    std::vector<int32_t> cand(misa.index.begin() + i * 64, misa.index.begin() + (i + 1) * 64);
    int64_t finite = 0;
    for (int64_t j = 0; j < in.shape.nk; ++j)
      if (dag.logits[i * in.shape.nk + j] > -INFINITY) ++finite;
    EXPECT_EQ(finite, 64) << "row " << i;
    for (int t = 0; t < 16; ++t) {
      const int32_t j = dag.index[i * 16 + t];
      ASSERT_GE(j, 0);
      EXPECT_NE(std::find(cand.begin(), cand.end(), j), cand.end()) << "row " << i << " key " << j;
    }
  }
}

TEST(EmuSm90Misa, RouterTiesGoToTheLowerHeadNaNLast) {
  std::vector<float> e = {1.0f, 2.0f, NAN, 2.0f, -0.0f, 2.0f, 0.0f, 3.0f};
  int heads[8];
  ref::misa_top_heads(e, 3, heads);
  EXPECT_EQ(heads[0], 1);
  EXPECT_EQ(heads[1], 3);
  EXPECT_EQ(heads[2], 7);
  ref::misa_top_heads(e, 8, heads);
  for (int g = 0; g < 8; ++g) EXPECT_EQ(heads[g], g);
  ref::misa_top_heads(e, 7, heads);  // NaN (head 2) is the one left out
  const std::vector<int> want = {0, 1, 3, 4, 5, 6, 7};
  for (int t = 0; t < 7; ++t) EXPECT_EQ(heads[t], want[t]);
  // -0 and +0 tie: the lower head wins.
  std::vector<float> z = {5.0f, 0.0f, -0.0f, 5.0f};
  ref::misa_top_heads(z, 3, heads);
  EXPECT_EQ(heads[0], 0);
  EXPECT_EQ(heads[1], 1);
  EXPECT_EQ(heads[2], 3);
}

TEST(EmuSm90Misa, DuplicateHeadsRouteToTheLowestCopies) {
  Inputs in = make_flat(5, 300, 16, 64, 8, seed_for("dups"));
  // Every head of a row is the same query and weight: all router scores tie.
  for (int64_t i = 0; i < in.shape.nq; ++i)
    for (int g = 1; g < 16; ++g) {
      std::copy_n(in.q.begin() + i * 16 * 64, 64, in.q.begin() + (i * 16 + g) * 64);
      in.w[i * 16 + g] = in.w[i * 16];
      in.q_scale[i * 16 + g] = in.q_scale[i * 16];
    }
  for (auto routing : {ref::Routing::kPooled, ref::Routing::kOwnKey, ref::Routing::kQNorm}) {
    Options opt;
    opt.misa_heads = 5;
    opt.misa_block = 100;
    opt.routing = routing;
    Result r;
    ASSERT_TRUE(ref::emulate_sm90_misa(in, opt, &r).ok());
    for (int64_t i = 0; i < in.shape.nq; ++i)
      for (int t = 0; t < 5; ++t) EXPECT_EQ(r.active_heads[i * 5 + t], t) << ref::routing_name(routing);
  }
}

TEST(EmuSm90Misa, RouterOrderIsTheDocumentedOne) {
  Inputs in = make_flat(3, 257, 8, 64, 8, seed_for("order"));
  Options opt;
  opt.misa_block = 100;
  std::vector<float> e;
  for (int64_t i = 0; i < in.shape.nq; ++i) {
    ref::emulate_sm90_misa_router(in, opt, i, &e);
    std::vector<ref::RouterBlock> blocks;
    ref::misa_router_blocks(in.ks[i], in.ke[i], in.shape.nk, 0, opt, &blocks);
    ASSERT_EQ(blocks.size(), static_cast<size_t>((in.ke[i] + 99) / 100));
    EXPECT_EQ(blocks.back().end, in.shape.nk);  // the pooled end is the sequence end
    for (int g = 0; g < 8; ++g) {
      float acc = 0.0f;
      for (const auto& b : blocks) {
        ref::EmulatedPool p;
        ref::emulate_sm90_pool(in, b.begin, b.end, false, &p);
        float dot = 0.0f;
        for (int x = 0; x < 64; ++x) dot = std::fma(in.q[(i * 8 + g) * 64 + x], p.value[x], dot);
        const float r = dot > 0.0f ? dot : 0.0f;
        const float prod = std::fabs(in.w[i * 8 + g]) * r;
        acc = acc + prod;
      }
      EXPECT_TRUE(same_float(acc, e[g])) << "row " << i << " head " << g;
    }
  }
}

TEST(EmuSm90Misa, RoutingMostlyAgreesWithTheReferenceRouter) {
  Inputs in = make_flat(48, 1500, 64, 128, 64, seed_for("agree"));
  for (auto routing : {ref::Routing::kPooled, ref::Routing::kOwnKey, ref::Routing::kQNorm}) {
    Options opt;
    opt.misa_heads = 8;
    opt.misa_block = 256;
    opt.routing = routing;
    Result emu, rf;
    ASSERT_TRUE(ref::emulate_sm90_misa(in, opt, &emu).ok());
    ASSERT_TRUE(ref::run(ref::Path::kMisa, in, opt, &rf).ok());
    int64_t agree = 0;
    for (int64_t i = 0; i < in.shape.nq; ++i)
      agree += std::equal(emu.active_heads.begin() + i * 8, emu.active_heads.begin() + (i + 1) * 8,
                          rf.active_heads.begin() + i * 8);
    EXPECT_GE(agree, in.shape.nq - 2) << ref::routing_name(routing);
  }
}

TEST(EmuSm90Misa, PagedEqualsFlattened) {
  const std::vector<int32_t> ctx = {1, 130, 700, 64};
  for (int nn : {1, 2, 3}) {
    PagedInputs in = make_paged(4, nn, 16, 64, 24, ctx, seed_for("paged") + nn);
    for (auto base : {ref::IndexBase::kRelative, ref::IndexBase::kAbsolute}) {
      for (auto path : {ref::Path::kMisa, ref::Path::kMisaDagger}) {
        Options opt;
        opt.misa_heads = 3;
        opt.misa_block = 128;
        opt.dagger_k1 = 48;
        opt.index_base = base;
        opt.want_logits = true;
        if (nn == 1) opt.routing = ref::Routing::kOwnKey;
        Result pg, fl;
        Status st = path == ref::Path::kMisa ? ref::emulate_sm90_misa_paged(in, opt, &pg)
                                             : ref::emulate_sm90_misa_dagger_paged(in, opt, &pg);
        ASSERT_TRUE(st.ok()) << st.message();
        Inputs flat;
        std::vector<int64_t> slots;
        ASSERT_TRUE(ref::flatten_paged(in, opt, &flat, &slots).ok());
        Options fo = opt;
        fo.index_base = ref::IndexBase::kRelative;
        st = path == ref::Path::kMisa ? ref::emulate_sm90_misa(flat, fo, &fl)
                                      : ref::emulate_sm90_misa_dagger(flat, fo, &fl);
        ASSERT_TRUE(st.ok()) << st.message();
        EXPECT_EQ(pg.active_heads, fl.active_heads);
        for (int64_t r = 0; r < in.rows(); ++r)
          for (int t = 0; t < in.k; ++t) {
            int32_t want = fl.index[r * in.k + t];
            if (want >= 0 && base == ref::IndexBase::kAbsolute) want = static_cast<int32_t>(slots[flat.ks[r] + want]);
            ASSERT_EQ(pg.index[r * in.k + t], want) << "next_n " << nn << " row " << r;
            ASSERT_TRUE(same_float(pg.score[r * in.k + t], fl.score[r * in.k + t]));
          }
      }
    }
  }
  // own_key with next_n > 1 is refused.
  PagedInputs in = make_paged(2, 2, 8, 64, 8, {100, 200}, seed_for("ownkey"));
  Options opt;
  opt.misa_heads = 2;
  opt.routing = ref::Routing::kOwnKey;
  Result r;
  EXPECT_FALSE(ref::emulate_sm90_misa_paged(in, opt, &r).ok());
}

TEST(EmuSm90Misa, PagedAllHeadsIsEmulatedPagedDsa) {
  PagedInputs in = make_paged(3, 2, 16, 64, 30, {65, 300, 2}, seed_for("pagedall"));
  Options opt;
  opt.misa_heads = 16;
  opt.misa_block = 64;
  opt.want_logits = true;
  Result misa;
  ASSERT_TRUE(ref::emulate_sm90_misa_paged(in, opt, &misa).ok());
  std::vector<float> dl;
  ASSERT_TRUE(ref::emulate_sm90_paged_logits(in, &dl).ok());
  const int64_t cols = in.max_pages * 64;
  ASSERT_EQ(misa.logits.size(), dl.size());
  for (size_t t = 0; t < dl.size(); ++t) ASSERT_TRUE(same_float(misa.logits[t], dl[t])) << t;
  std::vector<int32_t> idx(static_cast<size_t>(in.k));
  std::vector<float> sc(static_cast<size_t>(in.k));
  for (int64_t r = 0; r < in.rows(); ++r) {
    ::indexlab::testing::canonical_topk_offset(dl.data() + r * cols, 0, cols, in.k, 0, idx.data(), sc.data());
    for (int t = 0; t < in.k; ++t) {
      ASSERT_EQ(misa.index[r * in.k + t], idx[t]) << "row " << r;
      ASSERT_TRUE(same_float(misa.score[r * in.k + t], sc[t]));
    }
  }
}

TEST(EmuSm90Misa, RefusesWithWords) {
  Inputs in = make_flat(2, 64, 8, 64, 8, seed_for("refuse"));
  Options opt;
  opt.misa_heads = 9;
  Result r;
  Status st = ref::emulate_sm90_misa(in, opt, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("misa_heads"), std::string::npos) << st.message();
  opt.misa_heads = 2;
  opt.dagger_k1 = 4;
  st = ref::emulate_sm90_misa_dagger(in, opt, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("dagger_k1"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace indexlab
