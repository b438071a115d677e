/// A plain CPU top-k in the canonical order (score descending, then index ascending; NaN and -inf
/// never selected; -1 / -inf padding), for checking GPU selections in tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace indexlab::testing {

/// Top k of row[lo, hi): idx = column - off, sc the scores.
inline void canonical_topk_offset(const float* row, int64_t lo, int64_t hi, int k, int64_t off, int32_t* idx,
                                  float* sc) {
  std::vector<int64_t> c;
  for (int64_t j = lo; j < hi; ++j)
    if (!std::isnan(row[j]) && row[j] > -INFINITY) c.push_back(j);
  auto better = [&](int64_t a, int64_t b) { return row[a] != row[b] ? row[a] > row[b] : a < b; };
  const int64_t m = std::min<int64_t>(k, static_cast<int64_t>(c.size()));
  std::partial_sort(c.begin(), c.begin() + m, c.end(), better);
  for (int t = 0; t < k; ++t) {
    idx[t] = t < m ? static_cast<int32_t>(c[t] - off) : -1;
    sc[t] = t < m ? row[c[t]] : -INFINITY;
  }
}

/// Top k of row[lo, hi): idx relative to lo (or absolute columns), sc the scores.
inline void canonical_topk(const float* row, int64_t lo, int64_t hi, int k, bool absolute, int32_t* idx,
                           float* sc) {
  canonical_topk_offset(row, lo, hi, k, absolute ? 0 : lo, idx, sc);
}

}  // namespace indexlab::testing
