/// Emulation of the sm90 MISA and MISA-dagger kernels (cuda/sm90_misa.cu), bit for bit: the
/// router's fp32 order (emulate_sm90_sparse.h), the padded compact-head DSA logits, canonical
/// selections.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

#include "reference/emulate_sm90_dsa.h"
#include "reference/blocks.h"
#include "reference/emulate_sm90_sparse.h"
#include "reference/scoring.h"

namespace indexlab::ref {

void misa_router_blocks(int64_t ks, int64_t ke, int64_t end_of_keys, int64_t origin,
                        const Options& opt, std::vector<RouterBlock>* out) {
  std::vector<Block> blocks;
  eligible_blocks(ks, ke, end_of_keys, origin, std::max(1, opt.misa_block), opt, &blocks);
  out->clear();
  for (const Block& b : blocks) out->push_back(RouterBlock{b.pool0, b.pool1});
}

int misa_padded_heads(int h) {
  for (int p : {8, 16, 32, 64, 128})
    if (p >= h) return p;
  return 0;
}

float misa_router_dot(const float* a, const float* b, int d) {
  float acc = 0.0f;
  for (int x = 0; x < d; ++x) acc = std::fma(a[x], b[x], acc);
  return acc;
}

void misa_top_heads(const std::vector<float>& e, int h, int* heads) {
  const int H = static_cast<int>(e.size());
  std::vector<int> order(static_cast<size_t>(H));
  std::iota(order.begin(), order.end(), 0);
  const int take = std::min(h, H);
  std::partial_sort(order.begin(), order.begin() + take, order.end(),
                    [&](int a, int b) { return ranks_before(e[a], a, e[b], b); });
  std::sort(order.begin(), order.begin() + take);
  for (int t = 0; t < take; ++t) heads[t] = order[t];
}

namespace {

using PoolMemo = std::map<std::pair<int64_t, int64_t>, EmulatedPool>;

void row_blocks(const Inputs& in, const Options& opt, int64_t i, std::vector<RouterBlock>* out) {
  misa_router_blocks(in.ks[i], in.ke[i], in.seq_end.empty() ? in.shape.nk : in.seq_end[i],
                     in.block_origin.empty() ? 0 : in.block_origin[i], opt, out);
}

void fill_pools(const Inputs& in, const Options& opt, int64_t i, PoolMemo* memo) {
  std::vector<RouterBlock> blocks;
  row_blocks(in, opt, i, &blocks);
  for (const RouterBlock& b : blocks) {
    auto key = std::make_pair(b.begin, b.end);
    if (memo->count(key)) continue;
    EmulatedPool p;
    emulate_sm90_pool(in, b.begin, b.end, false, &p);
    memo->emplace(key, std::move(p));
  }
}

/// Router scores of row i; pooled routing reads its pools from memo (filled beforehand).
void router_row(const Inputs& in, const Options& opt, int64_t i, const PoolMemo& memo,
                std::vector<float>* e) {
  const int H = in.shape.h, D = in.shape.d;
  e->assign(static_cast<size_t>(H), 0.0f);
  const float* q = in.q.data() + i * H * D;
  if (opt.routing == Routing::kPooled) {
    std::vector<RouterBlock> blocks;
    row_blocks(in, opt, i, &blocks);
    for (int g = 0; g < H; ++g) {
      const float aw = std::fabs(in.w[i * H + g]);
      float acc = 0.0f;
      for (const RouterBlock& b : blocks) {
        const EmulatedPool& p = memo.at(std::make_pair(b.begin, b.end));
        const float r = misa_router_relu(misa_router_dot(q + g * D, p.value.data(), D));
        acc = acc + aw * r;
      }
      (*e)[g] = acc;
    }
  } else if (opt.routing == Routing::kOwnKey) {
    if (in.ke[i] > in.ks[i]) {
      const int64_t j = in.ke[i] - 1;
      const float s = in.k_scale.empty() ? 1.0f : in.k_scale[j];
      for (int g = 0; g < H; ++g) {
        const float dot = misa_router_dot(q + g * D, in.k.data() + j * D, D);
        (*e)[g] = in.w[i * H + g] * misa_router_relu(s * dot);
      }
    }
  } else {
    for (int g = 0; g < H; ++g) {
      const float n2 = misa_router_dot(q + g * D, q + g * D, D);
      const float qs = in.q_scale.empty() ? 1.0f : in.q_scale[i * H + g];
      (*e)[g] = qs * std::sqrt(n2);
    }
  }
}

struct Layout {
  const std::vector<int64_t>* col_base = nullptr;  // null: column = key
  int64_t width = -1;                               // -1: nk
};

Status misa_impl(Path path, const Inputs& in, const Options& opt, bool own_key_ok,
                 const Layout& lay_in, Result* out) {
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(validate(in, opt));
  INDEXLAB_RETURN_IF_ERROR(validate_options(path, in.shape, opt));
  if (in.precision != Precision::kFp8)
    return error("precision = ", precision_name(in.precision), " is not emulated (need fp8)");
  if (opt.routing == Routing::kOwnKey && !own_key_ok)
    return error("routing own_key is defined for paged decode with next_n = 1 only (got next_n > 1)");
  const bool dagger = path == Path::kMisaDagger;
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int H = in.shape.h, D = in.shape.d, K = in.shape.k, h = opt.misa_heads;
  const int hp = misa_padded_heads(h);
  if (hp == 0) return error("misa_heads = ", h, " is more than the kernels' 128 heads");
  if (dagger && misa_padded_heads(H) != H)
    return error("h = ", H, " is not one of 8, 16, 32, 64, 128 (MISA-dagger rescores all heads)");
  Layout lay = lay_in;
  if (lay.width < 0) lay.width = nk;
  PoolMemo memo;
  if (opt.routing == Routing::kPooled)
    for (int64_t i = 0; i < nq; ++i) fill_pools(in, opt, i, &memo);

  Result r;
  r.nq = nq;
  r.k = K;
  r.index.assign(static_cast<size_t>(nq * K), -1);
  r.score.assign(static_cast<size_t>(nq * K), -INFINITY);
  r.active_heads.assign(static_cast<size_t>(nq * h), -1);
  if (opt.want_logits) {
    r.logits_cols = lay.width;
    r.logits.assign(static_cast<size_t>(nq * lay.width), -INFINITY);
  }
  const int nt = opt.threads > 0 ? opt.threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> e, qa(static_cast<size_t>(hp) * D), wa(static_cast<size_t>(hp));
    std::vector<Scored> row;
    std::vector<int32_t> idx;
    std::vector<float> sc, bd;
    std::vector<float> dummy(static_cast<size_t>(K));
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < nq; ++i) {
      router_row(in, opt, i, memo, &e);
      int* heads = r.active_heads.data() + i * h;
      misa_top_heads(e, h, heads);
      std::fill(qa.begin(), qa.end(), 0.0f);
      std::fill(wa.begin(), wa.end(), 0.0f);
      for (int t = 0; t < h; ++t) {
        std::copy_n(in.q.data() + (i * H + heads[t]) * D, D, qa.data() + t * D);
        wa[t] = in.w[i * H + heads[t]];
      }
      const int64_t a = std::max<int64_t>(0, in.ks[i]), b = std::min<int64_t>(nk, in.ke[i]);
      const int64_t cb = lay.col_base ? (*lay.col_base)[i] : 0;
      float* lrow = opt.want_logits ? r.logits.data() + i * lay.width : nullptr;
      row.clear();
      for (int64_t j = a; j < b; ++j) {
        const float s = in.k_scale.empty() ? 1.0f : in.k_scale[j];
        const float v = emulate_sm90_dsa_logit(qa.data(), wa.data(), hp, D, in.k.data() + j * D, s);
        row.push_back(Scored{v, 0.0f, static_cast<int32_t>(j), 0});
        if (lrow && !dagger) lrow[j - cb] = v;
      }
      const int32_t off = opt.index_base == IndexBase::kRelative ? in.ks[i] : 0;
      if (!dagger) {
        select_top_k(&row, K, off, r.index.data() + i * K, r.score.data() + i * K, dummy.data());
        continue;
      }
      // Stage 1: top K1 by the MISA score (keys ascending afterwards); stage 2: all heads.
      const int64_t k1 = std::min<int64_t>(opt.dagger_k1, static_cast<int64_t>(row.size()));
      idx.assign(static_cast<size_t>(std::max<int64_t>(k1, 1)), -1);
      sc.assign(idx.size(), 0.0f);
      bd.assign(idx.size(), 0.0f);
      if (k1 > 0) select_top_k(&row, static_cast<int>(k1), 0, idx.data(), sc.data(), bd.data());
      std::vector<int32_t> keys;
      for (int64_t t = 0; t < k1; ++t)
        if (idx[t] >= 0) keys.push_back(idx[t]);
      std::sort(keys.begin(), keys.end());
      row.clear();
      for (int32_t j : keys) {
        const float s = in.k_scale.empty() ? 1.0f : in.k_scale[j];
        const float v = emulate_sm90_dsa_logit(in.q.data() + i * H * D, in.w.data() + i * H, H, D,
                                               in.k.data() + static_cast<int64_t>(j) * D, s);
        row.push_back(Scored{v, 0.0f, j, 0});
        if (lrow) lrow[j - cb] = v;
      }
      select_top_k(&row, K, off, r.index.data() + i * K, r.score.data() + i * K, dummy.data());
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

Status misa_paged(Path path, const PagedInputs& in, const Options& opt, Result* out) {
  if (!out) return error("out is null");
  Inputs flat;
  std::vector<int64_t> slots;
  INDEXLAB_RETURN_IF_ERROR(flatten_paged(in, opt, &flat, &slots));
  std::vector<int64_t> col_base(static_cast<size_t>(flat.shape.nq));
  for (int64_t i = 0; i < flat.shape.nq; ++i) col_base[i] = flat.ks[i];
  Options o = opt;
  o.index_base = IndexBase::kRelative;
  Result r;
  INDEXLAB_RETURN_IF_ERROR(
      misa_impl(path, flat, o, in.next_n == 1, Layout{&col_base, in.max_pages * in.page_tokens}, &r));
  INDEXLAB_RETURN_IF_ERROR(paged_indices_to_slots(in, opt, flat, slots, &r));
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace

void emulate_sm90_misa_router(const Inputs& in, const Options& opt, int64_t i, std::vector<float>* e) {
  PoolMemo memo;
  if (opt.routing == Routing::kPooled) fill_pools(in, opt, i, &memo);
  router_row(in, opt, i, memo, e);
}

Status emulate_sm90_misa(const Inputs& in, const Options& opt, Result* out) {
  return misa_impl(Path::kMisa, in, opt, true, Layout{}, out);
}
Status emulate_sm90_misa_dagger(const Inputs& in, const Options& opt, Result* out) {
  return misa_impl(Path::kMisaDagger, in, opt, true, Layout{}, out);
}
Status emulate_sm90_misa_paged(const PagedInputs& in, const Options& opt, Result* out) {
  return misa_paged(Path::kMisa, in, opt, out);
}
Status emulate_sm90_misa_dagger_paged(const PagedInputs& in, const Options& opt, Result* out) {
  return misa_paged(Path::kMisaDagger, in, opt, out);
}

}  // namespace indexlab::ref
