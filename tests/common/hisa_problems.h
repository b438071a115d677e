/// Random fp8 problems for the HISA kernel and emulation tests: flat rows with any (ks, ke,
/// seq_end, block_origin), and paged caches with shuffled pages. Seeded, non-integer values.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "reference/numerics.h"
#include "reference/problem.h"
#include "tests/common/problems.h"

namespace indexlab::testing::hisa {

using ref::Inputs;
using ref::PagedInputs;

using Values = ::indexlab::testing::ValueClass;

/// A flat fp8 problem: rows given by (ks, ke, seq_end, block_origin); empty ks = causal end.
struct FlatCase {
  int64_t nq = 8, nk = 512;
  int h = 16, d = 64, k = 64;
  Values values = Values::kNormal;
  std::vector<int32_t> ks, ke, seq_end, origin;
};

inline Inputs make_flat(const FlatCase& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  ref::RawInputs raw;
  raw.shape = ref::Shape{c.nq, c.nk, c.h, c.d, c.k};
  fill_raw_values(&raw, c.values, rng, ValueBias{0.05f, 0.1f});
  if (c.ks.empty()) {
    causal_tail_ranges(&raw);
  } else {
    raw.ks = c.ks;
    raw.ke = c.ke;
  }
  raw.seq_end = c.seq_end;
  raw.block_origin = c.origin;
  Inputs in;
  Status st = ref::quantize_inputs(raw, ref::Precision::kFp8, ref::QuantizeOptions{}, &in);
  EXPECT_TRUE(st.ok()) << st.message();
  return in;
}

/// A paged fp8 problem: shuffled pages, every block-table column mapped while pages last.
inline PagedInputs make_paged(int64_t batch, int next_n, int h, int d, int k, const std::vector<int32_t>& ctx,
                              uint64_t seed, int extra_pages = 1) {
  PagedStyle style;
  style.key_bias = 0.1f;
  style.extra_pages = extra_pages;
  style.map_all_columns = true;
  style.w_mul = 0.9f;
  style.w_add = 0.1f;
  return ::indexlab::testing::make_paged(batch, next_n, h, d, k, ctx, seed, style);
}

}  // namespace indexlab::testing::hisa
