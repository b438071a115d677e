// Hopper bf16 DSA kernels against the CPU: the bf16 wgmma probe (SPEC 8 model, fitted), bit-exact
// logits vs the sm90 emulation, canonical top-k, paged decode with bf16 pages, determinism, refusals.
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

#include "cuda/api.h"
#include "reference/emulate_sm90_dsa.h"
#include "reference/numerics.h"
#include "reference/problem.h"
#include "reference/tc_emulation.h"
#include "tests/common/problems.h"
#include "tests/common/sm90_paged_check.h"
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


// ---- bf16 wgmma probe ---------------------------------------------------------------------

struct Candidate {
  std::string name;
  ref::TcChunkModel m;
  int group = 16;  // products per modelled step (8: two chained halves of the instruction)
  int64_t bad = 0;
};

float eval_candidate(const Candidate& c, const float* a, const float* b, float acc) {
  for (int s = 0; s < 16; s += c.group) acc = ref::tc_chunk(a + s, b + s, c.group, acc, c.m);
  return acc;
}

std::vector<Candidate> candidates() {
  std::vector<Candidate> v;
  for (int group : {16, 8}) {
    for (bool opexp : {true, false}) {
      for (bool ftz : {false, true}) {
        for (int align : {23, 24, 25, 26, 27}) {
          Candidate c;
          c.group = group;
          c.m.align_bits = align;
          c.m.result_bits = 24;
          c.m.operand_exponents = opexp;
          c.m.operand_min_exponent = -126;
          c.m.ftz_operands = ftz;
          c.name = "k" + std::to_string(group) + (opexp ? "_eaeb" : "_norm") + (ftz ? "_ftz" : "") +
                   "_align" + std::to_string(align);
          v.push_back(c);
        }
      }
    }
  }
  // A subnormal operand's exponent: its own (ilogb, down to -133) instead of -126.
  Candidate c;
  c.m.operand_min_exponent = -200;
  c.name = "k16_eaeb_subnormal_ilogb_align25";
  v.push_back(c);
  return v;
}

uint16_t bf16_bits(uint64_t sign, int biased_exp, uint64_t man) {
  return static_cast<uint16_t>((sign & 1) << 15 | (std::clamp(biased_exp, 0, 254) << 7) | (man & 0x7F));
}

// 144 trials of single m64n8k16 bf16 instructions (73728 outputs), compared with the model of
// reference/tc_emulation.h; a set of candidate models is scored on the same outputs.
// Trials 128-143 pin the exponent of a subnormal operand: product 0 (a subnormal a[0] times a
// large b[0]) holds the largest exponent, and the 15 others sit near the truncation unit, so
// counting a[0] as -126 or as its own ilogb (-127 .. -133) changes the kept bits.
TEST(Sm90ProbeBf16, WgmmaBf16ChunkMatchesModel) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(seed_for("probe_bf16"));
  std::vector<Candidate> cands = candidates();
  int64_t total = 0, bad = 0, nontrivial = 0, subnormal_outputs = 0;
  const char* dump_path = std::getenv("INDEXLAB_PROBE_DUMP_BF16");
  FILE* dump = dump_path ? std::fopen(dump_path, "wb") : nullptr;
  const int kTrials = 144;
  for (int trial = 0; trial < kTrials; ++trial) {
    const bool sparse = trial >= 64 && trial < 88;     // 1-3 non-zero products per output
    const bool subn = trial >= 88 && trial < 112;      // A holds subnormals, B large
    const bool use_acc = trial < 120 || trial >= 128;  // trials 120-127: scale-d = 0
    const bool subdom = trial >= 128;                  // a subnormal product dominates
    const int spread = 1 + trial % 30;
    std::vector<uint16_t> a(64 * 16), b(8 * 16);
    auto normal_code = [&]() {
      const int e = 127 + static_cast<int>(rng() % spread) - spread / 2;
      return bf16_bits(rng(), e, rng());
    };
    for (auto& x : a) {
      if (subn) {
        const int e = static_cast<int>(rng() % 8);  // 0: subnormal (mantissa forced non-zero)
        x = bf16_bits(rng(), e, e == 0 ? (rng() | 1) : rng());
      } else {
        x = normal_code();
      }
    }
    for (auto& x : b) x = subn ? bf16_bits(rng(), 190 + static_cast<int>(rng() % 12), rng()) : normal_code();
    if (subdom) {
      for (int m = 0; m < 64; ++m) {
        a[m * 16] = bf16_bits(rng(), 0, 1 + rng() % 127);
        for (int t = 1; t < 16; ++t) a[m * 16 + t] = bf16_bits(rng(), 127 - 121 + static_cast<int>(rng() % 7) - 3, rng());
      }
      for (int n = 0; n < 8; ++n) {
        const int eb0 = 100 + static_cast<int>(rng() % 8);
        b[n * 16] = bf16_bits(rng(), 127 + eb0, rng());
        for (int t = 1; t < 16; ++t) b[n * 16 + t] = bf16_bits(rng(), 127 + eb0 - 30, rng());
      }
    }
    if (sparse) {
      for (int m = 0; m < 64; ++m) {
        const int keep = 1 + m % 3;
        for (int t = keep; t < 16; ++t) a[m * 16 + (t * 7 + m) % 16] = 0;
      }
    }
    std::vector<float> av(64 * 16), bv(8 * 16);
    for (size_t i = 0; i < a.size(); ++i) av[i] = ref::bf16_to_float(a[i]);
    for (size_t i = 0; i < b.size(); ++i) bv[i] = ref::bf16_to_float(b[i]);
    std::vector<float> cacc(64 * 8), d(64 * 8);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (int m = 0; m < 64; ++m) {
      for (int n = 0; n < 8; ++n) {
        double big = 0;
        for (int t = 0; t < 16; ++t) big = std::max(big, std::fabs(static_cast<double>(av[m * 16 + t]) * bv[n * 16 + t]));
        if (big == 0) big = 1;
        const int mode = subdom ? ((m + n) % 2 == 0 ? 0 : 4) : (trial + m + n) % 5;
        double v = 0;
        if (mode == 1) v = u(rng) * big * std::ldexp(1.0, static_cast<int>(rng() % 61) - 30);
        if (mode == 2) v = u(rng) * big * std::ldexp(1.0, static_cast<int>(rng() % 7) - 3);
        if (mode == 3) v = u(rng) * big * std::ldexp(1.0, 20 + static_cast<int>(rng() % 8));
        if (mode == 4) v = u(rng) * big * std::ldexp(1.0, -(20 + static_cast<int>(rng() % 8)));
        cacc[m * 8 + n] = static_cast<float>(v);
      }
    }
    Status st = cuda::probe_wgmma_bf16(a.data(), b.data(), cacc.data(), d.data(), use_acc);
    ASSERT_TRUE(st.ok()) << st.message();
    if (dump) {
      std::fwrite(a.data(), 2, a.size(), dump);
      std::fwrite(b.data(), 2, b.size(), dump);
      std::fwrite(cacc.data(), 4, cacc.size(), dump);
      std::fwrite(d.data(), 4, d.size(), dump);
      const int32_t ua = use_acc;
      std::fwrite(&ua, 4, 1, dump);
    }
    for (int m = 0; m < 64; ++m) {
      for (int n = 0; n < 8; ++n) {
        const float* ar = &av[m * 16];
        const float* br = &bv[n * 16];
        const float acc_in = use_acc ? cacc[m * 8 + n] : 0.0f;
        double exact = acc_in;
        for (int t = 0; t < 16; ++t) exact += static_cast<double>(ar[t]) * br[t];
        const float want = ref::wgmma_bf16_chunk(ar, br, 16, acc_in);
        const float got = d[m * 8 + n];
        ++total;
        if (subn || subdom) ++subnormal_outputs;
        if (static_cast<double>(static_cast<float>(exact)) != static_cast<double>(want)) ++nontrivial;
        for (auto& c : cands)
          if (bits(eval_candidate(c, ar, br, acc_in)) != bits(got)) ++c.bad;
        if (bits(got) != bits(want) && bad++ < 8)
          ADD_FAILURE() << "trial " << trial << " (" << m << "," << n << "): gpu " << got << " (0x"
                        << std::hex << bits(got) << ") model " << want << " (0x" << bits(want)
                        << std::dec << ") exact " << exact << " acc " << acc_in;
      }
    }
  }
  if (dump) std::fclose(dump);
  std::printf("[probe bf16] %lld single-instruction outputs (%lld with subnormal operands), %lld differ "
              "from ref::wgmma_bf16_chunk, %lld where the model differs from round-to-nearest of the "
              "exact sum\n",
              static_cast<long long>(total), static_cast<long long>(subnormal_outputs),
              static_cast<long long>(bad), static_cast<long long>(nontrivial));
  for (const auto& c : cands)
    std::printf("[probe bf16] candidate %-28s mismatches %lld\n", c.name.c_str(), static_cast<long long>(c.bad));
  EXPECT_EQ(bad, 0);
  EXPECT_GT(nontrivial, 0) << "the probe data never exercised truncation";
}

// ---- flat bf16 DSA ------------------------------------------------------------------------

using Case = testing::DsaCase;
using Values = testing::ValueClass;

Inputs make_inputs(const Case& c, uint64_t seed) {
  return testing::make_dsa_inputs(c, seed, ref::Precision::kBf16);
}

/// GPU logits == emulation bit for bit, every element written, selection == canonical top-k of
/// the emulated logits (index and score), recall against the exact reference printed.
void check_flat(const Inputs& in, const Options& opt, const std::string& what) {
  Result gpu;
  Options o = opt;
  o.want_logits = true;
  Status st = cuda::dsa_bf16(in, o, &gpu);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int k = in.shape.k;
  std::vector<float> emu;
  st = ref::emulate_sm90_dsa_logits(in, &emu);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(gpu.logits.size(), emu.size());
  int64_t mismatch = 0, unwritten = 0, sel_bad = 0;
  for (size_t t = 0; t < emu.size(); ++t) {
    if (bits(gpu.logits[t]) == 0xFFFFFFFFu) ++unwritten;
    if (bits(gpu.logits[t]) != bits(emu[t]) && mismatch++ < 5)
      ADD_FAILURE() << what << ": logit[" << t / nk << "," << t % nk << "] gpu " << gpu.logits[t]
                    << " (0x" << std::hex << bits(gpu.logits[t]) << ") emu " << emu[t] << " (0x"
                    << bits(emu[t]) << std::dec << ")";
  }
  EXPECT_EQ(unwritten, 0) << what;
  EXPECT_EQ(mismatch, 0) << what << ": logits differ from the emulation";
  const bool absolute = opt.index_base == ref::IndexBase::kAbsolute;
  std::vector<int32_t> ci(static_cast<size_t>(k));
  std::vector<float> cs(static_cast<size_t>(k));
  Result refr;
  st = ref::run(ref::Path::kDsa, in, opt, &refr);
  EXPECT_TRUE(st.ok()) << st.message();
  double recall = 0;
  for (int64_t i = 0; i < nq; ++i) {
    testing::canonical_topk(emu.data() + i * nk, in.ks[i], in.ke[i], k, absolute, ci.data(), cs.data());
    for (int t = 0; t < k; ++t) {
      if (gpu.index[i * k + t] == 0x7F7F7F7F) ++unwritten;
      if (gpu.index[i * k + t] != ci[t] || !same_float(gpu.score[i * k + t], cs[t])) {
        if (sel_bad++ < 3)
          ADD_FAILURE() << what << ": row " << i << " slot " << t << ": gpu " << gpu.index[i * k + t]
                        << " cpu " << ci[t];
        break;
      }
    }
    if (st.ok()) {
      std::vector<int32_t> gs(gpu.index.begin() + i * k, gpu.index.begin() + (i + 1) * k);
      std::sort(gs.begin(), gs.end());
      int64_t n = 0, hit = 0;
      for (int t = 0; t < k; ++t) {
        const int32_t x = refr.index[i * k + t];
        if (x < 0) continue;
        ++n;
        hit += std::binary_search(gs.begin(), gs.end(), x);
      }
      recall += n ? static_cast<double>(hit) / n : 1.0;
    }
  }
  EXPECT_EQ(unwritten, 0) << what;
  EXPECT_EQ(sel_bad, 0) << what;
  recall /= std::max<int64_t>(1, nq);
  std::printf("[%s] nq=%lld nk=%lld h=%d d=%d k=%d: logits bit-exact %s, selection canonical %s, "
              "recall vs ref %.5f\n",
              what.c_str(), static_cast<long long>(nq), static_cast<long long>(nk), in.shape.h,
              in.shape.d, k, mismatch == 0 ? "yes" : "NO", sel_bad == 0 ? "yes" : "NO", recall);
}

TEST(Sm90ApiBf16, PrecisionChecksWithWords) {
  Case c;
  Inputs in = make_inputs(c, 1);
  EXPECT_TRUE(cuda::can_implement(in, Options{}, ref::Precision::kBf16).ok());
  Status s = cuda::can_implement(in, Options{});  // the fp8 form
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bf16"), std::string::npos) << s.message();
  Result r;
  s = cuda::dsa_fp8(in, Options{}, &r);
  EXPECT_FALSE(s.ok());
  Inputs f32 = in;
  f32.precision = ref::Precision::kFp32;
  Status s32 = cuda::dsa_bf16(f32, Options{}, &r);
  EXPECT_FALSE(s32.ok());
  if (cuda::built_with_cuda()) {  // without CUDA the entry points only say so
    EXPECT_NE(s.message().find("precision = bf16"), std::string::npos) << s.message();
    EXPECT_NE(s32.message().find("precision = fp32"), std::string::npos) << s32.message();
  }
  s = cuda::can_implement(in, Options{}, ref::Precision::kFp32);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no sm90"), std::string::npos) << s.message();
  Inputs bad = in;
  bad.ke[2] = static_cast<int32_t>(bad.shape.nk + 1);
  s = cuda::dsa_bf16(bad, Options{}, &r);
  EXPECT_FALSE(s.ok());
  if (cuda::built_with_cuda()) {
    EXPECT_NE(s.message().find("ke[2]"), std::string::npos) << s.message();
  }
  bad = in;
  bad.shape.h = 48;
  s = cuda::can_implement(bad, Options{}, ref::Precision::kBf16);
  EXPECT_FALSE(s.ok());
}

TEST(Sm90DsaBf16, Bf16_H64_D128_Lk4097) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.nq = 12;
  c.nk = 4097;
  c.k = 2048;
  check_flat(make_inputs(c, seed_for("Lk4097")), Options{}, "Bf16_H64_D128_Lk4097");
}

void check_heads_and_dims(const std::string& tag, const char* seed, int64_t nq, int64_t nk) {
  testing::for_heads_and_dims(tag, seed_for(seed), nq, nk, ref::Precision::kBf16,
                              [](const Inputs& in, const std::string& what) { check_flat(in, Options{}, what); });
}

void check_tiles(const std::string& tag, const char* seed, const std::vector<int64_t>& nks,
                 const std::vector<int64_t>& nqs) {
  testing::for_tile_boundaries(tag, seed_for(seed), nks, nqs, ref::Precision::kBf16,
                               [](const Inputs& in, const std::string& what) { check_flat(in, Options{}, what); });
}

TEST(Sm90DsaBf16, Bf16_AllHeadsAndDims) {
  SKIP_WITHOUT_GPU();
  check_heads_and_dims("Bf16", "heads", 37, 257);
}

TEST(Sm90DsaBf16, Bf16_TileBoundaries) {
  SKIP_WITHOUT_GPU();
  check_tiles("Bf16_H64_D128", "tiles", {1, 63, 64, 65, 127, 128, 129}, {1, 7, 8, 9, 17});
}

TEST(Sm90DsaBf16, Bf16_NkBelowAndEqualK) {
  SKIP_WITHOUT_GPU();
  for (int64_t nk : {100, 128, 129}) {
    Case c;
    c.nq = 5;
    c.nk = nk;
    c.k = 128;
    c.ks.assign(5, 0);
    c.ke.assign(5, static_cast<int32_t>(nk));
    check_flat(make_inputs(c, seed_for("nk_vs_k") + nk), Options{}, "Bf16_K128_Lk" + std::to_string(nk));
  }
}

TEST(Sm90DsaBf16, Bf16_EmptyRangesAndPackedBatches) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.nk = 271;
  c.k = 64;
  c.scales = true;
  const int32_t starts[3] = {0, 70, 71}, lens[3] = {70, 1, 200};
  for (int s = 0; s < 3; ++s)
    for (int32_t t = 0; t < lens[s]; t += (s == 2 ? 3 : 1)) {
      c.ks.push_back(starts[s]);
      c.ke.push_back(starts[s] + t + 1);
    }
  for (int32_t e : {0, 70, 271, 150}) {
    c.ks.push_back(e);
    c.ke.push_back(e);
  }
  c.nq = static_cast<int64_t>(c.ks.size());
  Inputs in = make_inputs(c, seed_for("packed"));
  check_flat(in, Options{}, "Bf16_Packed_Relative");
  Options abs;
  abs.index_base = ref::IndexBase::kAbsolute;
  check_flat(in, abs, "Bf16_Packed_Absolute");
}

// Narrow values, heavy ties (h = 16), and wide exponents with subnormals and scales (h = 32).
void check_adversarial(const std::string& tag, const std::string& seed) {
  Case c;
  c.nq = 24;
  c.nk = 700;
  c.k = 96;
  c.values = Values::kNarrow;
  check_flat(make_inputs(c, seed_for((seed + "narrow").c_str())), Options{}, tag + "_Narrow_1_1.25");
  c.values = Values::kTiedKeys;
  c.h = 16;
  check_flat(make_inputs(c, seed_for((seed + "ties").c_str())), Options{}, tag + "_HeavyTies");
  c.values = Values::kWide;
  c.h = 32;
  c.scales = true;
  check_flat(make_inputs(c, seed_for((seed + "wide").c_str())), Options{}, tag + "_WideExponentsSubnormals");
}

TEST(Sm90DsaBf16, Bf16_AdversarialValues) {
  SKIP_WITHOUT_GPU();
  check_adversarial("Bf16", "");
}

// The other prefill logits schedule on bf16 (INDEXLAB_LOGITS=v1: logits_kernel, 2 stages at
// d = 128; the default ws kernel has 4, its producer keeping 3 blocks in flight): bit-exact
// against the emulation, and the two schedules give the same bits (the ws one in 20 reruns).
TEST(Sm90DsaBf16, Bf16_V1LogitsKernel) {
  SKIP_WITHOUT_GPU();
  testing::ScopedEnv v1("INDEXLAB_LOGITS", "v1");
  check_heads_and_dims("V1Bf16", "ws_heads", 71, 383);
  check_tiles("V1Bf16", "ws_tiles", {1, 64, 65, 575}, {1, 8, 9});
  check_adversarial("V1Bf16", "ws_");
  Case big;
  big.nq = 40;
  big.nk = 3000;
  big.k = 512;
  const Inputs in = make_inputs(big, seed_for("ws_rerun"));
  Options o;
  o.want_logits = true;
  testing::expect_logits_kernels_agree([&](Result* r) { return cuda::dsa_bf16(in, o, r); }, "Bf16_Reruns");
}

TEST(Sm90DsaBf16, Bf16_TwentyRerunsBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.nq = 40;
  c.nk = 3000;
  c.k = 512;
  const Inputs in = make_inputs(c, seed_for("rerun"));
  Options o;
  o.want_logits = true;
  testing::expect_reruns_bitwise_identical([&](Result* r) { return cuda::dsa_bf16(in, o, r); }, 20,
                                           "Bf16_TwentyReruns");
  if (!::testing::Test::HasFailure())
    std::printf("[Bf16_TwentyReruns] 20 reruns bitwise identical (logits, index, score)\n");
}

// ---- paged bf16 decode --------------------------------------------------------------------

PagedInputs make_paged(int64_t batch, int next_n, int h, int d, int k, const std::vector<int32_t>& ctx,
                       uint64_t seed) {
  testing::PagedStyle style;
  style.precision = ref::Precision::kBf16;
  return testing::make_paged(batch, next_n, h, d, k, ctx, seed, style);
}

void check_paged(const PagedInputs& in, const Options& opt, const std::string& what) {
  testing::check_paged_dsa(in, opt, cuda::dsa_paged_bf16, what);
}

TEST(Sm90PagedBf16, Bf16_NextN1to4_OutOfOrderPages) {
  SKIP_WITHOUT_GPU();
  for (int nn : {1, 2, 3, 4}) {
    for (int h : {64, 128}) {
      const std::vector<int32_t> ctx = {1, 64, 130, 700, 3};
      PagedInputs in = make_paged(5, nn, h, 128, 96, ctx, seed_for("paged") + nn * 7 + h);
      check_paged(in, Options{}, "PagedBf16_H" + std::to_string(h) + "_NextN" + std::to_string(nn));
      Options abs;
      abs.index_base = ref::IndexBase::kAbsolute;
      check_paged(in, abs, "PagedBf16_H" + std::to_string(h) + "_NextN" + std::to_string(nn) + "_Abs");
    }
  }
  const std::vector<int32_t> ctx = {2048, 129};
  check_paged(make_paged(2, 1, 32, 64, 2048, ctx, seed_for("paged2k")), Options{}, "PagedBf16_H32_D64_K2048");
  const std::vector<int32_t> ctx8 = {300, 65};
  check_paged(make_paged(2, 2, 8, 64, 64, ctx8, seed_for("paged8")), Options{}, "PagedBf16_H8_D64_NextN2");
}

TEST(Sm90PagedBf16, Bf16_RerunsBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  const std::vector<int32_t> ctx = {1000, 4000, 17};
  PagedInputs in = make_paged(3, 2, 64, 128, 512, ctx, seed_for("pagedrerun"));
  Options o;
  o.want_logits = true;
  Result first;
  ASSERT_TRUE(cuda::dsa_paged_bf16(in, o, &first).ok());
  for (int r = 0; r < 20; ++r) {
    Result again;
    ASSERT_TRUE(cuda::dsa_paged_bf16(in, o, &again).ok());
    ASSERT_EQ(0, std::memcmp(first.index.data(), again.index.data(), first.index.size() * 4)) << r;
    ASSERT_EQ(0, std::memcmp(first.score.data(), again.score.data(), first.score.size() * 4)) << r;
    ASSERT_EQ(0, std::memcmp(first.logits.data(), again.logits.data(), first.logits.size() * 4)) << r;
  }
}

}  // namespace
}  // namespace indexlab
