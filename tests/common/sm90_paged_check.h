/// The paged DSA check shared by the fp8 and bf16 kernel tests.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "reference/emulate_sm90_dsa.h"
#include "reference/problem.h"
#include "tests/common/canonical_topk.h"
#include "tests/common/sm90_test.h"

namespace indexlab::testing {

using PagedDsaFn = Status (*)(const ref::PagedInputs&, const ref::Options&, ref::Result*);

/// Runs a paged DSA entry point and checks, against emulate_sm90_paged_logits (fp8 or bf16 pages):
/// logits bit for bit, index and score equal to the canonical top-k of the emulated logits (also
/// for absolute indices), and recall against the reference path above 0.97.
inline void check_paged_dsa(const ref::PagedInputs& in, const ref::Options& opt, PagedDsaFn gpu_fn,
                            const std::string& what) {
  ref::Result gpu;
  ref::Options o = opt;
  o.want_logits = true;
  Status st = gpu_fn(in, o, &gpu);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  std::vector<float> emu;
  ASSERT_TRUE(ref::emulate_sm90_paged_logits(in, &emu).ok());
  ASSERT_EQ(gpu.logits.size(), emu.size());
  int64_t bad = 0;
  const int64_t cols = in.max_pages * 64;
  for (size_t t = 0; t < emu.size(); ++t)
    if (bits(gpu.logits[t]) != bits(emu[t]) && bad++ < 5)
      ADD_FAILURE() << what << ": logit[" << t / cols << "," << t % cols << "] gpu " << gpu.logits[t]
                    << " emu " << emu[t];
  EXPECT_EQ(bad, 0) << what;
  ref::Result refr;
  st = ref::run_paged(ref::Path::kDsa, in, opt, &refr);
  ASSERT_TRUE(st.ok()) << st.message();
  const int k = in.k;
  const bool absolute = opt.index_base == ref::IndexBase::kAbsolute;
  std::vector<int32_t> ci(static_cast<size_t>(k));
  std::vector<float> cs(static_cast<size_t>(k));
  double recall = 0;
  for (int64_t r = 0; r < in.rows(); ++r) {
    const int64_t ctx = in.context_lens[r / in.next_n];
    const int64_t vis = std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - in.next_n + r % in.next_n + 1));
    canonical_topk(emu.data() + r * cols, 0, vis, k, false, ci.data(), cs.data());
    if (absolute)
      for (auto& x : ci)
        if (x >= 0) x = in.block_table[(r / in.next_n) * in.max_pages + x / 64] * 64 + x % 64;
    for (int t = 0; t < k; ++t) {
      ASSERT_EQ(gpu.index[r * k + t], ci[t]) << what << ": row " << r << " slot " << t;
      ASSERT_TRUE(same_float(gpu.score[r * k + t], cs[t])) << what << ": row " << r << " slot " << t;
    }
    std::vector<int32_t> gs(gpu.index.begin() + r * k, gpu.index.begin() + (r + 1) * k);
    std::sort(gs.begin(), gs.end());
    int64_t n = 0, hit = 0;
    for (int t = 0; t < k; ++t) {
      const int32_t x = refr.index[r * k + t];
      if (x < 0) continue;
      ++n;
      hit += std::binary_search(gs.begin(), gs.end(), x);
    }
    recall += n ? static_cast<double>(hit) / n : 1.0;
  }
  recall /= std::max<int64_t>(1, in.rows());
  std::printf("[%s] logits bit-exact %s, selection = canonical top-k of emulated logits, recall vs "
              "ref %.5f\n", what.c_str(), bad == 0 ? "yes" : "NO", recall);
  EXPECT_GT(recall, 0.97) << what;
}

}  // namespace indexlab::testing
