/// Problem and value generators of the fuzzer: every case is drawn from (seed, case index) and
/// carries the name of the generator and value class that made it (SPEC section 10).
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "compare/problem.h"

namespace indexlab::fuzz {

/// What the generators may draw. Caps apply to every generator except long_rows, which draws
/// 2^20 + a few keys (and only when allow_long is set).
struct GenConfig {
  std::vector<ref::Path> paths{ref::Path::kDsa, ref::Path::kHisa, ref::Path::kMisa,
                               ref::Path::kMisaDagger};
  std::vector<ref::Precision> precisions{ref::Precision::kFp32, ref::Precision::kBf16,
                                         ref::Precision::kFp8};
  std::vector<std::string> generators;  // names to draw from; empty: every enabled generator
  std::vector<int> h_choices;           // fixed head counts to draw from (empty: random 1..max_h)
  std::vector<int> d_choices;           // fixed head dims to draw from (empty: random 1..max_d)
  bool flat = true;                     // flat (prefill / ragged) problems
  bool paged = true;                    // paged decode problems
  bool allow_long = false;              // the long_rows generator (1M+ keys)
  bool nonfinite = false;               // the NaN / Inf class (sets allow_nonfinite)
  int64_t max_nq = 12;
  int64_t max_nk = 320;
  int max_h = 16;
  int max_d = 48;
  int threads = 1;                      // ref::Options::threads of the generated problems
};

/// A small configuration for >= 1M-case CPU campaigns (tiny problems).
GenConfig tiny_config();

/// One generated case.
struct Case {
  compare::Problem problem;
  std::string generator;      // e.g. "exactly_k_visible" (see generator_names)
  std::string values;         // value class, e.g. "narrow_range" (see value_class_names)
  uint64_t seed = 0;
  int64_t index = 0;
  int64_t sample_rows = 0;    // judge on this many sampled rows (0: all)
  std::string label() const { return generator + "/" + values; }
};

/// The 64-bit seed of case `index` of a campaign seeded with `seed` (splitmix64 of both).
uint64_t case_seed(uint64_t seed, int64_t index);

/// Draws case `index` of campaign `seed`: a generator and a value class (from cfg), then the
/// problem. Deterministic: the same (cfg, seed, index) always gives the same case.
Status make_case(const GenConfig& cfg, uint64_t seed, int64_t index, Case* out);
/// As make_case, with the generator (and optionally the value class) named.
Status make_case_with(const std::string& generator, const std::string& values, const GenConfig& cfg,
                      uint64_t seed, int64_t index, Case* out);

/// Generator names, each reaching a SPEC section 10 class (see generator_reaches).
const std::vector<std::string>& generator_names();
/// The SPEC section 10 bug class a generator reaches, in words.
std::string generator_reaches(const std::string& generator);
/// Value classes. "nonfinite" is drawn only when GenConfig::nonfinite is set.
const std::vector<std::string>& value_class_names();

/// Per-sequence keys of a paged problem, decoded, and the rows' queries: the form the shrinker
/// edits and pack_paged writes back into pages.
struct PagedParts {
  ref::Precision precision = ref::Precision::kFp8;
  int h = 0, d = 0, k = 0, next_n = 1, page_tokens = 64;
  std::vector<std::vector<float>> keys;    // [batch][ctx * d] decoded values
  std::vector<std::vector<float>> scales;  // [batch][ctx]
  std::vector<float> q, w, q_scale;        // [batch * next_n, h, d], [.., h], optional [.., h]
};
/// Decodes a paged problem's sequences (validate first: page indices are trusted).
Status unpack_paged(const ref::PagedInputs& in, PagedParts* out);
/// Lays sequences out in pages: physical pages shuffled by `seed`, `spare_pages` unused pages,
/// `extra_cols` unused block-table columns; unused slots, pages and columns hold garbage
/// (NaN codes, zero scales, out-of-range page ids) that a correct reader never touches.
Status pack_paged(const PagedParts& parts, uint64_t seed, int spare_pages, int extra_cols,
                  ref::PagedInputs* out);

/// Counts for the tests: rows of a problem (flat view) with exactly K, fewer than K (but > 0)
/// and no visible keys.
struct RowClasses {
  int64_t exactly_k = 0, fewer_than_k = 0, empty = 0, more_than_k = 0;
  int64_t max_visible = 0;
};
Status classify_rows(const compare::Problem& p, RowClasses* out);

}  // namespace indexlab::fuzz
