/// The reference scoring engine (see scoring.h).
#include "reference/scoring.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "reference/exact_sum.h"

namespace indexlab::ref {
namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
constexpr double kU = 0x1p-53;    // unit roundoff of fp64
constexpr int64_t kKeyChunk = 512;

inline double relu(double x) { return x > 0.0 ? x : (x == x ? 0.0 : x); }

/// Worst-case error of an fp64 dot of length d (Higham's gamma_d), 0 when the inputs are fp8.
double dot_gamma(const Inputs& in) {
  if (in.precision == Precision::kFp8) return 0.0;
  const double nd = static_cast<double>(in.shape.d) * kU;
  return nd / (1.0 - nd);
}

float round_up_float(double b) {
  float f = static_cast<float>(b);
  if (static_cast<double>(f) < b) f = std::nextafter(f, INFINITY);
  return f;
}

/// The fp64 epilogue of one (query, key) pair: p holds the pair's head dots, one per head listed
/// in `heads` (in that order), or all h heads in order when heads is null.
inline Scored finish(const Inputs& in, int64_t i, int64_t j, const double* p, const int* heads,
                     int nheads, double dot_term) {
  const int H = in.shape.h;
  const double s = in.k_scale.empty() ? 1.0 : static_cast<double>(in.k_scale[j]);
  const float* w = &in.w[i * H];
  const int nh = heads == nullptr ? H : nheads;
  // Four interleaved partial sums (fixed order, so deterministic); the bound below covers any
  // summation order of the nh terms.
  double v4[4] = {0.0, 0.0, 0.0, 0.0}, a4[4] = {0.0, 0.0, 0.0, 0.0};
  int t = 0;
  for (; t + 4 <= nh; t += 4) {
    for (int u = 0; u < 4; ++u) {
      const int h = heads == nullptr ? t + u : heads[t + u];
      const double r = relu(s * p[t + u]);
      const double wh = static_cast<double>(w[h]);
      v4[u] += wh * r;
      a4[u] += std::fabs(wh) * r;
    }
  }
  for (; t < nh; ++t) {
    const int h = heads == nullptr ? t : heads[t];
    const double r = relu(s * p[t]);
    v4[0] += static_cast<double>(w[h]) * r;
    a4[0] += std::fabs(static_cast<double>(w[h])) * r;
  }
  const double v = (v4[0] + v4[1]) + (v4[2] + v4[3]);
  const double a = (a4[0] + a4[1]) + (a4[2] + a4[3]);
  const double bound = (nh + 3) * kU * a + 1.01 * s * dot_term;
  Scored r;
  r.score = static_cast<float>(v);
  r.key = static_cast<int32_t>(j);
  r.bound = round_up_float(bound);
  r.ambiguous = (bound > 0.0 && v == v &&
                 static_cast<float>(v - bound) != static_cast<float>(v + bound)) ? 1 : 0;
  return r;
}

/// sum over heads of |w_h| * ||q_h|| (for the bf16 / fp32 dot-error term).
double weighted_qnorm(const Inputs& in, int64_t i, const int* heads, int nheads) {
  const int H = in.shape.h, D = in.shape.d;
  double c = 0.0;
  const int nh = heads == nullptr ? H : nheads;
  for (int t = 0; t < nh; ++t) {
    const int h = heads == nullptr ? t : heads[t];
    double n2 = 0.0;
    for (int dd = 0; dd < D; ++dd) {
      const double x = in.q[(i * H + h) * D + dd];
      n2 += x * x;
    }
    c += std::fabs(static_cast<double>(in.w[i * H + h])) * std::sqrt(n2);
  }
  return c * 1.0000001;
}

double key_norm(const Inputs& in, int64_t j) {
  const int D = in.shape.d;
  double n2 = 0.0;
  for (int dd = 0; dd < D; ++dd) {
    const double x = in.k[j * D + dd];
    n2 += x * x;
  }
  return std::sqrt(n2) * 1.0000001;
}

/// Fills qt [d, rows*nh] (column t*nh + c holds q[i0 + t, heads[c], :]; all heads when null).
void load_queries(const Inputs& in, int64_t i0, int64_t rows, ColMat* qt, const int* heads = nullptr,
                  int nheads = 0) {
  const int H = in.shape.h, D = in.shape.d;
  const int nh = heads == nullptr ? H : nheads;
  qt->resize(D, rows * nh);
  for (int64_t t = 0; t < rows; ++t)
    for (int c = 0; c < nh; ++c) {
      const int h = heads == nullptr ? c : heads[c];
      for (int dd = 0; dd < D; ++dd) (*qt)(dd, t * nh + c) = in.q[((i0 + t) * H + h) * D + dd];
    }
}

/// Fills kc [n, d] with keys (a list, or the range j0..j0+n when keys is null).
void load_keys(const Inputs& in, const int32_t* keys, int64_t j0, int64_t n, RowMat* kc) {
  const int D = in.shape.d;
  kc->resize(n, D);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t j = keys ? keys[t] : j0 + t;
    const float* src = &in.k[j * D];
    for (int dd = 0; dd < D; ++dd) (*kc)(t, dd) = src[dd];
  }
}

}  // namespace

bool select_top_k(std::vector<Scored>* cands, int k, int32_t index_offset, int32_t* index,
                  float* score, float* bound) {
  auto& c = *cands;
  // Only scores strictly above -inf qualify (NaN never does).
  c.erase(std::remove_if(c.begin(), c.end(),
                         [](const Scored& s) { return !(s.score > -INFINITY); }),
          c.end());
  auto before = [](const Scored& a, const Scored& b) {
    return ranks_before(a.score, a.key, b.score, b.key);
  };
  const size_t take = std::min<size_t>(c.size(), static_cast<size_t>(k));
  const size_t look = std::min<size_t>(c.size(), take + 1);
  if (look < c.size()) std::nth_element(c.begin(), c.begin() + look, c.end(), before);
  std::sort(c.begin(), c.begin() + look, before);
  bool amb = false;
  for (size_t t = 0; t < look; ++t) amb = amb || c[t].ambiguous;
  for (int t = 0; t < k; ++t) {
    if (static_cast<size_t>(t) < take) {
      index[t] = c[t].key - index_offset;
      score[t] = c[t].score;
      bound[t] = c[t].bound;
    } else {
      index[t] = -1;
      score[t] = -INFINITY;
      bound[t] = 0.0f;
    }
  }
  return amb;
}

RowScorer::RowScorer(const Inputs& in) : in_(in) {}

void RowScorer::head_dots(int64_t i, int64_t j0, int64_t n, std::vector<double>* out) {
  ColMat qt;
  RowMat kc;
  load_queries(in_, i, 1, &qt);
  load_keys(in_, nullptr, j0, n, &kc);
  RowMat p = kc * qt;
  out->assign(p.data(), p.data() + p.size());
}

void RowScorer::score_keys(int64_t i, const int32_t* keys, int64_t j0, int64_t n,
                           const int* heads, int nheads, std::vector<Scored>* out) {
  const double gamma = dot_gamma(in_);
  const double cq = gamma > 0.0 ? weighted_qnorm(in_, i, heads, nheads) : 0.0;
  ColMat qt;
  load_queries(in_, i, 1, &qt, heads, nheads);  // only the heads that are summed
  RowMat kc, p;
  out->reserve(out->size() + n);
  for (int64_t c0 = 0; c0 < n; c0 += kKeyChunk) {
    const int64_t cn = std::min<int64_t>(kKeyChunk, n - c0);
    load_keys(in_, keys ? keys + c0 : nullptr, j0 + c0, cn, &kc);
    p.noalias() = kc * qt;
    for (int64_t t = 0; t < cn; ++t) {
      const int64_t j = keys ? keys[c0 + t] : j0 + c0 + t;
      const double dt = gamma > 0.0 ? gamma * cq * key_norm(in_, j) : 0.0;
      out->push_back(finish(in_, i, j, p.row(t).data(), heads, nheads, dt));
    }
  }
}

void RowScorer::score_range(int64_t i, int64_t j0, int64_t j1, const int* heads, int nheads,
                            std::vector<Scored>* out) {
  if (j1 > j0) score_keys(i, nullptr, j0, j1 - j0, heads, nheads, out);
}

void RowScorer::score_list(int64_t i, const int32_t* keys, int64_t n, const int* heads,
                           int nheads, std::vector<Scored>* out) {
  if (n > 0) score_keys(i, keys, 0, n, heads, nheads, out);
}

void score_dsa_tile(const Inputs& in, int64_t i0, int64_t i1, std::vector<std::vector<Scored>>* rows,
                    int key_threads) {
  const int H = in.shape.h;
  const int64_t T = i1 - i0;
  rows->resize(T);
  int64_t lo = INT64_MAX, hi = 0;
  for (int64_t t = 0; t < T; ++t) {
    (*rows)[t].clear();
    if (in.ks[i0 + t] < in.ke[i0 + t]) {
      lo = std::min<int64_t>(lo, in.ks[i0 + t]);
      hi = std::max<int64_t>(hi, in.ke[i0 + t]);
      (*rows)[t].reserve(in.ke[i0 + t] - in.ks[i0 + t]);
    }
  }
  if (lo >= hi) return;
  const double gamma = dot_gamma(in);
  std::vector<double> cq(T, 0.0);
  if (gamma > 0.0)
    for (int64_t t = 0; t < T; ++t) cq[t] = weighted_qnorm(in, i0 + t, nullptr, 0);
  ColMat qt;
  load_queries(in, i0, T, &qt);
  const int64_t nchunks = (hi - lo + kKeyChunk - 1) / kKeyChunk;
  // Key chunks are independent; with several threads each fills its own per-chunk lists, which
  // are appended in chunk order afterwards (the order of a row's keys does not affect selection).
  std::vector<std::vector<std::vector<Scored>>> parts(key_threads > 1 ? nchunks : 0);
#pragma omp parallel num_threads(key_threads) if (key_threads > 1)
  {
    RowMat kc, p;
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t c0 = lo + c * kKeyChunk;
      const int64_t cn = std::min<int64_t>(kKeyChunk, hi - c0);
      // Skip the whole chunk when no row of the tile sees it (causal tiles).
      bool any = false;
      for (int64_t t = 0; t < T && !any; ++t) any = in.ks[i0 + t] < c0 + cn && in.ke[i0 + t] > c0;
      if (!any) continue;
      std::vector<std::vector<Scored>>* dst = rows;
      if (key_threads > 1) {
        parts[c].resize(T);
        dst = &parts[c];
      }
      load_keys(in, nullptr, c0, cn, &kc);
      p.noalias() = kc * qt;
      for (int64_t tk = 0; tk < cn; ++tk) {
        const int64_t j = c0 + tk;
        const double kn = gamma > 0.0 ? key_norm(in, j) : 0.0;
        const double* prow = p.row(tk).data();
        for (int64_t t = 0; t < T; ++t) {
          const int64_t i = i0 + t;
          if (j < in.ks[i] || j >= in.ke[i]) continue;
          (*dst)[t].push_back(finish(in, i, j, prow + t * H, nullptr, 0, gamma * cq[t] * kn));
        }
      }
    }
  }
  for (auto& part : parts)
    for (int64_t t = 0; t < static_cast<int64_t>(part.size()); ++t)
      (*rows)[t].insert((*rows)[t].end(), part[t].begin(), part[t].end());
}

void pooled_mean(const Inputs& in, int64_t j0, int64_t j1, float* out) {
  const int D = in.shape.d;
  const float count = static_cast<float>(j1 - j0);
  std::vector<ExactSum> acc(D);
  for (int64_t j = j0; j < j1; ++j) {
    const double s = in.k_scale.empty() ? 1.0 : static_cast<double>(in.k_scale[j]);
    // s (24 bits) times a stored value (<= 24 bits) is exact in fp64.
    for (int dd = 0; dd < D; ++dd) acc[dd].add(s * static_cast<double>(in.k[j * D + dd]));
  }
  for (int dd = 0; dd < D; ++dd) out[dd] = acc[dd].round_to_float() / count;
}

}  // namespace indexlab::ref
