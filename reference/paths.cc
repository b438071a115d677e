/// The reference paths: DSA, HISA, MISA and MISA-dagger (SPEC 2-6), flat and paged.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "reference/blocks.h"
#include "reference/numerics.h"
#include "reference/routing.h"
#include "reference/problem.h"
#include "reference/scoring.h"

namespace indexlab::ref {
namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

/// Where each row's logits go: column = key - col_base[i], row width `width`.
struct LogitsLayout {
  const std::vector<int64_t>* col_base = nullptr;  // null: column = key
  int64_t width = -1;                               // -1: nk
};

/// A pooled block key in the precision the path scores it in.
struct PooledKey {
  std::vector<float> v;  // [d] decoded values
  float scale = 1.0f;
};

class PoolCache {
 public:
  PoolCache(const Inputs& in, bool requantize) : in_(in), requantize_(requantize) {}
  const PooledKey& get(int64_t j0, int64_t j1) {
    const uint64_t key = (static_cast<uint64_t>(j0) << 32) | static_cast<uint64_t>(j1);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    PooledKey pk;
    const int D = in_.shape.d;
    pk.v.resize(D);
    pooled_mean(in_, j0, j1, pk.v.data());
    if (in_.precision == Precision::kBf16) {
      for (auto& x : pk.v) x = round_to_bf16(x);
    } else if (in_.precision == Precision::kFp8 && requantize_) {
      // SPEC 4.2: per-block re-quantization, scale max(amax / 448, 1e-10), codes satfinite(x / s).
      float amax = 0.0f;
      for (float x : pk.v) amax = std::max(amax, std::fabs(x));
      pk.scale = std::max(amax / 448.0f, 1e-10f);
      for (auto& x : pk.v) x = e4m3_to_float(float_to_e4m3_satfinite(x / pk.scale));
    }
    return cache_.emplace(key, std::move(pk)).first->second;
  }

 private:
  const Inputs& in_;
  bool requantize_;
  std::unordered_map<uint64_t, PooledKey> cache_;
};

inline double relu(double x) { return x > 0.0 ? x : (x == x ? 0.0 : x); }

/// dots[b, h] = dot(q[i, h, :], pooled_b) in fp64 (unscaled).
RowMat pooled_dots(const Inputs& in, int64_t i, const std::vector<const PooledKey*>& pk) {
  const int H = in.shape.h, D = in.shape.d;
  RowMat kb(static_cast<int64_t>(pk.size()), D);
  for (size_t b = 0; b < pk.size(); ++b)
    for (int dd = 0; dd < D; ++dd) kb(b, dd) = pk[b]->v[dd];
  ColMat qt(D, H);
  for (int h = 0; h < H; ++h)
    for (int dd = 0; dd < D; ++dd) qt(dd, h) = in.q[(i * H + h) * D + dd];
  return kb * qt;
}

/// The top `m` of scores (canonical: descending, lower position first, NaN last).
std::vector<int64_t> top_positions(const std::vector<float>& v, const std::vector<int64_t>& pos,
                                   int64_t m) {
  std::vector<int64_t> order = pos;
  auto before = [&](int64_t a, int64_t b) { return ranks_before(v[a], a, v[b], b); };
  const int64_t take = std::min<int64_t>(m, static_cast<int64_t>(order.size()));
  std::partial_sort(order.begin(), order.begin() + take, order.end(), before);
  order.resize(take);
  return order;
}

/// MISA router scores of query i (SPEC 5.2-5.5) in fp64, each in the order the reference has
/// always summed it (route_heads rounds them to fp32); with `bound`, also a drift bound for a kernel
/// that computes them in fp32 (see reference/routing.h).
void router_scores(const Inputs& in, const Options& opt, int64_t i, PoolCache* pools, std::vector<Block>* blocks,
                   std::vector<double>* e, std::vector<double>* bound) {
  const int H = in.shape.h, D = in.shape.d;
  e->assign(static_cast<size_t>(H), 0.0);
  if (bound) bound->assign(static_cast<size_t>(H), 0.0);
  const double u = 0x1p-24;
  const double gamma_d = D * u / (1.0 - D * u);
  const double floor = 0x1p-140;
  if (opt.routing == Routing::kPooled) {
    eligible_blocks(in, opt, i, opt.misa_block, blocks);
    if (!blocks->empty()) {
      std::vector<const PooledKey*> pk;
      for (const Block& b : *blocks) pk.push_back(&pools->get(b.pool0, b.pool1));
      const RowMat dots = pooled_dots(in, i, pk);
      const int64_t nb = dots.rows();
      for (int h = 0; h < H; ++h) {
        double acc = 0.0;
        const double aw = std::fabs(static_cast<double>(in.w[i * H + h]));
        for (int64_t b = 0; b < nb; ++b) acc += aw * relu(dots(b, h));
        (*e)[h] = acc;
        if (bound) {
          double a = 0.0;  // sum over blocks and features of |q p|
          for (int64_t b = 0; b < nb; ++b)
            for (int x = 0; x < D; ++x)
              a += std::fabs(static_cast<double>(in.q[(i * H + h) * D + x]) * pk[b]->v[x]);
          (*bound)[h] = aw * (gamma_d + 3 * u) * a + (nb + 2) * u * std::fabs(acc) + floor;
        }
      }
    }
  } else if (opt.routing == Routing::kOwnKey) {
    if (in.ke[i] > in.ks[i]) {
      const int64_t j = in.ke[i] - 1;
      const double s = in.k_scale.empty() ? 1.0 : in.k_scale[j];
      for (int h = 0; h < H; ++h) {
        double dot = 0.0, a = 0.0;
        for (int dd = 0; dd < D; ++dd) {
          const double t = static_cast<double>(in.q[(i * H + h) * D + dd]) * in.k[j * D + dd];
          dot += t;
          a += std::fabs(t);
        }
        const double w = in.w[i * H + h];
        (*e)[h] = w * relu(s * dot);
        if (bound) (*bound)[h] = std::fabs(w) * s * gamma_d * a + 3 * u * std::fabs((*e)[h]) + floor;
      }
    }
  } else {  // q-norm
    for (int h = 0; h < H; ++h) {
      double n2 = 0.0;
      for (int dd = 0; dd < D; ++dd) {
        const double x = in.q[(i * H + h) * D + dd];
        n2 += x * x;
      }
      const double qs = in.q_scale.empty() ? 1.0 : in.q_scale[i * H + h];
      (*e)[h] = qs * std::sqrt(n2);
      if (bound) (*bound)[h] = (*e)[h] * (gamma_d / 2 + 3 * u) + floor;
    }
  }
}

/// MISA active heads of query i (SPEC 5.2-5.5), ascending.
std::vector<int> route_heads(const Inputs& in, const Options& opt, int64_t i, PoolCache* pools,
                             std::vector<Block>* blocks) {
  const int H = in.shape.h;
  std::vector<double> ed;
  router_scores(in, opt, i, pools, blocks, &ed, nullptr);
  std::vector<float> e(H);
  for (int h = 0; h < H; ++h) e[h] = static_cast<float>(ed[h]);
  std::vector<int64_t> all(H);
  for (int h = 0; h < H; ++h) all[h] = h;
  std::vector<int64_t> top = top_positions(e, all, opt.misa_heads);
  std::vector<int> heads(top.begin(), top.end());
  std::sort(heads.begin(), heads.end());
  return heads;
}

/// HISA candidates of query i (SPEC 4.4-4.6): appended scored keys of the kept blocks.
void hisa_candidates(const Inputs& in, const Options& opt, int64_t i, PoolCache* pools,
                     RowScorer* scorer, std::vector<Block>* blocks, std::vector<Scored>* out) {
  const int H = in.shape.h;
  eligible_blocks(in, opt, i, opt.hisa_block, blocks);
  const int64_t nb = static_cast<int64_t>(blocks->size());
  std::vector<char> keep(nb, 0);
  const int64_t m = opt.hisa_m;
  if (nb <= m && !opt.hisa_topm_plus_ends) {
    std::fill(keep.begin(), keep.end(), 1);
  } else if (nb > 0) {
    std::vector<const PooledKey*> pk;
    for (const Block& b : *blocks) pk.push_back(&pools->get(b.pool0, b.pool1));
    const RowMat dots = pooled_dots(in, i, pk);
    std::vector<float> J(nb);
    for (int64_t b = 0; b < nb; ++b) {
      double acc = 0.0;
      const double sc = pk[b]->scale;
      for (int h = 0; h < H; ++h) acc += static_cast<double>(in.w[i * H + h]) * relu(sc * dots(b, h));
      J[b] = static_cast<float>(acc);
      if (opt.hisa_bf16_block_scores) J[b] = round_to_bf16(J[b]);
    }
    keep[0] = keep[nb - 1] = 1;
    std::vector<int64_t> pool;
    if (opt.hisa_topm_plus_ends) {
      for (int64_t b = 0; b < nb; ++b) pool.push_back(b);
      for (int64_t b : top_positions(J, pool, m)) keep[b] = 1;
    } else {
      for (int64_t b = 1; b + 1 < nb; ++b) pool.push_back(b);
      for (int64_t b : top_positions(J, pool, m - 2)) keep[b] = 1;
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    if (keep[b]) scorer->score_range(i, (*blocks)[b].vis0, (*blocks)[b].vis1, nullptr, 0, out);
  }
}

void write_logits(const std::vector<Scored>& row, int64_t i, const LogitsLayout& lay, Result* out) {
  float* dst = out->logits.data() + i * lay.width;
  const int64_t base = lay.col_base ? (*lay.col_base)[i] : 0;
  for (const Scored& s : row) dst[s.key - base] = s.score;
}

Status run_impl(Path path, const Inputs& in, const Options& opt, bool own_key_ok,
                const LogitsLayout& lay_in, Result* out) {
  INDEXLAB_RETURN_IF_ERROR(validate(in, opt));
  INDEXLAB_RETURN_IF_ERROR(validate_options(path, in.shape, opt));
  const bool routed = path == Path::kMisa || path == Path::kMisaDagger;
  if (routed && opt.routing == Routing::kOwnKey && !own_key_ok) {
    return error("routing own_key is defined for paged decode with next_n = 1 only (got next_n > 1)");
  }
  const Shape& s = in.shape;
  LogitsLayout lay = lay_in;
  if (lay.width < 0) lay.width = s.nk;
  Result r;
  r.nq = s.nq;
  r.k = s.k;
  r.index.assign(s.nq * s.k, -1);
  r.score.assign(s.nq * s.k, -INFINITY);
  r.bound.assign(s.nq * s.k, 0.0f);
  r.ambiguous.assign(s.nq, 0);
  if (opt.want_logits) {
    r.logits_cols = lay.width;
    r.logits.assign(s.nq * lay.width, -INFINITY);
  }
  if (routed) r.active_heads.assign(s.nq * opt.misa_heads, -1);
  const int nt = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  auto offset = [&](int64_t i) {
    return opt.index_base == IndexBase::kRelative ? in.ks[i] : 0;
  };
  auto finish_row = [&](int64_t i, std::vector<Scored>* row) {
    if (opt.want_logits) write_logits(*row, i, lay, &r);
    r.ambiguous[i] = select_top_k(row, s.k, offset(i), &r.index[i * s.k], &r.score[i * s.k],
                                  &r.bound[i * s.k]);
  };

  if (path == Path::kDsa) {
    // Tiles of consecutive rows share key tiles when their ranges overlap well.
    constexpr int64_t kTile = 8;
    const int64_t ntiles = (s.nq + kTile - 1) / kTile;
    // Few tiles (decode): split each row's keys across the threads instead of the rows.
    const bool split_keys = ntiles < 2 * nt;
    auto do_tile = [&](int64_t tIdx, std::vector<std::vector<Scored>>& rows, int key_threads) {
      const int64_t i0 = tIdx * kTile, i1 = std::min(s.nq, i0 + kTile);
      int64_t lo = INT64_MAX, hi = 0, sum = 0;
      for (int64_t i = i0; i < i1; ++i) {
        if (in.ks[i] >= in.ke[i]) continue;
        lo = std::min<int64_t>(lo, in.ks[i]);
        hi = std::max<int64_t>(hi, in.ke[i]);
        sum += in.ke[i] - in.ks[i];
      }
      const bool shared = hi > lo && 2 * sum >= (i1 - i0) * (hi - lo) && (hi - lo) <= (1 << 18);
      if (shared) {
        score_dsa_tile(in, i0, i1, &rows, key_threads);
        for (int64_t i = i0; i < i1; ++i) finish_row(i, &rows[i - i0]);
      } else {
        for (int64_t i = i0; i < i1; ++i) {
          score_dsa_tile(in, i, i + 1, &rows, key_threads);
          finish_row(i, &rows[0]);
        }
      }
    };
    if (split_keys) {
      std::vector<std::vector<Scored>> rows;
      for (int64_t tIdx = 0; tIdx < ntiles; ++tIdx) do_tile(tIdx, rows, nt);
    } else {
#pragma omp parallel num_threads(nt)
      {
        std::vector<std::vector<Scored>> rows;
#pragma omp for schedule(dynamic, 1)
        for (int64_t tIdx = 0; tIdx < ntiles; ++tIdx) do_tile(tIdx, rows, 1);
      }
    }
  } else {
#pragma omp parallel num_threads(nt)
    {
      RowScorer scorer(in);
      PoolCache pools(in, path == Path::kHisa);
      std::vector<Block> blocks;
      std::vector<Scored> row;
#pragma omp for schedule(dynamic, 4)
      for (int64_t i = 0; i < s.nq; ++i) {
        row.clear();
        if (path == Path::kHisa) {
          hisa_candidates(in, opt, i, &pools, &scorer, &blocks, &row);
          finish_row(i, &row);
          continue;
        }
        const std::vector<int> heads = route_heads(in, opt, i, &pools, &blocks);
        std::copy(heads.begin(), heads.end(), &r.active_heads[i * opt.misa_heads]);
        scorer.score_range(i, in.ks[i], in.ke[i], heads.data(), static_cast<int>(heads.size()), &row);
        if (path == Path::kMisa) {
          finish_row(i, &row);
          continue;
        }
        // MISA-dagger stage 1: top K1 by the MISA score; stage 2: full DSA rescoring.
        const int64_t k1 = std::min<int64_t>(opt.dagger_k1, static_cast<int64_t>(row.size()));
        std::vector<int32_t> idx(k1);
        std::vector<float> sc(k1), bd(k1);
        select_top_k(&row, static_cast<int>(k1), 0, idx.data(), sc.data(), bd.data());
        std::vector<int32_t> keys;
        for (int32_t j : idx)
          if (j >= 0) keys.push_back(j);
        std::sort(keys.begin(), keys.end());
        row.clear();
        scorer.score_list(i, keys.data(), static_cast<int64_t>(keys.size()), nullptr, 0, &row);
        finish_row(i, &row);
      }
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace

Status run(Path path, const Inputs& in, const Options& opt, Result* out) {
  if (out == nullptr) return error("run: out is null");
  return run_impl(path, in, opt, true, LogitsLayout{}, out);
}

Status flatten_paged(const PagedInputs& in, const Options& opt, Inputs* flat,
                     std::vector<int64_t>* slot_of_key) {
  INDEXLAB_RETURN_IF_ERROR(validate(in, opt));
  const int D = in.d, eb = element_bytes(in.precision);
  const int64_t pb = in.page_bytes();
  int64_t total = 0;
  for (int64_t b = 0; b < in.batch; ++b) total += in.context_lens[b];
  Inputs f;
  f.precision = in.precision;
  f.shape = Shape{in.rows(), total, in.h, in.d, in.k};
  f.q = in.q;
  f.w = in.w;
  f.q_scale = in.q_scale;
  f.k.resize(static_cast<size_t>(total) * D);
  f.k_scale.resize(static_cast<size_t>(total));
  f.ks.resize(in.rows());
  f.ke.resize(in.rows());
  f.seq_end.resize(in.rows());
  f.block_origin.resize(in.rows());
  if (slot_of_key) slot_of_key->resize(static_cast<size_t>(total));
  int64_t off = 0;
  for (int64_t b = 0; b < in.batch; ++b) {
    const int64_t ctx = in.context_lens[b];
    for (int64_t t = 0; t < ctx; ++t) {
      const int64_t page = in.block_table[b * in.max_pages + t / in.page_tokens];
      const int64_t slot = t % in.page_tokens;
      const uint8_t* base = &in.cache[page * pb];
      const uint8_t* val = base + slot * D * eb;
      float* dst = &f.k[(off + t) * D];
      for (int dd = 0; dd < D; ++dd) {
        float x;
        if (in.precision == Precision::kFp8) {
          x = e4m3_to_float(val[dd]);
        } else if (in.precision == Precision::kBf16) {
          x = bf16_to_float(static_cast<uint16_t>(val[2 * dd] | (val[2 * dd + 1] << 8)));
        } else {
          std::memcpy(&x, val + 4 * dd, 4);
        }
        if (!std::isfinite(x) && !opt.allow_nonfinite) {
          return error("cache page ", page, " slot ", slot, " (sequence ", b, ", position ", t,
                       ") element ", dd, " = ", x, " is not finite");
        }
        dst[dd] = x;
      }
      float sc;
      std::memcpy(&sc, base + static_cast<int64_t>(in.page_tokens) * D * eb + slot * 4, 4);
      if (!(sc > 0.0f) || !std::isfinite(sc)) {
        return error("cache page ", page, " slot ", slot, " (sequence ", b, ", position ", t,
                     ") scale = ", sc, " must be positive and finite");
      }
      f.k_scale[off + t] = sc;
      if (slot_of_key) (*slot_of_key)[off + t] = page * in.page_tokens + slot;
    }
    for (int r = 0; r < in.next_n; ++r) {
      const int64_t row = b * in.next_n + r;
      const int64_t vis = std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - in.next_n + r + 1));
      f.ks[row] = static_cast<int32_t>(off);
      f.ke[row] = static_cast<int32_t>(off + vis);
      f.seq_end[row] = static_cast<int32_t>(off + ctx);
      f.block_origin[row] = static_cast<int32_t>(off);
    }
    off += ctx;
  }
  *flat = std::move(f);
  return Status::Ok();
}

Status run_paged(Path path, const PagedInputs& in, const Options& opt, Result* out) {
  if (out == nullptr) return error("run_paged: out is null");
  Inputs flat;
  std::vector<int64_t> slots;
  INDEXLAB_RETURN_IF_ERROR(flatten_paged(in, opt, &flat, &slots));
  std::vector<int64_t> col_base(flat.shape.nq);
  for (int64_t i = 0; i < flat.shape.nq; ++i) col_base[i] = flat.ks[i];
  LogitsLayout lay{&col_base, in.max_pages * in.page_tokens};
  Options o = opt;
  o.index_base = IndexBase::kRelative;
  Result r;
  INDEXLAB_RETURN_IF_ERROR(run_impl(path, flat, o, in.next_n == 1, lay, &r));
  INDEXLAB_RETURN_IF_ERROR(paged_indices_to_slots(in, opt, flat, slots, &r));
  *out = std::move(r);
  return Status::Ok();
}

Status paged_indices_to_slots(const PagedInputs& in, const Options& opt, const Inputs& flat,
                              const std::vector<int64_t>& slot_of_key, Result* r) {
  if (opt.index_base != IndexBase::kAbsolute) return Status::Ok();
  if (in.num_pages * in.page_tokens > std::numeric_limits<int32_t>::max())
    return error("absolute slot indices need num_pages * page_tokens <= 2^31 - 1");
  for (int64_t i = 0; i < r->nq; ++i)
    for (int t = 0; t < r->k; ++t) {
      int32_t& x = r->index[i * r->k + t];
      if (x >= 0) x = static_cast<int32_t>(slot_of_key[flat.ks[i] + x]);
    }
  return Status::Ok();
}

void eligible_blocks(int64_t ks, int64_t ke, int64_t end_of_keys, int64_t origin, int64_t bsize,
                     const Options& opt, std::vector<Block>* out) {
  out->clear();
  if (ks >= ke || bsize < 1) return;
  const int64_t end = opt.strict_pooling ? ke : end_of_keys;
  int64_t first, last, base;
  if (opt.align == BlockAlign::kSequence) {
    base = ks;
    first = 0;
    last = (ke - ks + bsize - 1) / bsize - 1;
  } else {
    // Release alignment: a fixed grid over the buffer (over each sequence for paged problems).
    base = origin;
    first = (ks - base) / bsize;
    last = (ke - base + bsize - 1) / bsize - 1;
  }
  for (int64_t b = first; b <= last; ++b) {
    const int64_t b0 = base + b * bsize, b1 = b0 + bsize;
    out->push_back(Block{b0, std::min(b1, end), std::max(b0, ks), std::min(b1, ke)});
  }
}

void eligible_blocks(const Inputs& in, const Options& opt, int64_t i, int64_t bsize, std::vector<Block>* out) {
  eligible_blocks(in.ks[i], in.ke[i], in.seq_end.empty() ? in.shape.nk : in.seq_end[i],
                  in.block_origin.empty() ? 0 : in.block_origin[i], bsize, opt, out);
}

Status misa_router_scores(const Inputs& in, const Options& opt, int64_t i, std::vector<double>* e,
                          std::vector<double>* bound) {
  if (!e || !bound) return error("misa_router_scores: null output");
  if (i < 0 || i >= in.shape.nq) return error("misa_router_scores: row ", i, " is outside [0, ", in.shape.nq, ")");
  PoolCache pools(in, false);
  std::vector<Block> blocks;
  router_scores(in, opt, i, &pools, &blocks, e, bound);
  return Status::Ok();
}

Status hisa_block_scores(const Inputs& in, const Options& opt, int64_t i, HisaBlockScores* out) {
  if (!out) return error("hisa_block_scores: null output");
  if (i < 0 || i >= in.shape.nq) return error("hisa_block_scores: row ", i, " is outside [0, ", in.shape.nq, ")");
  if (in.precision != Precision::kFp8) return error("hisa_block_scores: fp8 problems only");
  const int H = in.shape.h, D = in.shape.d;
  HisaBlockScores r;
  eligible_blocks(in, opt, i, opt.hisa_block, &r.blocks);
  const int64_t nb = static_cast<int64_t>(r.blocks.size());
  PoolCache pools(in, true);
  std::vector<const PooledKey*> pk;
  for (const Block& b : r.blocks) pk.push_back(&pools.get(b.pool0, b.pool1));
  const RowMat dots = nb ? pooled_dots(in, i, pk) : RowMat();
  r.score.resize(nb);
  r.abs_dot.resize(nb);
  r.relu_sum.resize(nb);
  r.pool_flip.resize(nb);
  std::vector<float> mean(static_cast<size_t>(D));
  std::vector<double> spread(static_cast<size_t>(D));
  for (int64_t b = 0; b < nb; ++b) {
    const double sc = pk[b]->scale;
    double acc = 0.0, rs = 0.0, ad = 0.0;
    for (int h = 0; h < H; ++h) {
      const double w = in.w[i * H + h];
      acc += w * relu(sc * dots(b, h));
      rs += std::fabs(w) * relu(sc * dots(b, h));
      double a = 0.0;
      for (int x = 0; x < D; ++x) a += std::fabs(static_cast<double>(in.q[(i * H + h) * D + x]) * pk[b]->v[x]);
      ad += std::fabs(w) * sc * a;
    }
    r.score[b] = static_cast<float>(acc);
    if (opt.hisa_bf16_block_scores) r.score[b] = round_to_bf16(r.score[b]);
    r.abs_dot[b] = ad;
    r.relu_sum[b] = rs;
    // A kernel may sum the pooled keys in fp64 instead of exactly: its mean can then differ by
    // the fp64 error of the sum (plus one fp32 ulp), which can move a re-quantized code, or the
    // block scale through amax, by a step. Bound that per feature from the perturbed means.
    const int64_t j0 = r.blocks[b].pool0, j1 = r.blocks[b].pool1;
    pooled_mean(in, j0, j1, mean.data());
    const double cnt = static_cast<double>(j1 - j0);
    for (int x = 0; x < D; ++x) {
      double sa = 0.0;
      for (int64_t j = j0; j < j1; ++j)
        sa += std::fabs((in.k_scale.empty() ? 1.0 : in.k_scale[j]) * static_cast<double>(in.k[j * D + x]));
      spread[x] = (cnt - 1) * 0x1p-53 * sa / cnt;  // the fp64 sum's error bound, over the count
    }
    float amax = 0.0f;
    for (float v : mean) amax = std::max(amax, std::fabs(v));
    double amax_spread = 0.0;
    for (int x = 0; x < D; ++x)
      if (std::fabs(mean[x]) == amax) amax_spread = std::max(amax_spread, spread[x]);
    auto widen = [](float v, double e, bool up) {
      const float w = static_cast<float>(up ? v + e : v - e);
      return std::nextafter(w, up ? INFINITY : -INFINITY);
    };
    const float scale0 = std::max(amax / 448.0f, 1e-10f);
    const float amax_lo = std::max(0.0f, widen(amax, amax_spread, false)), amax_hi = widen(amax, amax_spread, true);
    const float scales[3] = {std::max(amax_lo / 448.0f, 1e-10f), scale0, std::max(amax_hi / 448.0f, 1e-10f)};
    double flip = 0.0;
    for (int h = 0; h < H; ++h) {
      double fh = 0.0;
      for (int x = 0; x < D; ++x) {
        const double base = static_cast<double>(e4m3_to_float(float_to_e4m3_satfinite(mean[x] / scale0))) * scale0;
        double dmax = 0.0;
        for (float m2 : {widen(mean[x], spread[x], false), mean[x], widen(mean[x], spread[x], true)})
          for (float s2 : scales)
            dmax = std::max(dmax, std::fabs(static_cast<double>(e4m3_to_float(float_to_e4m3_satfinite(m2 / s2))) * s2 - base));
        fh += std::fabs(static_cast<double>(in.q[(i * H + h) * D + x])) * dmax;
      }
      flip += std::fabs(static_cast<double>(in.w[i * H + h])) * fh;
    }
    r.pool_flip[b] = flip;
  }
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace indexlab::ref
