/// Random problems shared by the sm90 kernel tests and the emulation tests: the value classes of a
/// flat problem, causal ranges, DSA cases in fp8 or bf16, and paged caches with shuffled pages.
/// Seeded; values are finite and non-integer (never zeros).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "reference/numerics.h"
#include "reference/problem.h"
#include "reference/quant.h"

namespace indexlab::testing {

enum class ValueClass {
  kNormal,    // q ~ 1.37 N(0,1), k ~ 0.91 N(0,1), w ~ 0.83 U(-1,1)
  kNarrow,    // q, k in [1, 1.25], w in [0.05, 1]: many near-equal scores
  kTiedKeys,  // keys are four distinct rows repeated: exact score ties
  kWide,      // keys over 2^-30 .. 2^12 with a few subnormals, some q rows rescaled
};

/// Offsets added to the kNormal / kTiedKeys / kWide weights and the kNormal keys.
struct ValueBias {
  float k = 0.0f;
  float w = 0.0f;
};

/// Fills raw->q, k and w (resized from raw->shape) with one value class.
inline void fill_raw_values(ref::RawInputs* raw, ValueClass cls, std::mt19937_64& rng,
                            ValueBias bias = {}) {
  const ref::Shape& s = raw->shape;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> narrow(1.0f, 1.25f), uw(-1.0f, 1.0f), upos(0.05f, 1.0f);
  raw->q.resize(static_cast<size_t>(s.nq * s.h * s.d));
  raw->k.resize(static_cast<size_t>(s.nk * s.d));
  raw->w.resize(static_cast<size_t>(s.nq * s.h));
  if (cls == ValueClass::kNarrow) {
    for (auto& v : raw->q) v = narrow(rng);
    for (auto& v : raw->k) v = narrow(rng);
    for (auto& v : raw->w) v = upos(rng);
    return;
  }
  for (auto& v : raw->q) v = nd(rng) * 1.37f;
  for (auto& v : raw->w) v = uw(rng) * 0.83f + bias.w;
  if (cls == ValueClass::kTiedKeys) {
    std::vector<float> proto(static_cast<size_t>(4 * s.d));
    for (auto& v : proto) v = nd(rng);
    for (int64_t j = 0; j < s.nk; ++j) {
      const int64_t p = rng() % 4;
      std::copy(proto.begin() + p * s.d, proto.begin() + (p + 1) * s.d, raw->k.begin() + j * s.d);
    }
  } else if (cls == ValueClass::kWide) {
    for (auto& v : raw->k) {
      v = nd(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 43) - 30);
      if (rng() % 97 == 0) v = std::ldexp(nd(rng), -130);
    }
    for (auto& v : raw->q)
      if (rng() % 5 == 0) v = v * std::ldexp(1.0f, static_cast<int>(rng() % 21) - 10);
  } else {
    for (auto& v : raw->k) v = nd(rng) * 0.91f + bias.k;
  }
}

/// The e4m3 codes of values that are e4m3 values (the fp8 problems' q and k), as the kernels take them.
inline std::vector<uint8_t> e4m3_codes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = ref::float_to_e4m3_satfinite(v[i]);
  return out;
}

/// ks = 0 and ke = the causal end of each of the last nq positions of nk keys.
inline void causal_tail_ranges(ref::RawInputs* raw) {
  const int64_t nq = raw->shape.nq, nk = raw->shape.nk;
  raw->ks.assign(static_cast<size_t>(nq), 0);
  raw->ke.resize(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i)
    raw->ke[i] = static_cast<int32_t>(std::clamp<int64_t>(nk - nq + i + 1, 0, nk));
}

/// A flat DSA problem in fp8 (per-key scales from the quantizer) or bf16 (scales optional).
struct DsaCase {
  int64_t nq = 8, nk = 64;
  int h = 64, d = 128, k = 32;
  ValueClass values = ValueClass::kNormal;
  bool scales = false;          // bf16: random positive per-key scales (default 1)
  std::vector<int32_t> ks, ke;  // empty: causal tail
};

inline ref::Inputs make_dsa_inputs(const DsaCase& c, uint64_t seed, ref::Precision precision) {
  std::mt19937_64 rng(seed);
  ref::RawInputs raw;
  raw.shape = ref::Shape{c.nq, c.nk, c.h, c.d, c.k};
  fill_raw_values(&raw, c.values, rng);
  if (c.ks.empty()) {
    causal_tail_ranges(&raw);
  } else {
    raw.ks = c.ks;
    raw.ke = c.ke;
  }
  ref::Inputs in;
  Status st = ref::quantize_inputs(raw, precision, ref::QuantizeOptions{}, &in);
  EXPECT_TRUE(st.ok()) << st.message();
  if (c.scales && precision == ref::Precision::kBf16) {
    std::uniform_real_distribution<float> us(0.25f, 3.0f);
    in.k_scale.resize(static_cast<size_t>(c.nk));
    for (auto& s : in.k_scale) s = us(rng);
  }
  return in;
}

/// Calls check(inputs, name) on one DSA problem per supported head count and dimension
/// (bf16: per-key scales on a third of them).
template <typename Check>
void for_heads_and_dims(const std::string& tag, uint64_t seed, int64_t nq, int64_t nk,
                        ref::Precision precision, Check check) {
  for (int h : {8, 16, 32, 64, 128}) {
    for (int d : {64, 128}) {
      DsaCase c;
      c.nq = nq;
      c.nk = nk;
      c.h = h;
      c.d = d;
      c.k = 48;
      c.scales = (h + d) % 3 == 0;
      check(make_dsa_inputs(c, seed + h * 131 + d, precision),
            tag + "_H" + std::to_string(h) + "_D" + std::to_string(d));
    }
  }
}

/// Calls check(inputs, name) on H = 64, D = 128 problems of every (nk, nq) given, around the
/// kernels' tiles.
template <typename Check>
void for_tile_boundaries(const std::string& tag, uint64_t seed, const std::vector<int64_t>& nks,
                         const std::vector<int64_t>& nqs, ref::Precision precision, Check check) {
  for (int64_t nk : nks) {
    for (int64_t nq : nqs) {
      DsaCase c;
      c.nq = nq;
      c.nk = nk;
      c.k = 16;
      check(make_dsa_inputs(c, seed + nk * 1000 + nq, precision),
            tag + "_Nq" + std::to_string(nq) + "_Lk" + std::to_string(nk));
    }
  }
}

/// How make_paged fills a cache and its queries.
struct PagedStyle {
  ref::Precision precision = ref::Precision::kFp8;
  float key_bias = 0.0f;      // fp8 key rows: N(0,1) + key_bias, quantized per row
  int extra_pages = 1;        // block-table columns past the longest context
  bool map_all_columns = false;  // true: every column gets a page (while pages last); false:
                                 // only a sequence's context pages, the rest -7 (never read)
  float w_mul = 1.0f, w_add = 0.0f;  // fp8: w = (U(-1,1) * w_mul + w_add) * the q row's scale
  bool q_scale = false;       // fp8: also store each q row's scale in q_scale (MISA q_norm)
};

/// A paged problem: every page of the cache holds random keys, also unused ones; pages are
/// shuffled, so page tables are out of order; fp8 queries are e4m3 codes with the row scale
/// folded into w, bf16 queries and weights are plain.
inline ref::PagedInputs make_paged(int64_t batch, int next_n, int h, int d, int k,
                                   const std::vector<int32_t>& ctx, uint64_t seed,
                                   const PagedStyle& style = {}) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const bool bf16 = style.precision == ref::Precision::kBf16;
  ref::PagedInputs in;
  in.precision = style.precision;
  in.h = h;
  in.d = d;
  in.k = k;
  in.next_n = next_n;
  in.batch = batch;
  in.page_tokens = 64;
  int64_t maxp = 1;
  for (int32_t c : ctx) maxp = std::max<int64_t>(maxp, (c + 63) / 64);
  in.max_pages = maxp + style.extra_pages;
  in.num_pages = batch * in.max_pages + 3;
  in.cache.resize(static_cast<size_t>(in.num_pages * in.page_bytes()));
  std::vector<float> row(static_cast<size_t>(d));
  std::vector<uint8_t> codes(static_cast<size_t>(d));
  std::uniform_real_distribution<float> us(0.25f, 3.0f);
  for (int64_t p = 0; p < in.num_pages; ++p) {
    uint8_t* base = in.cache.data() + p * in.page_bytes();
    for (int t = 0; t < 64; ++t) {
      if (bf16) {
        for (int x = 0; x < d; ++x) {
          const uint16_t v = ref::float_to_bf16(nd(rng) * 0.9f);
          std::memcpy(base + (t * d + x) * 2, &v, 2);
        }
        const float s = us(rng);
        std::memcpy(base + 64 * d * 2 + t * 4, &s, 4);
      } else {
        for (auto& v : row) v = nd(rng) + style.key_bias;
        const float s = ref::quantize_row_e4m3(row.data(), d, ref::QuantConfig{}, codes.data());
        std::memcpy(base + t * d, codes.data(), d);
        std::memcpy(base + 64 * d + t * 4, &s, 4);
      }
    }
  }
  std::vector<int32_t> perm(static_cast<size_t>(in.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  in.block_table.assign(static_cast<size_t>(batch * in.max_pages), -7);
  int64_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t cols = style.map_all_columns ? in.max_pages : (ctx[b] + 63) / 64;
    for (int64_t p = 0; p < cols && next < in.num_pages; ++p) in.block_table[b * in.max_pages + p] = perm[next++];
  }
  in.context_lens = ctx;
  const int64_t rows = batch * next_n;
  in.q.resize(static_cast<size_t>(rows * h * d));
  in.w.resize(static_cast<size_t>(rows * h));
  std::uniform_real_distribution<float> uw(-1.0f, 1.0f);
  if (bf16) {
    for (auto& v : in.q) v = ref::round_to_bf16(nd(rng) * 1.3f);
    for (auto& v : in.w) v = uw(rng);
    return in;
  }
  if (style.q_scale) in.q_scale.resize(static_cast<size_t>(rows * h));
  for (int64_t r = 0; r < rows; ++r)
    for (int hh = 0; hh < h; ++hh) {
      for (auto& v : row) v = nd(rng) * 1.3f;
      const float s = ref::quantize_row_e4m3(row.data(), d, ref::QuantConfig{ref::Quantizer::kVllmCache, false, 1e-10f},
                                             codes.data());
      for (int t = 0; t < d; ++t) in.q[(r * h + hh) * d + t] = ref::e4m3_to_float(codes[t]);
      in.w[r * h + hh] = (uw(rng) * style.w_mul + style.w_add) * s;
      if (style.q_scale) in.q_scale[r * h + hh] = s;
    }
  return in;
}

}  // namespace indexlab::testing
