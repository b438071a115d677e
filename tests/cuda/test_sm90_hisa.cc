// Hopper HISA kernels against the CPU: candidate-gather logits (tile / list, flat / paged) and the
// index remap bit-exact to the sm90 emulation, hisa_fp8 / hisa_paged_fp8 bit-exact to
// ref::emulate_sm90_hisa (index, score, logits), determinism, the incremental pooled cache, and
// the emulation judged against the reference (CPU only).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "compare/judge.h"
#include "compare/problem.h"
#include "cuda/api.h"
#include "cuda/sparse.h"
#include "reference/emulate_sm90_dsa.h"
#include "reference/emulate_sm90_sparse.h"
#include "reference/numerics.h"
#include "reference/problem.h"
#include "reference/quant.h"
#include "tests/common/device_buffer.h"
#include "tests/common/hisa_problems.h"
#include "tests/common/sm90_test.h"

#if INDEXLAB_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/pooled_cache.h"
#include "cuda/sparse_detail.h"
#endif

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

// ---- CPU: the emulation judged against the reference -----------------------------------------

void expect_judged(const compare::Problem& p, Result&& emu, const std::string& what) {
  compare::JudgeOptions jo;
  ASSERT_TRUE(compare::tolerance_by_name("tensor_core", p.h(), p.d(), &jo.tolerance).ok());
  compare::Report rep;
  const auto cand = compare::to_candidate_output(std::move(emu), p.options.index_base);
  Status st = compare::judge(p, cand, jo, &rep);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  std::string worst;
  for (const auto& v : rep.selection.worst) worst += " row " + std::to_string(v.row) + ": " + v.diagnosis + ";";
  EXPECT_TRUE(rep.selection.passed(false)) << what << ": bound-aware " << rep.selection.bound_aware << " of "
                                           << rep.selection.rows_judged << ", invalid " << rep.selection.invalid
                                           << worst;
}

TEST(Sm90HisaEmulation, JudgedAgainstReferenceFlat) {
  for (auto align : {ref::BlockAlign::kSequence, ref::BlockAlign::kRelease}) {
    FlatCase c;
    c.nq = 24;
    c.nk = 1400;
    c.h = 16;
    c.d = 64;
    c.k = 100;
    compare::Problem p;
    p.path = ref::Path::kHisa;
    p.options.hisa_block = 64;
    p.options.hisa_m = 6;
    p.options.align = align;
    p.flat = make_flat(c, seed_for("judgeflat"));
    Result emu;
    ASSERT_TRUE(ref::emulate_sm90_hisa(p.flat, p.options, &emu).ok());
    expect_judged(p, std::move(emu), align == ref::BlockAlign::kSequence ? "sequence" : "release");
  }
}

TEST(Sm90HisaEmulation, JudgedAgainstReferencePaged) {
  compare::Problem p;
  p.path = ref::Path::kHisa;
  p.paged = true;
  p.options.hisa_block = 64;
  p.options.hisa_m = 4;
  p.paged_in = make_paged(3, 2, 16, 64, 50, {700, 129, 3}, seed_for("judgepaged"));
  Result emu;
  ASSERT_TRUE(ref::emulate_sm90_hisa_paged(p.paged_in, p.options, &emu).ok());
  expect_judged(p, std::move(emu), "paged");
}

TEST(Sm90Hisa, RefusesUnsupportedOptions) {
  FlatCase c;
  Inputs in = make_flat(c, 3);
  Options o;
  o.hisa_block = 96;
  o.hisa_m = 8;
  Status st = cuda::can_implement_sparse(ref::Path::kHisa, in, o);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("hisa_block"), std::string::npos) << st.message();
  Result r;
  EXPECT_FALSE(cuda::hisa_fp8(in, o, &r).ok());
  o.hisa_block = 64;
  o.strict_pooling = true;
  EXPECT_FALSE(cuda::hisa_fp8(in, o, &r).ok());
}

#if INDEXLAB_HAVE_CUDA

using testing::Dev;

// ---- Gather logits ----------------------------------------------------------------------------

// Tile mode runs on the TMA kernel for 16..64 heads by default and on gather_kernel with
// INDEXLAB_GATHER=v1 (and for 8 and 128 heads); both must give the emulation's bits.
TEST(Sm90Gather, TileModeFlatBitExact) {
  SKIP_WITHOUT_GPU();
  for (const char* path : {"default", "v1"})
  for (int d : {64, 128})
    for (int h : {8, 16, 32, 64, 128}) {
      testing::ScopedEnv env("INDEXLAB_GATHER", std::string(path) == "v1" ? "v1" : nullptr);
      FlatCase c;
      c.nq = 7;
      c.nk = 700;
      c.h = h;
      c.d = d;
      const std::string what = "h" + std::to_string(h) + "_d" + std::to_string(d);
      Inputs in = make_flat(c, seed_for(what.c_str()));
      SCOPED_TRACE(std::string("gather path ") + path);
      std::mt19937_64 rng(seed_for(("t" + what).c_str()));
      const int64_t mt = 9;
      std::vector<int32_t> ts(c.nq * mt), lo(c.nq), hi(c.nq);
      for (int64_t r = 0; r < c.nq; ++r) {
        lo[r] = static_cast<int32_t>(rng() % 200);
        hi[r] = static_cast<int32_t>(lo[r] + rng() % 600);
        if (r == 0) {
          hi[r] = lo[r];  // empty row
        }
        if (r == 1) {
          lo[r] = 0;
          hi[r] = 700;
        }
        for (int64_t t = 0; t < mt; ++t) {
          const int64_t x = static_cast<int64_t>(rng() % 760) - 30;
          ts[r * mt + t] = x < 0 ? -1 : static_cast<int32_t>(x);  // unaligned, past nk, -1
        }
        ts[r * mt + 0] = std::max(0, lo[r] - 1);  // tile boundary -1
        ts[r * mt + 1] = std::max(0, hi[r] - 63);  // last visible key in its last column
      }
      Dev<uint8_t> dq(testing::e4m3_codes(in.q)), dk(testing::e4m3_codes(in.k));
      Dev<float> dw(in.w), ds(in.k_scale), dl;
      Dev<int32_t> dts(ts), dlo(lo), dhi(hi);
      const int64_t ld = mt * 64 + 5;
      dl.alloc(c.nq * ld);
      cuda::GatherLogitsParams gp;
      gp.q = dq.p;
      gp.w = dw.p;
      gp.k = dk.p;
      gp.k_scale = ds.p;
      gp.nk = c.nk;
      gp.lo = dlo.p;
      gp.hi = dhi.p;
      gp.tile_start = dts.p;
      gp.max_tiles = mt;
      gp.logits = dl.p;
      gp.ld = ld;
      gp.nq = c.nq;
      gp.h = h;
      gp.d = d;
      Status st = cuda::launch_gather_logits_fp8(gp);
      ASSERT_TRUE(st.ok()) << st.message();
      const std::vector<float> out = dl.down();
      int64_t bad = 0;
      for (int64_t r = 0; r < c.nq; ++r) {
        for (int64_t col = 0; col < ld; ++col) {
          const float g = out[r * ld + col];
          if (col >= mt * 64) {
            if (bits(g) != 0xFFFFFFFFu) ++bad;  // past the written columns: untouched
            continue;
          }
          const int32_t s = ts[r * mt + col / 64];
          const int64_t key = s < 0 ? -1 : s + col % 64;
          float e = -INFINITY;
          if (key >= lo[r] && key < hi[r] && key < c.nk && key >= 0)
            e = ref::emulate_sm90_dsa_logit(&in.q[r * h * d], &in.w[r * h], h, d, &in.k[key * d], in.k_scale[key]);
          if (bits(g) != bits(e) && bad++ < 5)
            ADD_FAILURE() << what << ": row " << r << " col " << col << " key " << key << " gpu " << g << " emu " << e;
        }
      }
      EXPECT_EQ(bad, 0) << what;
    }
}

/// The emulated logit of query row r against `key` of pg's paged cache: -inf outside [lo, hi),
/// NaN where the key's page is past max_pages, -1 or out of range. kv: scratch of pg.d floats.
float paged_expected(const PagedInputs& pg, int64_t r, int64_t key, int32_t lo, int32_t hi, std::vector<float>* kv) {
  if (key < lo || key >= hi) return -INFINITY;
  const int64_t lp = key / 64;
  const int32_t page = lp < pg.max_pages ? pg.block_table[(r / pg.next_n) * pg.max_pages + lp] : -1;
  if (page < 0 || page >= pg.num_pages) return NAN;
  const int d = pg.d, h = pg.h;
  const uint8_t* base = pg.cache.data() + page * pg.page_bytes();
  for (int x = 0; x < d; ++x) (*kv)[x] = ref::e4m3_to_float(base[(key % 64) * d + x]);
  float s;
  std::memcpy(&s, base + 64 * d + (key % 64) * 4, 4);
  return ref::emulate_sm90_dsa_logit(&pg.q[r * h * d], &pg.w[r * h], h, d, kv->data(), s);
}

/// The gather parameters every paged test shares: pg's shapes and pages, the device copies of its
/// codes, weights, cache and block table, the rows' [lo, hi), logits rows of ld.
cuda::GatherLogitsParams paged_gather_params(const PagedInputs& pg, const uint8_t* q, const float* w,
                                             const uint8_t* cache, const int32_t* block_table,
                                             const int32_t* lo, const int32_t* hi, float* logits, int64_t ld,
                                             int64_t rows) {
  cuda::GatherLogitsParams gp;
  gp.q = q;
  gp.w = w;
  gp.cache = cache;
  gp.block_table = block_table;
  gp.max_pages = pg.max_pages;
  gp.num_pages = pg.num_pages;
  gp.next_n = pg.next_n;
  gp.lo = lo;
  gp.hi = hi;
  gp.logits = logits;
  gp.ld = ld;
  gp.nq = rows;
  gp.h = pg.h;
  gp.d = pg.d;
  return gp;
}

TEST(Sm90Gather, ListModePagedBitExactWithBadPages) {
  SKIP_WITHOUT_GPU();
  for (int nn : {1, 3}) {
    PagedInputs pg = make_paged(3, nn, 64, 128, 16, {300, 64, 130}, seed_for("listpaged") + nn);
    pg.block_table[2 * pg.max_pages + 1] = 1 << 28;  // sequence 2, positions 64..127: out of range
    std::mt19937_64 rng(seed_for("listcand") + nn);
    const int64_t rows = pg.rows(), ncand = 150;
    std::vector<int32_t> cand(rows * ncand), lo(rows, 0), hi(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t ctx = pg.context_lens[r / nn];
      hi[r] = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - nn + (r % nn) + 1)));
      for (int64_t c = 0; c < ncand; ++c) {
        const int64_t x = static_cast<int64_t>(rng() % 420) - 40;  // -1s, unsorted, beyond ctx
        cand[r * ncand + c] = x < 0 ? -1 : static_cast<int32_t>(x);
      }
    }
    Dev<uint8_t> dq(testing::e4m3_codes(pg.q)), dc(pg.cache);
    Dev<float> dw(pg.w), dl;
    Dev<int32_t> dbt(pg.block_table), dcand(cand), dlo(lo), dhi(hi);
    dl.alloc(rows * ncand);
    cuda::GatherLogitsParams gp = paged_gather_params(pg, dq.p, dw.p, dc.p, dbt.p, dlo.p, dhi.p, dl.p, ncand, rows);
    gp.cand = dcand.p;
    gp.ncand = ncand;
    Status st = cuda::launch_gather_logits_fp8(gp);
    ASSERT_TRUE(st.ok()) << st.message();
    const std::vector<float> out = dl.down();
    std::vector<float> kv(pg.d);
    int64_t bad = 0, nans = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < ncand; ++c) {
        const int32_t key = cand[r * ncand + c];
        const float e = paged_expected(pg, r, key, lo[r], hi[r], &kv);
        const float g = out[r * ncand + c];
        if (std::isnan(e)) {
          ++nans;
          if (!std::isnan(g) && bad++ < 5) ADD_FAILURE() << "row " << r << " col " << c << ": expected NaN, got " << g;
        } else if (bits(g) != bits(e) && bad++ < 5) {
          ADD_FAILURE() << "next_n " << nn << " row " << r << " col " << c << " key " << key << " gpu " << g
                        << " emu " << e;
        }
      }
    EXPECT_EQ(bad, 0);
    EXPECT_GT(nans, 0) << "the bad page was never visible";
  }
}

// Paged tile mode: tiles on page boundaries (one TMA a page), tiles across two pages (the TMA
// kernel's producer copies them itself), -1 tiles, tiles past the context, an out-of-range page
// and a position past max_pages, pages out of order; both kernels bit-exact to the emulation.
TEST(Sm90Gather, TileModePagedBitExactWithBadPages) {
  SKIP_WITHOUT_GPU();
  for (const char* path : {"default", "v1"})
    for (int d : {64, 128})
      for (int h : {16, 32, 64, 128})
        for (int nn : {1, 3}) {
          testing::ScopedEnv env("INDEXLAB_GATHER", std::string(path) == "v1" ? "v1" : nullptr);
          const std::string what = std::string(path) + "_h" + std::to_string(h) + "_d" + std::to_string(d) +
                                   "_nn" + std::to_string(nn);
          SCOPED_TRACE(what);
          PagedInputs pg = make_paged(3, nn, h, d, 16, {700, 64, 330}, seed_for(("tilepaged" + what).c_str()));
          pg.block_table[2 * pg.max_pages + 1] = 1 << 28;  // sequence 2, positions 64..127: out of range
          std::mt19937_64 rng(seed_for(("tiles" + what).c_str()));
          const int64_t rows = pg.rows(), mt = 13;
          std::vector<int32_t> ts(rows * mt), lo(rows, 0), hi(rows);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t ctx = pg.context_lens[r / nn];
            hi[r] = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - nn + (r % nn) + 1)));
            lo[r] = r % 4 == 1 ? static_cast<int32_t>(rng() % 100) : 0;
            for (int64_t t = 0; t < mt; ++t) {
              int64_t x;
              switch (rng() % 4) {
                case 0: x = static_cast<int64_t>(rng() % 13) * 64; break;  // a page
                case 1: x = static_cast<int64_t>(rng() % 800); break;      // across two pages
                case 2: x = -1; break;
                default: x = static_cast<int64_t>(rng() % 12) * 64; break;
              }
              ts[r * mt + t] = static_cast<int32_t>(x);
            }
            ts[r * mt + 0] = 64;                                   // the bad page of sequence 2
            ts[r * mt + 1] = static_cast<int32_t>(pg.max_pages * 64 - 32);  // past max_pages
            ts[r * mt + mt - 1] = -1;                              // a trailing inactive tile
          }
          Dev<uint8_t> dq(testing::e4m3_codes(pg.q)), dc(pg.cache);
          Dev<float> dw(pg.w), dl;
          Dev<int32_t> dbt(pg.block_table), dts(ts), dlo(lo), dhi(hi);
          const int64_t ld = mt * 64 + 3;
          dl.alloc(rows * ld);
          cuda::GatherLogitsParams gp = paged_gather_params(pg, dq.p, dw.p, dc.p, dbt.p, dlo.p, dhi.p, dl.p, ld, rows);
          gp.tile_start = dts.p;
          gp.max_tiles = mt;
          Status st = cuda::launch_gather_logits_fp8(gp);
          ASSERT_TRUE(st.ok()) << st.message();
          const std::vector<float> out = dl.down();
          std::vector<float> kv(d);
          int64_t bad = 0, nans = 0, finite = 0, straddled = 0;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t col = 0; col < ld; ++col) {
              const float g = out[r * ld + col];
              if (col >= mt * 64) {
                if (bits(g) != 0xFFFFFFFFu && bad++ < 5) ADD_FAILURE() << "row " << r << " col " << col << " written";
                continue;
              }
              const int32_t s = ts[r * mt + col / 64];
              const int64_t key = s < 0 ? -1 : s + col % 64;
              const float e = paged_expected(pg, r, key, lo[r], hi[r], &kv);
              if (std::isfinite(e)) {  // a visible key on a readable page
                ++finite;
                if (s % 64 != 0) ++straddled;
              }
              if (std::isnan(e)) {
                ++nans;
                if (!std::isnan(g) && bad++ < 5) ADD_FAILURE() << "row " << r << " col " << col << ": expected NaN, got " << g;
              } else if (bits(g) != bits(e) && bad++ < 5) {
                ADD_FAILURE() << "row " << r << " col " << col << " key " << key << " gpu " << g << " emu " << e;
              }
            }
          EXPECT_EQ(bad, 0);
          EXPECT_GT(nans, 0) << "the bad page was never visible";
          EXPECT_GT(straddled, 0) << "no visible key in a tile across two pages";
          EXPECT_GT(finite, 100);
        }
}

TEST(Sm90Gather, RemapTileListAndPaged) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 3, mt = 2, k = 5;
  std::vector<int32_t> ts = {100, -1, 7, 200, -1, -1};
  std::vector<int32_t> idx = {0, 63, 64, 127, -1, 5, 64, 70, -1, -1, 3, 0, 0, 0, 0};
  std::vector<int32_t> base = {10, 0, 1};
  std::vector<int32_t> expect = {90, 153, -1, -1, -1, 7 - 0 + 5 - 0, 200, 206, -1, -1, -1, -1, -1, -1, -1};
  Dev<int32_t> dts(ts), di(idx), db(base);
  cuda::RemapParams rp;
  rp.index = di.p;
  rp.rows = rows;
  rp.k = k;
  rp.tile_start = dts.p;
  rp.max_tiles = mt;
  rp.base = db.p;
  ASSERT_TRUE(cuda::launch_remap_indices(rp).ok());
  EXPECT_EQ(di.down(), expect);
  // List mode with a paged block table (absolute slots).
  std::vector<int32_t> cand = {5, 70, -1, 130, 0, 64};  // [2 rows (one sequence each), 3]
  std::vector<int32_t> bt = {9, 4, 2, 1, 0, 3};          // [2, 3]
  std::vector<int32_t> li = {0, 1, 2, 2, 1, -1};
  Dev<int32_t> dc(cand), dbt(bt), dli(li);
  cuda::RemapParams lp;
  lp.index = dli.p;
  lp.rows = 2;
  lp.k = 3;
  lp.cand = dc.p;
  lp.ncand = 3;
  lp.block_table = dbt.p;
  lp.max_pages = 3;
  lp.next_n = 1;
  ASSERT_TRUE(cuda::launch_remap_indices(lp).ok());
  EXPECT_EQ(dli.down(), (std::vector<int32_t>{9 * 64 + 5, 4 * 64 + 6, -1, 0 * 64 + 0, 1 * 64 + 0, -1}));
}

// ---- hisa_fp8 / hisa_paged_fp8 == emulation ---------------------------------------------------------

int64_t compare_results(const Result& gpu, const Result& emu, const std::string& what) {
  int64_t bad = 0;
  EXPECT_EQ(gpu.index.size(), emu.index.size()) << what;
  EXPECT_EQ(gpu.logits.size(), emu.logits.size()) << what;
  for (size_t t = 0; t < std::min(gpu.index.size(), emu.index.size()); ++t) {
    if (gpu.index[t] != emu.index[t] || !same_float(gpu.score[t], emu.score[t])) {
      if (bad++ < 5)
        ADD_FAILURE() << what << ": row " << t / emu.k << " slot " << t % emu.k << " gpu " << gpu.index[t] << " ("
                      << gpu.score[t] << ") emu " << emu.index[t] << " (" << emu.score[t] << ")";
    }
  }
  for (size_t t = 0; t < std::min(gpu.logits.size(), emu.logits.size()); ++t) {
    if (bits(gpu.logits[t]) != bits(emu.logits[t]) && bad++ < 10)
      ADD_FAILURE() << what << ": logit " << t / emu.logits_cols << "," << t % emu.logits_cols << " gpu "
                    << gpu.logits[t] << " emu " << emu.logits[t];
  }
  return bad;
}

void check_flat(const Inputs& in, const Options& opt, const std::string& what) {
  Options o = opt;
  o.want_logits = true;
  Result gpu, emu;
  Status st = cuda::hisa_fp8(in, o, &gpu);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  st = ref::emulate_sm90_hisa(in, o, &emu);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  EXPECT_EQ(compare_results(gpu, emu, what), 0) << what;
}

struct HisaCase {
  std::string name;
  FlatCase c;
  int block = 128, m = 4;
  bool plus = false, bf16 = false, absolute = false;
  ref::BlockAlign align = ref::BlockAlign::kSequence;
};

std::vector<HisaCase> flat_cases() {
  std::vector<HisaCase> v;
  {
    HisaCase x;
    x.name = "causal_h64_d128";
    x.c.nq = 40;
    x.c.nk = 1500;
    x.c.h = 64;
    x.c.d = 128;
    x.c.k = 200;
    x.m = 5;
    v.push_back(x);
    x.name = "causal_release_ks37";
    x.align = ref::BlockAlign::kRelease;
    x.c.ks.assign(40, 37);
    x.c.ke.resize(40);
    for (int i = 0; i < 40; ++i) x.c.ke[i] = 1500 - 40 + i + 1;
    v.push_back(x);
    x.name = "sequence_ks37_absolute";
    x.align = ref::BlockAlign::kSequence;
    x.absolute = true;
    v.push_back(x);
  }
  {
    // nb <= m, nb = m + 1, tile boundaries +-1, short and empty rows (B = 64, m = 4).
    HisaCase x;
    x.name = "boundaries_b64_m4";
    x.block = 64;
    x.m = 4;
    x.c.nk = 900;
    x.c.h = 16;
    x.c.d = 64;
    x.c.k = 150;
    for (int64_t len : {256, 257, 255, 320, 321, 319, 63, 64, 65, 1, 0, 128, 129, 900 - 101}) {
      for (int64_t s0 : {0, 101}) {
        if (s0 + len > 900) continue;
        x.c.ks.push_back(static_cast<int32_t>(s0));
        x.c.ke.push_back(static_cast<int32_t>(s0 + len));
      }
    }
    x.c.nq = static_cast<int64_t>(x.c.ks.size());
    v.push_back(x);
    x.name = "boundaries_release";
    x.align = ref::BlockAlign::kRelease;
    v.push_back(x);
    x.name = "boundaries_plus_ends_bf16";
    x.align = ref::BlockAlign::kSequence;
    x.plus = true;
    x.bf16 = true;
    v.push_back(x);
  }
  {
    // Packed batch: three sequences, each query sees a prefix of its own sequence.
    HisaCase x;
    x.name = "packed";
    x.block = 64;
    x.m = 3;
    x.c.nk = 700 + 1000 + 333;
    x.c.h = 32;
    x.c.d = 128;
    x.c.k = 100;
    const int64_t st[3] = {0, 700, 1700}, en[3] = {700, 1700, 2033};
    for (int s = 0; s < 3; ++s)
      for (int i = 0; i < 6; ++i) {
        x.c.ks.push_back(static_cast<int32_t>(st[s]));
        x.c.ke.push_back(static_cast<int32_t>(std::min(en[s], st[s] + 1 + (i * 211 + s * 53) % (en[s] - st[s]))));
        x.c.seq_end.push_back(static_cast<int32_t>(en[s]));
        x.c.origin.push_back(static_cast<int32_t>(st[s]));
      }
    x.c.nq = 18;
    v.push_back(x);
    x.name = "packed_release";
    x.align = ref::BlockAlign::kRelease;
    v.push_back(x);
    x.name = "packed_release_no_origin";  // blocks straddle sequences
    x.c.origin.clear();
    v.push_back(x);
  }
  for (int h : {8, 128}) {
    HisaCase x;
    x.name = "h" + std::to_string(h) + "_narrow";
    x.block = 128;
    x.m = 3;
    x.c.nq = 9;
    x.c.nk = 1100;
    x.c.h = h;
    x.c.d = h == 8 ? 64 : 128;
    x.c.k = 384;  // m B: every candidate
    x.c.values = Values::kNarrow;
    v.push_back(x);
  }
  {
    HisaCase x;
    x.name = "ties";
    x.block = 64;
    x.m = 4;
    x.c.nq = 12;
    x.c.nk = 800;
    x.c.h = 16;
    x.c.d = 64;
    x.c.k = 64;
    x.c.values = Values::kTiedKeys;
    v.push_back(x);
  }
  return v;
}

TEST(Sm90Hisa, FlatBitExactToEmulation) {
  SKIP_WITHOUT_GPU();
  for (const HisaCase& x : flat_cases()) {
    Options o;
    o.hisa_block = x.block;
    o.hisa_m = x.m;
    o.hisa_topm_plus_ends = x.plus;
    o.hisa_bf16_block_scores = x.bf16;
    o.align = x.align;
    o.index_base = x.absolute ? ref::IndexBase::kAbsolute : ref::IndexBase::kRelative;
    check_flat(make_flat(x.c, seed_for(x.name.c_str())), o, x.name);
  }
}

TEST(Sm90Hisa, PagedBitExactToEmulation) {
  SKIP_WITHOUT_GPU();
  for (int nn : {1, 2, 3})
    for (bool absolute : {false, true}) {
      const std::string what = "paged_nn" + std::to_string(nn) + (absolute ? "_abs" : "_rel");
      PagedInputs pg = make_paged(4, nn, 64, 128, 120, {1000, 2, 129, 640}, seed_for(what.c_str()));
      Options o;
      o.hisa_block = 128;
      o.hisa_m = 3;
      o.want_logits = true;
      o.index_base = absolute ? ref::IndexBase::kAbsolute : ref::IndexBase::kRelative;
      Result gpu, emu;
      Status st = cuda::hisa_paged_fp8(pg, o, &gpu);
      ASSERT_TRUE(st.ok()) << what << ": " << st.message();
      st = ref::emulate_sm90_hisa_paged(pg, o, &emu);
      ASSERT_TRUE(st.ok()) << what << ": " << st.message();
      EXPECT_EQ(compare_results(gpu, emu, what), 0) << what;
    }
}

TEST(Sm90Hisa, DeterministicOver20Reruns) {
  SKIP_WITHOUT_GPU();
  HisaCase x = flat_cases()[3];
  Options o;
  o.hisa_block = x.block;
  o.hisa_m = x.m;
  o.want_logits = true;
  Inputs in = make_flat(x.c, seed_for("det"));
  Result first;
  ASSERT_TRUE(cuda::hisa_fp8(in, o, &first).ok());
  PagedInputs pg = make_paged(2, 2, 16, 64, 40, {500, 77}, seed_for("detp"));
  Result pfirst;
  ASSERT_TRUE(cuda::hisa_paged_fp8(pg, o, &pfirst).ok());
  for (int rep = 0; rep < 20; ++rep) {
    Result r, pr;
    ASSERT_TRUE(cuda::hisa_fp8(in, o, &r).ok());
    ASSERT_TRUE(cuda::hisa_paged_fp8(pg, o, &pr).ok());
    ASSERT_EQ(r.index, first.index) << "rerun " << rep;
    ASSERT_EQ(std::memcmp(r.score.data(), first.score.data(), r.score.size() * 4), 0) << "rerun " << rep;
    ASSERT_EQ(std::memcmp(r.logits.data(), first.logits.data(), r.logits.size() * 4), 0) << "rerun " << rep;
    ASSERT_EQ(pr.index, pfirst.index) << "paged rerun " << rep;
    ASSERT_EQ(std::memcmp(pr.score.data(), pfirst.score.data(), pr.score.size() * 4), 0) << "paged rerun " << rep;
  }
}

// The decode pooled cache (HISA's codes and MISA's means): grown and shrunk step by step, every
// valid block equals pooling it from scratch and the emulated pooling, bit for bit.
TEST(Sm90PooledCache, IncrementalEqualsFullRecompute) {
  SKIP_WITHOUT_GPU();
  for (int block : {64, 128}) {
    PagedInputs pg = make_paged(3, 1, 16, 128, 16, {1, 1, 1}, seed_for("incr"), 12);
    const int32_t cap = static_cast<int32_t>(pg.max_pages * 64);
    std::vector<std::vector<int32_t>> steps = {{1, 0, 5}, {64, 1, 5}, {65, 127, 200}, {66, 128, 200},
                                               {300, 129, 255}, {301, 400, 256}, {cap, 401, 257}};
    cuda::PagedPooledCache inc, means_only;
    ASSERT_TRUE(inc.reset(pg.batch, pg.max_pages, block, pg.d, cuda::PooledForm::kBoth).ok());
    ASSERT_TRUE(means_only.reset(pg.batch, pg.max_pages, block, pg.d, cuda::PooledForm::kMeans).ok());
    for (const auto& ctx : steps) {
      pg.context_lens = ctx;
      ASSERT_TRUE(inc.update(pg).ok());
      ASSERT_TRUE(means_only.update(pg).ok());
      cuda::PagedPooledCache full;
      ASSERT_TRUE(full.reset(pg.batch, pg.max_pages, block, pg.d).ok());
      ASSERT_TRUE(full.update(pg).ok());
      std::vector<uint8_t> ci, cf;
      std::vector<float> si, sf;
      ASSERT_TRUE(inc.download(&ci, &si).ok());
      ASSERT_TRUE(full.download(&cf, &sf).ok());
      std::vector<float> mi, mm;
      ASSERT_TRUE(inc.download_means(&mi).ok());
      ASSERT_TRUE(means_only.download_means(&mm).ok());
      // Flattened keys for the emulated pooling of each valid block.
      Inputs flat;
      ASSERT_TRUE(ref::flatten_paged(pg, Options{}, &flat).ok());
      const int64_t bps = inc.blocks_per_seq();
      int64_t off = 0;
      for (int64_t b = 0; b < pg.batch; ++b) {
        const int64_t nbk = (ctx[b] + block - 1) / block;
        for (int64_t t = 0; t < nbk; ++t) {
          const int64_t slot = b * bps + t;
          ASSERT_EQ(bits(si[slot]), bits(sf[slot])) << "block " << block << " seq " << b << " blk " << t;
          ASSERT_EQ(0, std::memcmp(&ci[slot * pg.d], &cf[slot * pg.d], pg.d)) << "seq " << b << " blk " << t;
          ref::EmulatedPool ep;
          ref::emulate_sm90_pool(flat, off + t * block, off + std::min<int64_t>((t + 1) * block, ctx[b]), true, &ep);
          ASSERT_EQ(bits(si[slot]), bits(ep.scale)) << "seq " << b << " blk " << t;
          for (int x = 0; x < pg.d; ++x)
            ASSERT_EQ(bits(ref::e4m3_to_float(ci[slot * pg.d + x])), bits(ep.value[x])) << "seq " << b << " blk " << t;
          ref::EmulatedPool em;
          ref::emulate_sm90_pool(flat, off + t * block, off + std::min<int64_t>((t + 1) * block, ctx[b]), false, &em);
          for (int x = 0; x < pg.d; ++x) {
            ASSERT_EQ(bits(mi[slot * pg.d + x]), bits(em.value[x])) << "mean, seq " << b << " blk " << t << " x " << x;
            ASSERT_EQ(bits(mm[slot * pg.d + x]), bits(em.value[x])) << "means-only, seq " << b << " blk " << t;
          }
        }
        off += ctx[b];
      }
    }
    // A one-token step re-pools one block per growing sequence.
    pg.context_lens = {cap, 402, 258};
    ASSERT_TRUE(inc.update(pg).ok());
    EXPECT_EQ(inc.last_repooled(), 2);
    // Each form hands out only what it keeps.
    std::vector<uint8_t> c;
    std::vector<float> sc, mq;
    const Status st = means_only.download(&c, &sc);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("kMeans"), std::string::npos) << st.message();
    EXPECT_EQ(means_only.codes(), nullptr);
    cuda::PagedPooledCache quantized;
    ASSERT_TRUE(quantized.reset(pg.batch, pg.max_pages, block, pg.d).ok());
    EXPECT_EQ(quantized.means(), nullptr);
    EXPECT_FALSE(quantized.download_means(&mq).ok());
  }
}

// Timings (only with INDEXLAB_HISA_BENCH=1): the HISA fixture beside our DSA on the same card,
// median of a few runs after a warm-up, per-stage times of the last run.
float median_ms(cuda::Workload* w, int runs, std::string* stages) {
  std::vector<float> t;
  float ms = 0;
  EXPECT_TRUE(w->run(&ms).ok());
  for (int i = 0; i < runs; ++i) {
    Status st = w->run(&ms);
    EXPECT_TRUE(st.ok()) << st.message();
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  if (stages) {
    stages->clear();
    for (const auto& x : w->stages) *stages += " " + x.first + "=" + std::to_string(x.second);
  }
  return t[t.size() / 2];
}

TEST(Sm90HisaBench, BesideDsa) {
  SKIP_WITHOUT_GPU();
  const char* e = std::getenv("INDEXLAB_HISA_BENCH");
  if (!e || std::string(e) != "1") GTEST_SKIP() << "set INDEXLAB_HISA_BENCH=1 to time";
  std::printf("device: %s\n", cuda::device_name().c_str());
  struct B {
    int64_t sq, sk, batch;
  };
  for (const B& b : {B{65536, 65536, 0}, B{32768, 32768, 0}, B{1024, 65536, 0}, B{0, 32768, 64}, B{0, 65536, 64},
                     B{0, 131072, 64}}) {
    cuda::SparseBenchSpec spec;
    spec.path = ref::Path::kHisa;
    spec.sq = b.sq;
    spec.sk = b.sk;
    spec.batch = b.batch;
    spec.seed = 42;
    std::unique_ptr<cuda::Workload> w;
    Status st = cuda::detail::make_hisa_workload(spec, &w);
    ASSERT_TRUE(st.ok()) << st.message();
    std::string stages;
    const int runs = b.batch == 0 && b.sq > 4096 ? 3 : 20;
    const float hisa = median_ms(w.get(), runs, &stages);
    const double tf = w->flops / (hisa * 1e-3) * 1e-12;
    w.reset();
    std::unique_ptr<cuda::Workload> dw;
    if (b.batch == 0 && b.sq == b.sk) {
      st = cuda::make_prefill_workload(b.sk, 64, 128, 2048, false, 42, &dw);
    } else if (b.batch == 0) {
      st = cuda::make_sparse_workload([&] {
        cuda::SparseBenchSpec s2 = spec;
        s2.path = ref::Path::kDsa;
        return s2;
      }(), &dw);
    } else {
      st = cuda::make_decode_workload(b.batch, b.sk, 64, 128, 2048, 1, false, 42, &dw);
    }
    ASSERT_TRUE(st.ok()) << st.message();
    const float dsa = median_ms(dw.get(), runs, nullptr);
    std::printf("HISA sq=%lld sk=%lld batch=%lld: hisa %.3f ms (%.0f TFLOP/s useful) dsa %.3f ms x_dsa %.2f |%s\n",
                static_cast<long long>(b.sq), static_cast<long long>(b.sk), static_cast<long long>(b.batch), hisa, tf,
                dsa, dsa / hisa, stages.c_str());
  }
}

#endif  // INDEXLAB_HAVE_CUDA

}  // namespace
}  // namespace indexlab
