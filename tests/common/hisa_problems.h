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

namespace indexlab::testing::hisa {

using ref::Inputs;
using ref::PagedInputs;

enum class Values { kNormal, kNarrow, kTies };

/// A flat fp8 problem: rows given by (ks, ke, seq_end, block_origin); empty ks = causal end.
struct FlatCase {
  int64_t nq = 8, nk = 512;
  int h = 16, d = 64, k = 64;
  Values values = Values::kNormal;
  std::vector<int32_t> ks, ke, seq_end, origin;
};

inline Inputs make_flat(const FlatCase& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> narrow(1.0f, 1.25f), uw(-1.0f, 1.0f), upos(0.05f, 1.0f);
  ref::RawInputs raw;
  raw.shape = ref::Shape{c.nq, c.nk, c.h, c.d, c.k};
  raw.q.resize(static_cast<size_t>(c.nq * c.h * c.d));
  raw.k.resize(static_cast<size_t>(c.nk * c.d));
  raw.w.resize(static_cast<size_t>(c.nq * c.h));
  if (c.values == Values::kNarrow) {
    for (auto& v : raw.q) v = narrow(rng);
    for (auto& v : raw.k) v = narrow(rng);
    for (auto& v : raw.w) v = upos(rng);
  } else {
    for (auto& v : raw.q) v = nd(rng) * 1.37f;
    for (auto& v : raw.w) v = uw(rng) * 0.83f + 0.1f;
    if (c.values == Values::kTies) {
      std::vector<float> proto(static_cast<size_t>(4 * c.d));
      for (auto& v : proto) v = nd(rng);
      for (int64_t j = 0; j < c.nk; ++j) {
        const int64_t p = rng() % 4;
        std::copy(proto.begin() + p * c.d, proto.begin() + (p + 1) * c.d, raw.k.begin() + j * c.d);
      }
    } else {
      for (auto& v : raw.k) v = nd(rng) * 0.91f + 0.05f;
    }
  }
  if (c.ks.empty()) {
    raw.ks.assign(static_cast<size_t>(c.nq), 0);
    raw.ke.resize(static_cast<size_t>(c.nq));
    for (int64_t i = 0; i < c.nq; ++i)
      raw.ke[i] = static_cast<int32_t>(std::clamp<int64_t>(c.nk - c.nq + i + 1, 0, c.nk));
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

/// A paged fp8 problem: shuffled pages, unused block-table entries -7.
inline PagedInputs make_paged(int64_t batch, int next_n, int h, int d, int k, const std::vector<int32_t>& ctx,
                       uint64_t seed, int extra_pages = 1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  PagedInputs in;
  in.precision = ref::Precision::kFp8;
  in.h = h;
  in.d = d;
  in.k = k;
  in.next_n = next_n;
  in.batch = batch;
  int64_t maxp = 1;
  for (int32_t c : ctx) maxp = std::max<int64_t>(maxp, (c + 63) / 64);
  in.max_pages = maxp + extra_pages;
  in.num_pages = batch * in.max_pages + 3;
  in.cache.resize(static_cast<size_t>(in.num_pages * in.page_bytes()));
  std::vector<float> row(static_cast<size_t>(d));
  std::vector<uint8_t> codes(static_cast<size_t>(d));
  for (int64_t p = 0; p < in.num_pages; ++p) {
    uint8_t* base = in.cache.data() + p * in.page_bytes();
    for (int t = 0; t < 64; ++t) {
      for (auto& v : row) v = nd(rng) + 0.1f;
      const float s = ref::quantize_row_e4m3(row.data(), d, ref::QuantConfig{}, codes.data());
      std::memcpy(base + t * d, codes.data(), d);
      std::memcpy(base + 64 * d + t * 4, &s, 4);
    }
  }
  std::vector<int32_t> perm(static_cast<size_t>(in.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  in.block_table.assign(static_cast<size_t>(batch * in.max_pages), -7);
  int64_t next = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t p = 0; p < in.max_pages && next < in.num_pages; ++p) in.block_table[b * in.max_pages + p] = perm[next++];
  in.context_lens = ctx;
  const int64_t rows = batch * next_n;
  in.q.resize(static_cast<size_t>(rows * h * d));
  in.w.resize(static_cast<size_t>(rows * h));
  std::uniform_real_distribution<float> uw(-1.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int hh = 0; hh < h; ++hh) {
      for (auto& v : row) v = nd(rng) * 1.3f;
      const float s = ref::quantize_row_e4m3(row.data(), d, ref::QuantConfig{ref::Quantizer::kVllmCache, false, 1e-10f},
                                             codes.data());
      for (int t = 0; t < d; ++t) in.q[(r * h + hh) * d + t] = ref::e4m3_to_float(codes[t]);
      in.w[r * h + hh] = (uw(rng) * 0.9f + 0.1f) * s;
    }
  return in;
}

}  // namespace indexlab::testing::hisa
