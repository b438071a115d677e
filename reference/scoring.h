/// The reference scoring engine: exact-in-fp64 dot products (Eigen), the fp64 head sum with its
/// error bound, canonical top-k and block pooling, shared by every path.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "reference/problem.h"

namespace indexlab::ref {

/// SPEC 3 canonical order: score descending, then key ascending; NaN below everything.
inline bool ranks_before(float a, int64_t ja, float b, int64_t jb) {
  const bool na = a != a, nb = b != b;
  if (na != nb) return nb;
  if (!na && a != b) return a > b;
  return ja < jb;
}

/// One scored key of a row.
struct Scored {
  float score;     // fp32 score (rounded once from fp64)
  float bound;     // absolute error bound of the fp64 value before rounding (rounded up)
  int32_t key;     // absolute key index
  uint8_t ambiguous;// 1 when the fp32 rounding of the exact score may differ from `score`
};

/// The K best of `cands` (only scores above -inf qualify), in canonical order, written to
/// index/score/bound (length k, -1 / -inf / 0 padded). Returns true if a selected key or the
/// best unselected key is ambiguous. Reorders `cands`.
bool select_top_k(std::vector<Scored>* cands, int k, int32_t index_offset, int32_t* index,
                  float* score, float* bound);

/// Scores keys of one query row with a set of heads: score = sum_h w[h] relu(s[j] dot(q_h, k_j)),
/// dot products exact (fp8) or bounded (bf16, fp32) in fp64, the head sum in fp64, one rounding.
class RowScorer {
 public:
  explicit RowScorer(const Inputs& in);
  /// Scores keys [j0, j1) of query i for the heads listed (nullptr: all heads); appends to out.
  void score_range(int64_t i, int64_t j0, int64_t j1, const int* heads, int nheads,
                   std::vector<Scored>* out);
  /// Scores an explicit list of keys.
  void score_list(int64_t i, const int32_t* keys, int64_t n, const int* heads, int nheads,
                  std::vector<Scored>* out);
  /// The H per-head dot products of query i with key j (no scale), in fp64, by the same Eigen
  /// product the scores use: out [n, h] for keys j0..j0+n.
  void head_dots(int64_t i, int64_t j0, int64_t n, std::vector<double>* out);

 private:
  void score_keys(int64_t i, const int32_t* keys, int64_t j0, int64_t n, const int* heads,
                  int nheads, std::vector<Scored>* out);
  const Inputs& in_;
};

/// Dense multi-query scoring for DSA: the same numbers as RowScorer, tiled across queries so the
/// key tiles are shared (the fast path of the oracle). rows[t] receives the visible keys of query
/// i0 + t in no particular order; key_threads > 1 splits the keys across that many threads.
void score_dsa_tile(const Inputs& in, int64_t i0, int64_t i1, std::vector<std::vector<Scored>>* rows,
                    int key_threads = 1);

/// Pooled (mean) key of keys [j0, j1): sum of s[j] k[j, :] exact, rounded once to fp32, divided
/// by the count with one fp32 rounding (SPEC 4.2).
void pooled_mean(const Inputs& in, int64_t j0, int64_t j1, float* out /* [d] */);

}  // namespace indexlab::ref
