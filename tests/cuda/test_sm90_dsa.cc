// Hopper DSA kernels against the CPU: wgmma probe, bit-exact logits vs the sm90 emulation,
// canonical top-k, the reference selection, paged decode, determinism and refusals.
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
#include "tests/common/device_buffer.h"
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


using Case = testing::DsaCase;
using Values = testing::ValueClass;

Inputs make_inputs(const Case& c, uint64_t seed) {
  return testing::make_dsa_inputs(c, seed, ref::Precision::kFp8);
}

struct Check {
  int64_t logit_mismatch = 0, unwritten = 0, sel_mismatch_rows = 0, exact_rows = 0,
          exact_rows_wrong = 0;
  double recall_sum = 0;
  int64_t rows = 0;
};

/// Full differential check of a flat problem.
Check check_flat(const Inputs& in, const Options& opt, const std::string& what) {
  Check ck;
  Result gpu;
  Options o = opt;
  o.want_logits = true;
  Status st = cuda::dsa_fp8(in, o, &gpu);
  EXPECT_TRUE(st.ok()) << what << ": " << st.message();
  if (!st.ok()) return ck;
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int k = in.shape.k;
  std::vector<float> emu;
  st = ref::emulate_sm90_dsa_logits(in, &emu);
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(gpu.logits.size(), emu.size());
  int shown = 0;
  for (size_t t = 0; t < emu.size() && t < gpu.logits.size(); ++t) {
    if (bits(gpu.logits[t]) == 0xFFFFFFFFu) ++ck.unwritten;
    if (bits(gpu.logits[t]) != bits(emu[t])) {
      ++ck.logit_mismatch;
      if (shown++ < 5)
        ADD_FAILURE() << what << ": logit[" << t / nk << "," << t % nk << "] gpu " << gpu.logits[t]
                      << " (0x" << std::hex << bits(gpu.logits[t]) << ") emu " << emu[t] << " (0x"
                      << bits(emu[t]) << std::dec << ")";
    }
  }
  EXPECT_EQ(ck.unwritten, 0) << what;
  EXPECT_EQ(ck.logit_mismatch, 0) << what << ": logits differ from the emulation";
  // Selection == canonical top-k of the emulated logits.
  const bool absolute = opt.index_base == ref::IndexBase::kAbsolute;
  std::vector<int32_t> ci(static_cast<size_t>(k));
  std::vector<float> cs(static_cast<size_t>(k));
  Result refr;
  Options ro = opt;
  ro.want_logits = true;
  st = ref::run(ref::Path::kDsa, in, ro, &refr);
  EXPECT_TRUE(st.ok()) << st.message();
  for (int64_t i = 0; i < nq; ++i) {
    testing::canonical_topk(emu.data() + i * nk, in.ks[i], in.ke[i], k, absolute, ci.data(), cs.data());
    bool same = true;
    for (int t = 0; t < k; ++t) {
      const int32_t gi = gpu.index[i * k + t];
      if (gi == 0x7F7F7F7F) ++ck.unwritten;
      if (gi != ci[t] || !same_float(gpu.score[i * k + t], cs[t])) same = false;
    }
    if (!same) {
      if (ck.sel_mismatch_rows++ < 3) {
        std::string msg;
        for (int t = 0; t < k; ++t)
          if (gpu.index[i * k + t] != ci[t]) {
            msg = "slot " + std::to_string(t) + ": gpu " + std::to_string(gpu.index[i * k + t]) +
                  " cpu " + std::to_string(ci[t]);
            break;
          }
        ADD_FAILURE() << what << ": row " << i << " selection differs from canonical top-k of the "
                      << "emulated logits; " << msg;
      }
    }
    // Against the reference (correctly rounded scores).
    if (st.ok() && refr.logits_cols == nk) {
      const int32_t* ri = refr.index.data() + i * k;
      const int32_t* gi = gpu.index.data() + i * k;
      int64_t nref = 0, hit = 0;
      std::vector<int32_t> gs(gi, gi + k);
      std::sort(gs.begin(), gs.end());
      for (int t = 0; t < k; ++t) {
        if (ri[t] < 0) continue;
        ++nref;
        hit += std::binary_search(gs.begin(), gs.end(), ri[t]);
      }
      ck.recall_sum += nref ? static_cast<double>(hit) / nref : 1.0;
      ++ck.rows;
      bool row_equal = !refr.ambiguous.empty() ? !refr.ambiguous[i] : true;
      for (int64_t j = 0; row_equal && j < nk; ++j)
        if (!same_float(refr.logits[i * nk + j], emu[i * nk + j])) row_equal = false;
      if (row_equal) {
        ++ck.exact_rows;
        if (!std::equal(ri, ri + k, gi)) ++ck.exact_rows_wrong;
      }
    }
  }
  EXPECT_EQ(ck.unwritten, 0) << what;
  EXPECT_EQ(ck.sel_mismatch_rows, 0) << what;
  EXPECT_EQ(ck.exact_rows_wrong, 0) << what << ": rows whose emulated logits equal the reference's";
  std::printf("[%s] nq=%lld nk=%lld h=%d d=%d k=%d: logits bit-exact %s, recall vs ref %.5f, "
              "rows with ref-identical logits %lld\n",
              what.c_str(), static_cast<long long>(nq), static_cast<long long>(nk), in.shape.h,
              in.shape.d, k, ck.logit_mismatch == 0 ? "yes" : "NO",
              ck.rows ? ck.recall_sum / ck.rows : 1.0, static_cast<long long>(ck.exact_rows));
  return ck;
}

// ---- refusals and no-GPU behaviour (run everywhere) -----------------------------------------

TEST(Sm90Api, RefusesUnsupportedWithWords) {
  Status s = cuda::can_implement(48, 128, 2048);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("h = 48"), std::string::npos) << s.message();
  s = cuda::can_implement(64, 96, 2048);
  EXPECT_NE(s.message().find("d = 96"), std::string::npos) << s.message();
  s = cuda::can_implement(64, 128, 0);
  EXPECT_NE(s.message().find("k = 0"), std::string::npos) << s.message();
  EXPECT_TRUE(cuda::can_implement(64, 128, 2048).ok());
  EXPECT_TRUE(cuda::can_implement(8, 64, 1).ok());
  Case c;
  Inputs in = make_inputs(c, 1);
  in.precision = ref::Precision::kFp32;
  EXPECT_FALSE(cuda::can_implement(in, Options{}).ok());
}

TEST(Sm90Api, BadInputIsAnErrorNotACrash) {
  Case c;
  Inputs in = make_inputs(c, 2);
  in.ke[3] = static_cast<int32_t>(in.shape.nk + 5);
  Result r;
  Status s = cuda::dsa_fp8(in, Options{}, &r);
  EXPECT_FALSE(s.ok());
  if (cuda::built_with_cuda()) {
    EXPECT_NE(s.message().find("ke[3]"), std::string::npos) << s.message();
  }
}

// The prefill logits kernels index columns with 32-bit integers: a key count past 2^31 - 129 is
// refused by name before any device work (no GPU needed).
TEST(Sm90Api, LogitsRefusesKeyCountsPast32Bits) {
  if (!cuda::built_with_cuda()) GTEST_SKIP() << "built without CUDA: the launcher is a stub";
  cuda::LogitsParams lp;
  lp.nq = 4;
  lp.nk = int64_t{INT32_MAX} - 64;
  lp.ld = lp.nk;
  lp.h = 64;
  lp.d = 128;
  Status s = cuda::launch_mqa_logits_fp8(lp);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("nk = 2147483583"), std::string::npos) << s.message();
  lp.nk = lp.ld = int64_t{INT32_MAX} - 128;  // the largest accepted: next, the null pointers
  s = cuda::launch_mqa_logits_fp8(lp);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("null"), std::string::npos) << s.message();
}

TEST(Sm90Api, DeviceQueryGivesAReason) {
  std::string why;
  if (!cuda::device_available(&why)) {
    EXPECT_FALSE(why.empty());
  } else {
    std::printf("device: %s\n", cuda::device_name().c_str());
  }
}

// ---- wgmma probe (SPEC 8) -----------------------------------------------------------------

// Runs 128 trials of single m64n8k32 instructions and compares every output with `model`.
void run_probe(float (*model)(const float*, const float*, int, float), const char* name, bool expect_exact) {
  std::mt19937_64 rng(seed_for("probe"));
  int64_t total = 0, bad = 0, nontrivial = 0;
  // Raw data for offline model fitting: per trial a[64*32], b[8*32], c[64*8], d[64*8], use_acc.
  const char* dump_path = std::getenv("INDEXLAB_PROBE_DUMP");
  FILE* dump = dump_path ? std::fopen(dump_path, "wb") : nullptr;
  const int kTrials = 128;
  for (int trial = 0; trial < kTrials; ++trial) {
    // Exponent spread grows with the trial so alignment drops bits; codes are finite, non-integer.
    const int spread = 1 + trial % 14;
    const bool sparse = trial >= 64 && trial < 96;   // 1-3 non-zero products per output
    const bool use_acc = trial < 112;                // the last trials: scale-d = 0
    std::vector<uint8_t> a(64 * 32), b(8 * 32);
    auto code = [&]() {
      for (;;) {
        const int e = 7 + static_cast<int>(rng() % spread) - spread / 2;  // biased exponent
        const uint8_t c = static_cast<uint8_t>(((rng() & 1) << 7) | (std::clamp(e, 0, 15) << 3) | (rng() & 7));
        if ((c & 0x7F) != 0x7F) return c;
      }
    };
    for (auto& x : a) x = code();
    for (auto& x : b) x = code();
    if (sparse) {
      for (int m = 0; m < 64; ++m) {
        const int keep = 1 + m % 3;
        for (int t = keep; t < 32; ++t) a[m * 32 + (t * 7 + m) % 32] = 0;
      }
    }
    std::vector<float> cacc(64 * 8), d(64 * 8);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (int t = 0; t < 64 * 8; ++t) {
      const int mode = (trial + t) % 4;
      double v = u(rng) * std::ldexp(1.0, static_cast<int>(rng() % 24) - 8) + 1e-3;
      cacc[t] = mode == 0 ? 0.0f : static_cast<float>(mode == 3 ? v * 3000.0 : v);
    }
    Status st = cuda::probe_wgmma_fp8(a.data(), b.data(), cacc.data(), d.data(), use_acc);
    ASSERT_TRUE(st.ok()) << st.message();
    if (dump) {
      std::fwrite(a.data(), 1, a.size(), dump);
      std::fwrite(b.data(), 1, b.size(), dump);
      std::fwrite(cacc.data(), 4, cacc.size(), dump);
      std::fwrite(d.data(), 4, d.size(), dump);
      const int32_t ua = use_acc;
      std::fwrite(&ua, 4, 1, dump);
    }
    for (int m = 0; m < 64; ++m) {
      for (int n = 0; n < 8; ++n) {
        float av[32], bv[32];
        const float acc_in = use_acc ? cacc[m * 8 + n] : 0.0f;
        double exact = acc_in;
        for (int t = 0; t < 32; ++t) {
          av[t] = ref::e4m3_to_float(a[m * 32 + t]);
          bv[t] = ref::e4m3_to_float(b[n * 32 + t]);
          exact += static_cast<double>(av[t]) * bv[t];
        }
        const float want = model(av, bv, 32, acc_in);
        const float got = d[m * 8 + n];
        ++total;
        if (static_cast<double>(static_cast<float>(exact)) != static_cast<double>(want)) ++nontrivial;
        if (bits(got) != bits(want)) {
          if (bad++ < 8)
            ADD_FAILURE() << "trial " << trial << " (" << m << "," << n << "): gpu " << got << " (0x"
                          << std::hex << bits(got) << ") model " << want << " (0x" << bits(want)
                          << std::dec << ") exact " << exact << " acc " << acc_in;
        }
      }
    }
  }
  if (dump) std::fclose(dump);
  std::printf("[probe %s] %lld single-instruction outputs, %lld differ from the model, %lld where the "
              "model differs from round-to-nearest of the exact sum\n", name,
              static_cast<long long>(total), static_cast<long long>(bad),
              static_cast<long long>(nontrivial));
  if (expect_exact) {
    EXPECT_EQ(bad, 0) << name;
  }
  EXPECT_GT(nontrivial, 0) << "the probe data never exercised truncation";
}

// The tensor-core model of reference/tc_emulation.h (SPEC 8 with the measured operand-exponent
// alignment) must match the hardware on every output.
TEST(Sm90Probe, WgmmaFp8ChunkMatchesModel) {
  SKIP_WITHOUT_GPU();
  run_probe(ref::wgmma_fp8_chunk, "tc_emulation", true);
}

// ---- flat fp8 DSA ---------------------------------------------------------------------------

TEST(Sm90Dsa, Fp8_H64_D128_Lk4097) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.nq = 12;
  c.nk = 4097;
  c.k = 2048;
  Inputs in = make_inputs(c, seed_for("Lk4097"));
  check_flat(in, Options{}, "Fp8_H64_D128_Lk4097");
}

void check_heads_and_dims(const std::string& tag, const char* seed, int64_t nq, int64_t nk) {
  testing::for_heads_and_dims(tag, seed_for(seed), nq, nk, ref::Precision::kFp8,
                              [](const Inputs& in, const std::string& what) { check_flat(in, Options{}, what); });
}

void check_tiles(const std::string& tag, const char* seed, const std::vector<int64_t>& nks,
                 const std::vector<int64_t>& nqs) {
  testing::for_tile_boundaries(tag, seed_for(seed), nks, nqs, ref::Precision::kFp8,
                               [](const Inputs& in, const std::string& what) { check_flat(in, Options{}, what); });
}

// Keys and queries in [1, 1.25] with positive weights, then four distinct keys repeated (h = 16).
void check_narrow_and_ties(const std::string& tag, const std::string& seed) {
  Case c;
  c.nq = 24;
  c.nk = 700;
  c.k = 96;
  c.values = Values::kNarrow;
  check_flat(make_inputs(c, seed_for((seed + "narrow").c_str())), Options{}, tag + "_Narrow_1_1.25");
  c.values = Values::kTiedKeys;
  c.h = 16;
  check_flat(make_inputs(c, seed_for((seed + "ties").c_str())), Options{}, tag + "_HeavyTies");
}

TEST(Sm90Dsa, Fp8_AllHeadsAndDims) {
  SKIP_WITHOUT_GPU();
  check_heads_and_dims("Fp8", "heads", 37, 257);
}

TEST(Sm90Dsa, Fp8_TileBoundaries) {
  SKIP_WITHOUT_GPU();
  check_tiles("Fp8_H64_D128", "tiles", {1, 63, 64, 65, 127, 128, 129}, {1, 7, 8, 9, 17});
}

TEST(Sm90Dsa, Fp8_NkBelowAndEqualK) {
  SKIP_WITHOUT_GPU();
  for (int64_t nk : {100, 128, 129}) {
    Case c;
    c.nq = 5;
    c.nk = nk;
    c.k = 128;
    c.ks.assign(5, 0);
    c.ke.assign(5, static_cast<int32_t>(nk));
    Inputs in = make_inputs(c, seed_for("nk_vs_k") + nk);
    check_flat(in, Options{}, "Fp8_H64_D128_K128_Lk" + std::to_string(nk));
  }
}

// Three sequences packed in one key buffer (lengths 70, 1, 200), causal inside each, plus rows
// with empty ranges at the start, middle and end.
Case packed_case() {
  Case c;
  c.nk = 271;
  c.k = 64;
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
  return c;
}

TEST(Sm90Dsa, Fp8_EmptyRangesAndPackedBatches) {
  SKIP_WITHOUT_GPU();
  Inputs in = make_inputs(packed_case(), seed_for("packed"));
  check_flat(in, Options{}, "Fp8_Packed_Relative");
  Options abs;
  abs.index_base = ref::IndexBase::kAbsolute;
  check_flat(in, abs, "Fp8_Packed_Absolute");
}

TEST(Sm90Dsa, Fp8_NarrowRangeAndHeavyTies) {
  SKIP_WITHOUT_GPU();
  check_narrow_and_ties("Fp8", "");
}

// The other prefill logits schedule (INDEXLAB_LOGITS=v1: logits_kernel; the other tests run the
// default warp-specialized kernel): bit-exact against the emulation on every head count and
// dimension, at tile boundaries (its CTAs hold 512 / h rows, the ws kernel's too), on packed
// batches with empty ranges, narrow values and heavy ties, K = 2048; and the two schedules give
// the same bits (the ws one in 20 reruns).
TEST(Sm90Dsa, Fp8_V1LogitsKernel) {
  SKIP_WITHOUT_GPU();
  testing::ScopedEnv v1("INDEXLAB_LOGITS", "v1");
  check_heads_and_dims("V1", "ws_heads", 71, 383);
  check_tiles("V1", "ws_tiles", {1, 63, 64, 65, 129, 575}, {1, 4, 5, 8, 9, 17});
  const Inputs packed = make_inputs(packed_case(), seed_for("ws_packed"));
  check_flat(packed, Options{}, "V1_Packed_Relative");
  Options abs;
  abs.index_base = ref::IndexBase::kAbsolute;
  check_flat(packed, abs, "V1_Packed_Absolute");
  check_narrow_and_ties("V1", "ws_");
  Case big;
  big.nq = 40;
  big.nk = 4097;
  big.k = 2048;
  const Inputs in = make_inputs(big, seed_for("ws_big"));
  check_flat(in, Options{}, "V1_H64_D128_Lk4097");
  Options o;
  o.want_logits = true;
  testing::expect_logits_kernels_agree([&](Result* r) { return cuda::dsa_fp8(in, o, r); }, "H64_D128_Lk4097");
}

// The fp8 TMA prefill at h >= 32 runs logits_wse_kernel (an epilogue warpgroup finishes the
// math warpgroups' partial sums; the other tests run it by default). Its predecessor,
// logits_ws_kernel (INDEXLAB_LOGITS=wsnoepi), must give the same bits: every head count it takes
// (32, 64, 128) at d = 64 and 128, causal-tail ranges and row counts off its 512 / h row tiles, 20
// reruns each; and the old kernel stays bit-exact against the emulation.
TEST(Sm90Dsa, Fp8_WsEpilogueWarpgroup) {
  SKIP_WITHOUT_GPU();
  for (int h : {32, 64, 128}) {
    for (int d : {64, 128}) {
      Case c;
      c.nq = 37;
      c.nk = 1999;
      c.h = h;
      c.d = d;
      c.k = 512;
      const std::string tag = "Wse_H" + std::to_string(h) + "_D" + std::to_string(d);
      const Inputs in = make_inputs(c, seed_for(tag.c_str()));
      Options o;
      o.want_logits = true;
      testing::expect_logits_kernels_agree([&](Result* r) { return cuda::dsa_fp8(in, o, r); }, tag, "ws", "wsnoepi");
    }
  }
  testing::ScopedEnv old("INDEXLAB_LOGITS", "wsnoepi");
  check_heads_and_dims("WsNoEpi", "wsnoepi_heads", 29, 411);
  check_tiles("WsNoEpi", "wsnoepi_tiles", {1, 63, 64, 65, 129}, {1, 8, 9});
}

// The ws kernel's cp.async producer (INDEXLAB_LOGITS=ws1; the default fp8 one issues TMA copies
// into swizzled stages): bit-exact against the emulation on every head count and dimension, at
// tile boundaries, on packed batches; and the two producers give the same logits and selection.
TEST(Sm90Dsa, Fp8_WsCpAsyncProducer) {
  SKIP_WITHOUT_GPU();
  {
    testing::ScopedEnv ws1("INDEXLAB_LOGITS", "ws1");
    check_heads_and_dims("Ws1", "ws1_heads", 37, 257);
    check_tiles("Ws1", "ws1_tiles", {1, 63, 64, 65, 129}, {1, 8, 9});
    check_flat(make_inputs(packed_case(), seed_for("ws1_packed")), Options{}, "Ws1_Packed");
  }
  Case c;
  c.nq = 33;
  c.nk = 5000;
  c.k = 2048;
  const Inputs in = make_inputs(c, seed_for("ws1_agree"));
  Options o;
  o.want_logits = true;
  Result tma, cpa;
  ASSERT_TRUE(cuda::dsa_fp8(in, o, &tma).ok());
  {
    testing::ScopedEnv ws1("INDEXLAB_LOGITS", "ws1");
    ASSERT_TRUE(cuda::dsa_fp8(in, o, &cpa).ok());
  }
  ASSERT_EQ(tma.logits.size(), cpa.logits.size());
  EXPECT_EQ(0, std::memcmp(tma.logits.data(), cpa.logits.data(), tma.logits.size() * 4))
      << "the TMA and cp.async producers give different logits";
  EXPECT_EQ(tma.index, cpa.index);
}

#if INDEXLAB_HAVE_CUDA
// A flat problem's device buffers (e4m3 codes) and the LogitsParams that launch the fp8 prefill
// logits on them into `out`.
struct DeviceFlat {
  explicit DeviceFlat(const Inputs& in)
      : q(testing::e4m3_codes(in.q)),
        k(testing::e4m3_codes(in.k)),
        scale(in.k_scale),
        w(in.w),
        ks(in.ks),
        ke(in.ke),
        shape(in.shape) {}
  cuda::LogitsParams params(float* out) const {
    cuda::LogitsParams lp;
    lp.q = q.p;
    lp.k = k.p;
    lp.k_scale = scale.p;
    lp.w = w.p;
    lp.ks = ks.p;
    lp.ke = ke.p;
    lp.logits = out;
    lp.nq = shape.nq;
    lp.nk = shape.nk;
    lp.ld = shape.nk;
    lp.h = shape.h;
    lp.d = shape.d;
    return lp;
  }
  testing::Dev<uint8_t> q, k;
  testing::Dev<float> scale, w;
  testing::Dev<int32_t> ks, ke;
  ref::Shape shape;
};

// Device pointers as a caller may pass them: key scales that start 4 bytes past a 16-byte
// boundary take the cp.async producer (a tensor map's base must be 16-byte aligned) and give the
// bits of an aligned copy; keys or queries off a 16-byte boundary are refused by name.
TEST(Sm90Dsa, Fp8_LogitsPointerAlignment) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.nq = 17;
  c.nk = 1500;
  const Inputs in = make_inputs(c, seed_for("align"));
  const int64_t nq = c.nq, nk = c.nk;
  const std::vector<uint8_t> kc = testing::e4m3_codes(in.k);
  std::vector<float> sc_shifted(static_cast<size_t>(nk) + 1, 1.0f);
  std::copy(in.k_scale.begin(), in.k_scale.end(), sc_shifted.begin() + 1);
  std::vector<uint8_t> k_shifted(kc.size() + 16, 0);
  std::copy(kc.begin(), kc.end(), k_shifted.begin() + 8);
  const DeviceFlat dev(in);
  testing::Dev<uint8_t> dk8(k_shifted);
  testing::Dev<float> dsc1(sc_shifted), out_a(nq * nk), out_b(nq * nk);
  cuda::LogitsParams lp = dev.params(out_a.p);
  Status s = cuda::launch_mqa_logits_fp8(lp);
  ASSERT_TRUE(s.ok()) << s.message();
  lp.k_scale = dsc1.p + 1;
  lp.logits = out_b.p;
  s = cuda::launch_mqa_logits_fp8(lp);
  ASSERT_TRUE(s.ok()) << s.message();
  const std::vector<float> a = out_a.down(), b = out_b.down();
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << "misaligned k_scale changed the logits";
  // Both equal the logits of dsa_fp8 (checked against the emulation elsewhere), so a launch that
  // wrote nothing (both buffers still poisoned alike) fails here.
  Options o;
  o.want_logits = true;
  Result host;
  ASSERT_TRUE(cuda::dsa_fp8(in, o, &host).ok());
  ASSERT_EQ(host.logits.size(), a.size());
  EXPECT_EQ(0, std::memcmp(host.logits.data(), a.data(), a.size() * 4)) << "device-pointer launch differs from dsa_fp8";
  lp.k = dk8.p + 8;
  s = cuda::launch_mqa_logits_fp8(lp);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("k must be 16-byte aligned"), std::string::npos) << s.message();
  lp.k = dev.k.p;
  lp.q = dev.q.p + 8;
  s = cuda::launch_mqa_logits_fp8(lp);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("q must be 16-byte aligned"), std::string::npos) << s.message();
}

// clean_logits = false (the DSA pipeline with its top-k, where the logits are read only inside
// [ks, ke)): the kernels skip the -inf fill of the columns outside their tiles' key blocks. On
// ragged ranges (short causal rows, some starting mid-row), for each fp8 prefill kernel: the
// columns inside every range are the clean launch's bits, every column outside is -inf or still
// the poison (and some are: the fill was skipped), the top-k over both buffers is the same; and
// dsa_fp8 / dsa_bf16 without want_logits (which skip the fill) select what they select with it.
TEST(Sm90Dsa, Fp8_UncleanLogitsForTopk) {
  SKIP_WITHOUT_GPU();
  const int64_t nq = 300, nk = 3001;
  for (const char* kernel : {"ws", "wsnoepi", "ws1", "v1"}) {
    for (int h : {16, 64}) {
      Case c;
      c.nq = nq;
      c.nk = nk;
      c.h = h;
      c.k = 96;
      for (int64_t r = 0; r < nq; ++r) {
        const int32_t e = static_cast<int32_t>(std::min<int64_t>(nk, 1 + 10 * r + r % 7));
        c.ke.push_back(e);
        c.ks.push_back(r % 3 == 0 ? e / 2 : 0);
      }
      const std::string tag = std::string("Unclean_") + kernel + "_H" + std::to_string(h);
      const Inputs in = make_inputs(c, seed_for(tag.c_str()));
      testing::ScopedEnv env("INDEXLAB_LOGITS", kernel);
      const DeviceFlat dev(in);
      testing::Dev<float> clean, unclean;
      clean.alloc(static_cast<size_t>(nq * nk), 0xFF);    // NaN
      unclean.alloc(static_cast<size_t>(nq * nk), 0x7F);  // 0x7F7F7F7F, a finite poison
      cuda::LogitsParams lp = dev.params(clean.p);
      ASSERT_TRUE(cuda::launch_mqa_logits_fp8(lp).ok()) << tag;
      lp.logits = unclean.p;
      lp.clean_logits = false;
      ASSERT_TRUE(cuda::launch_mqa_logits_fp8(lp).ok()) << tag;
      const std::vector<float> a = clean.down(), b = unclean.down();
      int64_t inside_diff = 0, outside_bad = 0, clean_bad = 0, poison_left = 0;
      for (int64_t r = 0; r < nq; ++r) {
        for (int64_t j = 0; j < nk; ++j) {
          const size_t t = static_cast<size_t>(r * nk + j);
          if (j >= in.ks[r] && j < in.ke[r]) {
            inside_diff += bits(a[t]) != bits(b[t]);
          } else {
            clean_bad += bits(a[t]) != 0xFF800000u;
            poison_left += bits(b[t]) == 0x7F7F7F7Fu;
            outside_bad += bits(b[t]) != 0xFF800000u && bits(b[t]) != 0x7F7F7F7Fu;
          }
        }
      }
      EXPECT_EQ(inside_diff, 0) << tag << ": logits inside [ks, ke) differ from the clean launch";
      EXPECT_EQ(clean_bad, 0) << tag << ": the clean launch left a column outside [ks, ke) not -inf";
      EXPECT_EQ(outside_bad, 0) << tag << ": a column outside [ks, ke) is neither -inf nor the poison";
      EXPECT_GT(poison_left, 0) << tag << ": clean_logits = false still filled every column";
      // The top-k over both buffers (the unclean one still holds the finite poison outside).
      std::vector<std::vector<int32_t>> idx;
      std::vector<std::vector<float>> sc;
      for (float* buf : {clean.p, unclean.p}) {
        testing::Dev<int32_t> di(static_cast<size_t>(nq * c.k));
        testing::Dev<float> ds(static_cast<size_t>(nq * c.k));
        cuda::TopkParams tp;
        tp.logits = buf;
        tp.ks = dev.ks.p;
        tp.ke = dev.ke.p;
        tp.index = di.p;
        tp.score = ds.p;
        tp.rows = nq;
        tp.cols = nk;
        tp.ld = nk;
        tp.k = c.k;
        ASSERT_TRUE(cuda::launch_topk(tp).ok()) << tag;
        idx.push_back(di.down());
        sc.push_back(ds.down());
      }
      EXPECT_EQ(idx[0], idx[1]) << tag << ": the top-k saw columns outside [ks, ke)";
      EXPECT_EQ(0, std::memcmp(sc[0].data(), sc[1].data(), sc[0].size() * 4)) << tag;
      // dsa_fp8 skips the fill unless want_logits: same selection either way.
      Options o;
      Result with, without;
      o.want_logits = true;
      ASSERT_TRUE(cuda::dsa_fp8(in, o, &with).ok()) << tag;
      o.want_logits = false;
      ASSERT_TRUE(cuda::dsa_fp8(in, o, &without).ok()) << tag;
      EXPECT_EQ(with.index, without.index) << tag;
      EXPECT_EQ(0, std::memcmp(with.score.data(), without.score.data(), with.score.size() * 4)) << tag;
    }
  }
  Case c;
  c.nq = 77;
  c.nk = 2500;
  c.k = 64;
  for (int64_t r = 0; r < c.nq; ++r) {
    c.ke.push_back(static_cast<int32_t>(1 + 31 * r));
    c.ks.push_back(static_cast<int32_t>(r % 2 == 0 ? 15 * r : 0));
  }
  const Inputs in = testing::make_dsa_inputs(c, seed_for("unclean_bf16"), ref::Precision::kBf16);
  Options o;
  Result with, without;
  o.want_logits = true;
  ASSERT_TRUE(cuda::dsa_bf16(in, o, &with).ok());
  o.want_logits = false;
  ASSERT_TRUE(cuda::dsa_bf16(in, o, &without).ok());
  EXPECT_EQ(with.index, without.index) << "bf16";
  EXPECT_EQ(0, std::memcmp(with.score.data(), without.score.data(), with.score.size() * 4)) << "bf16";
}
#endif  // INDEXLAB_HAVE_CUDA

TEST(Sm90Dsa, Fp8_TwentyRerunsBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.nq = 40;
  c.nk = 3000;
  c.k = 512;
  const Inputs in = make_inputs(c, seed_for("rerun"));
  Options o;
  o.want_logits = true;
  testing::expect_reruns_bitwise_identical([&](Result* r) { return cuda::dsa_fp8(in, o, r); }, 20,
                                           "Fp8_TwentyReruns");
}

// ---- paged decode -------------------------------------------------------------------------

PagedInputs make_paged(int64_t batch, int next_n, int h, int d, int k, const std::vector<int32_t>& ctx,
                       uint64_t seed) {
  return testing::make_paged(batch, next_n, h, d, k, ctx, seed);  // fp8, keys N(0, 1)
}

void check_paged(const PagedInputs& in, const Options& opt, const std::string& what) {
  testing::check_paged_dsa(in, opt, cuda::dsa_paged_fp8, what);
}

TEST(Sm90Paged, Fp8_NextN1to4_OutOfOrderPages) {
  SKIP_WITHOUT_GPU();
  for (int nn : {1, 2, 3, 4}) {
    for (int h : {64, 128}) {
      const std::vector<int32_t> ctx = {1, 64, 130, 700, 3};
      PagedInputs in = make_paged(5, nn, h, 128, 96, ctx, seed_for("paged") + nn * 7 + h);
      check_paged(in, Options{}, "Paged_H" + std::to_string(h) + "_NextN" + std::to_string(nn));
      Options abs;
      abs.index_base = ref::IndexBase::kAbsolute;
      check_paged(in, abs, "Paged_H" + std::to_string(h) + "_NextN" + std::to_string(nn) + "_Abs");
    }
  }
  const std::vector<int32_t> ctx = {2048, 129};
  PagedInputs in = make_paged(2, 1, 32, 64, 2048, ctx, seed_for("paged2k"));
  check_paged(in, Options{}, "Paged_H32_D64_K2048");
}

// The TMA paged decode kernel (the fp8 default where next_n * h <= 64; N = 8 columns at h = 8,
// next_n = 1, as MISA decode's routed heads): bit-exact against the emulation at every head
// count that fits, d = 64 and 128 (64- and 128-byte swizzled pages), next_n 1 to 8, pages out of
// order, empty, short and multi-chunk contexts, relative and absolute indices; 20 reruns
// identical, the same bits with and without its L2 evict-first policy (INDEXLAB_DECODE_HINT=0),
// and the same logits and selection as logits_kernel (INDEXLAB_DECODE=v1).
TEST(Sm90Paged, Fp8_TmaDecodeKernel) {
  SKIP_WITHOUT_GPU();
  testing::ScopedEnv tma("INDEXLAB_DECODE", "tma");
  struct Shape {
    int h, d, next_n;
  };
  for (const Shape& sh : {Shape{64, 128, 1}, Shape{64, 64, 1}, Shape{32, 128, 2}, Shape{16, 64, 4},
                          Shape{8, 128, 3}, Shape{8, 64, 8}, Shape{8, 128, 1}, Shape{8, 64, 1}}) {
    const std::vector<int32_t> ctx = {1, 64, 130, 700, 0, 4100};
    PagedInputs in = make_paged(6, sh.next_n, sh.h, sh.d, 96, ctx, seed_for("tma") + sh.h * 13 + sh.d + sh.next_n);
    const std::string what =
        "Tma_H" + std::to_string(sh.h) + "_D" + std::to_string(sh.d) + "_NextN" + std::to_string(sh.next_n);
    check_paged(in, Options{}, what);
    Options abs;
    abs.index_base = ref::IndexBase::kAbsolute;
    check_paged(in, abs, what + "_Abs");
  }
  const PagedInputs in = make_paged(3, 1, 64, 128, 512, {20000, 333, 64 * 300}, seed_for("tma_long"));
  Options o;
  o.want_logits = true;
  const Result t = testing::expect_reruns_bitwise_identical([&](Result* r) { return cuda::dsa_paged_fp8(in, o, r); },
                                                            20, "Tma_Reruns");
  // The same logits and selection with `var` set to `value`.
  auto expect_same_with = [&](const char* var, const char* value, const char* what) {
    testing::ScopedEnv env(var, value);
    Result u;
    const Status st = cuda::dsa_paged_fp8(in, o, &u);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(t.logits.size(), u.logits.size());
    EXPECT_EQ(0, std::memcmp(t.logits.data(), u.logits.data(), u.logits.size() * 4)) << what;
    EXPECT_EQ(t.index, u.index) << what;
  };
  // The pages read without the L2 policy, then by logits_kernel.
  expect_same_with("INDEXLAB_DECODE_HINT", "0", "the L2 evict-first policy changed the decode logits");
  expect_same_with("INDEXLAB_DECODE", "v1", "the TMA and v1 decode kernels disagree");
}

// ---- top-k alone --------------------------------------------------------------------------

void check_topk(const std::vector<float>& x, int64_t rows, int64_t cols, const std::vector<int32_t>& ks,
                const std::vector<int32_t>& ke, int k, bool absolute, const std::string& what) {
  std::vector<int32_t> gi;
  std::vector<float> gsc;
  Status st = cuda::topk_rows(x, rows, cols, ks, ke, k,
                              absolute ? ref::IndexBase::kAbsolute : ref::IndexBase::kRelative, &gi, &gsc);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  std::vector<int32_t> ci(static_cast<size_t>(k));
  std::vector<float> cs(static_cast<size_t>(k));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t lo = ks.empty() ? 0 : ks[r], hi = ke.empty() ? cols : ke[r];
    testing::canonical_topk(x.data() + r * cols, lo, hi, k, absolute, ci.data(), cs.data());
    for (int t = 0; t < k; ++t) {
      ASSERT_EQ(gi[r * k + t], ci[t]) << what << ": row " << r << " slot " << t;
      ASSERT_TRUE(same_float(gsc[r * k + t], cs[t])) << what << ": row " << r << " slot " << t;
    }
  }
  std::printf("[%s] rows=%lld cols=%lld k=%d: canonical\n", what.c_str(), static_cast<long long>(rows),
              static_cast<long long>(cols), k);
}

TEST(Sm90Topk, LongRowsOver1M) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 3, cols = (1 << 20) + 77;
  std::mt19937_64 rng(seed_for("topk1m"));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = nd(rng);
  for (int t = 0; t < 5000; ++t) x[rng() % x.size()] = NAN;
  for (int t = 0; t < 5000; ++t) x[rng() % x.size()] = -INFINITY;
  // Row 1: one value repeated everywhere except a few: the K-th bucket holds ~1M candidates.
  for (int64_t j = 0; j < cols; ++j) x[cols + j] = (j % 1000 == 0) ? 2.0f + j * 1e-7f : 1.0f;
  check_topk(x, rows, cols, {}, {}, 2048, false, "Topk_1M_K2048");
  check_topk(x, rows, cols, {5, 1000, 0}, {static_cast<int32_t>(cols), 900000, 77}, 4096, true,
             "Topk_1M_K4096_Ranges_Abs");
}

TEST(Sm90Topk, Adversarial) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(seed_for("topkadv"));
  const int64_t cols = 5000;
  std::vector<std::vector<float>> rowsv;
  rowsv.push_back(std::vector<float>(cols, 0.5f));                // all ties
  rowsv.push_back(std::vector<float>(cols, -INFINITY));           // nothing valid
  rowsv.push_back(std::vector<float>(cols, NAN));                 // NaN only
  std::vector<float> r3(cols, -INFINITY);
  for (int t = 0; t < 30; ++t) r3[rng() % cols] = static_cast<float>(t) * 0.25f;
  rowsv.push_back(r3);                                            // fewer valid than K
  std::vector<float> r4(cols);
  for (int64_t j = 0; j < cols; ++j) {
    uint32_t u = 0x3F800000u | static_cast<uint32_t>(rng() & 0x3FF);  // differ in the low 10 bits
    std::memcpy(&r4[j], &u, 4);
  }
  rowsv.push_back(r4);
  std::vector<float> r5(cols);
  std::uniform_real_distribution<float> nr(1.0f, 1.25f);
  for (auto& v : r5) v = (rng() % 3 == 0) ? -0.0f : (rng() % 2 ? 0.0f : nr(rng));
  rowsv.push_back(r5);                                             // +-0 ties and a narrow range
  std::vector<float> x;
  for (auto& r : rowsv) x.insert(x.end(), r.begin(), r.end());
  const int64_t rows = static_cast<int64_t>(rowsv.size());
  for (int k : {1, 7, 100, 2048, 8192}) check_topk(x, rows, cols, {}, {}, k, false, "Topk_Adv_K" + std::to_string(k));
  std::vector<int32_t> ks(rows, 10), ke(rows, 10);  // empty ranges
  check_topk(x, rows, cols, ks, ke, 16, false, "Topk_Adv_Empty");
}

// Rows of at most 16384 columns take the short-row kernel by default, longer ones the two-CTA
// cluster kernel with the speculative first-pass capture. INDEXLAB_TOPK=cluster forces the cluster
// kernel, INDEXLAB_TOPK=legacy selects the one-CTA kernel and INDEXLAB_TOPK_SPEC=0 turns the
// capture off (every later pass re-reads the row). All must give the canonical selection.
struct EnvVar {
  EnvVar(const char* name, const char* v) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (v) setenv(name, v, 1);
    else unsetenv(name);
  }
  ~EnvVar() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }
  const char* name_;
  bool had_ = false;
  std::string old_;
};
struct TopkPath {
  explicit TopkPath(const std::string& tag)
      : legacy("INDEXLAB_TOPK", tag == "legacy" ? "legacy" : (tag == "default" ? nullptr : "cluster")),
        spec("INDEXLAB_TOPK_SPEC", tag == "nospec" ? "0" : nullptr) {}
  EnvVar legacy, spec;
};
const char* const kTopkPaths[] = {"default", "cluster", "nospec", "legacy"};

TEST(Sm90Topk, ShortAndMisalignedRowsBothPaths) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(seed_for("topkshort"));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t cols = 4099;  // odd: rows start at every 4-byte offset mod 16
  const int64_t rows = 24;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = nd(rng);
  for (int t = 0; t < 300; ++t) x[rng() % x.size()] = (t & 1) ? NAN : -INFINITY;
  std::vector<int32_t> ks(rows), ke(rows);
  const int lens[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 17, 100, 1000, 2047, 2048, 2049, 4000};
  for (int64_t r = 0; r < rows; ++r) {
    const int len = lens[r % (sizeof(lens) / sizeof(lens[0]))];
    ks[r] = static_cast<int32_t>(r % 5);
    ke[r] = static_cast<int32_t>(std::min<int64_t>(cols, ks[r] + len));
  }
  for (const std::string tag : kTopkPaths) {
    TopkPath tp(tag);
    for (int k : {1, 3, 16, 2048}) {
      check_topk(x, rows, cols, ks, ke, k, false, "Topk_Short_" + tag + "_K" + std::to_string(k));
      check_topk(x, rows, cols, ks, ke, k, true, "Topk_Short_Abs_" + tag + "_K" + std::to_string(k));
    }
    check_topk(x, rows, cols, {}, {}, 8192, false, "Topk_Full_" + tag + "_K8192");
  }
}

TEST(Sm90Topk, BenchmarkShapeUniform) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(seed_for("topkuniform"));
  std::uniform_real_distribution<float> ud(-2.0f, 2.0f);
  const int64_t rows = 6, cols = 131072;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = ud(rng);
  for (const std::string tag : kTopkPaths) {
    TopkPath tp(tag);
    for (int k : {2048, 8192}) check_topk(x, rows, cols, {}, {}, k, false, "Topk_Uniform_" + tag + "_K" + std::to_string(k));
  }
}

// More than the leader's candidate buffer (12288) tie at the threshold digit: the cluster
// kernel must take further 12-bit passes, never drop any. Rows 0 and 1 also overflow the
// per-CTA speculative buffers (8192), so those passes re-read the row; row 3's ~13900 ties fit
// them, so its passes run on the spec buffers.
TEST(Sm90Topk, OverflowTiesAtThreshold) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(seed_for("topkoverflow"));
  std::uniform_real_distribution<float> below(-1.0f, 0.99f);
  std::uniform_real_distribution<float> narrow(1.0f, 1.124f);  // one 12-bit digit: [1, 1.125)
  const int64_t rows = 4, cols = 131072 + 3;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = below(rng);
  for (int t = 0; t < 20000; ++t) x[0 * cols + rng() % cols] = 1.0f;       // 20000 equal scores
  for (int t = 0; t < 30000; ++t) x[1 * cols + rng() % cols] = narrow(rng);  // 30000 in one digit
  for (int64_t j = 0; j < cols; ++j) x[2 * cols + j] = (j % 3 == 0) ? -0.0f : 0.0f;  // all +-0
  for (int t = 0; t < 15000; ++t) x[3 * cols + rng() % cols] = (t & 1) ? 2.0f : 2.0f + 1e-6f;
  for (const std::string tag : {"cluster", "nospec"}) {
    TopkPath tp(tag);
    for (int k : {1, 2048, 8192}) {
      check_topk(x, rows, cols, {}, {}, k, false, "Topk_Overflow_" + tag + "_K" + std::to_string(k));
      check_topk(x, rows, cols, {3, 1, 0, 2}, {static_cast<int32_t>(cols), 100001, 131072, 77777}, k, true,
                 "Topk_Overflow_Ranges_" + tag + "_K" + std::to_string(k));
    }
  }
}

// The first pass estimates its threshold digit from a sample (the first 4096 columns of each
// CTA's half); here the samples hold large values that are too few for K, so the real threshold
// lies below the estimate and the first pass must be redone with full counts.
TEST(Sm90Topk, SampleMisleadsEstimate) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(seed_for("topksample"));
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  const int64_t rows = 3, cols = 131072;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = ud(rng);
  for (int j = 0; j < 200; ++j) x[0 * cols + j] = 100.0f + j;                // CTA 0's sample
  for (int j = 0; j < 300; ++j) x[1 * cols + cols / 2 + j] = 50.0f - j * 0.01f;  // CTA 1's sample
  for (int j = 0; j < 4096; ++j) x[2 * cols + j] = 7.0f;                    // sample all equal
  for (const std::string tag : {"cluster", "nospec"}) {
    TopkPath tp(tag);
    for (int k : {100, 2048, 8192})
      check_topk(x, rows, cols, {}, {}, k, false, "Topk_Sample_" + tag + "_K" + std::to_string(k));
  }
}

TEST(Sm90Topk, RerunsBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(seed_for("topkrerun"));
  const int64_t rows = 8, cols = 70001;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = static_cast<float>(rng() % 64) * 0.125f;  // heavy ties
  std::vector<int32_t> i0, i1;
  std::vector<float> s0, s1;
  ASSERT_TRUE(cuda::topk_rows(x, rows, cols, {}, {}, 2048, ref::IndexBase::kRelative, &i0, &s0).ok());
  for (int rep = 0; rep < 5; ++rep) {
    ASSERT_TRUE(cuda::topk_rows(x, rows, cols, {}, {}, 2048, ref::IndexBase::kRelative, &i1, &s1).ok());
    ASSERT_EQ(i0, i1) << "rerun " << rep;
    ASSERT_EQ(0, std::memcmp(s0.data(), s1.data(), s0.size() * 4)) << "rerun " << rep;
  }
  check_topk(x, rows, cols, {}, {}, 2048, false, "Topk_Rerun_Ties");
}

}  // namespace
}  // namespace indexlab
