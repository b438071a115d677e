/// Emulation of the sm90 HISA kernels (cuda/sm90_hisa.cu): pooled blocks re-quantized as the
/// pooling kernel does, block scores and candidate scores as the fp8 logits kernel computes them,
/// canonical block selection and canonical top-K.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "reference/blocks.h"
#include "reference/emulate_sm90_dsa.h"
#include "reference/emulate_sm90_sparse.h"
#include "reference/numerics.h"
#include "reference/scoring.h"

namespace indexlab::ref {
namespace {

float key_scale(const Inputs& in, int64_t j) { return in.k_scale.empty() ? 1.0f : in.k_scale[j]; }

/// Canonical top-k of (score, key) pairs: only scores above -inf (NaN never), score descending,
/// key ascending; -1 / -inf padding.
void canonical_top_k(std::vector<std::pair<float, int32_t>>* c, int k, int32_t offset, int32_t* index,
                     float* score) {
  auto& v = *c;
  v.erase(std::remove_if(v.begin(), v.end(), [](const auto& x) { return !(x.first > -INFINITY); }), v.end());
  auto before = [](const auto& a, const auto& b) { return ranks_before(a.first, a.second, b.first, b.second); };
  const size_t take = std::min<size_t>(v.size(), static_cast<size_t>(k));
  std::partial_sort(v.begin(), v.begin() + take, v.end(), before);
  for (int t = 0; t < k; ++t) {
    if (static_cast<size_t>(t) < take) {
      index[t] = v[t].second - offset;
      score[t] = v[t].first;
    } else {
      index[t] = -1;
      score[t] = -INFINITY;
    }
  }
}

}  // namespace

Status emulate_sm90_hisa(const Inputs& in, const Options& opt, Result* out) {
  if (!out) return error("emulate_sm90_hisa: out is null");
  if (in.precision != Precision::kFp8) return error("emulate_sm90_hisa needs fp8 inputs");
  INDEXLAB_RETURN_IF_ERROR(validate(in, opt));
  INDEXLAB_RETURN_IF_ERROR(validate_options(Path::kHisa, in.shape, opt));
  const Shape& s = in.shape;
  const int h = s.h, d = s.d, K = s.k;
  if (h != 8 && h != 16 && h != 32 && h != 64 && h != 128)
    return error("h = ", h, " is not one of 8, 16, 32, 64, 128");
  Result r;
  r.nq = s.nq;
  r.k = K;
  r.index.assign(static_cast<size_t>(s.nq) * K, -1);
  r.score.assign(static_cast<size_t>(s.nq) * K, -INFINITY);
  if (opt.want_logits) {
    r.logits_cols = s.nk;
    r.logits.assign(static_cast<size_t>(s.nq * s.nk), -INFINITY);
  }
  const int nt = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const int64_t m = opt.hisa_m;
#pragma omp parallel num_threads(nt)
  {
    std::map<std::pair<int64_t, int64_t>, EmulatedPool> pools;
    std::vector<Block> blocks;
    std::vector<std::pair<float, int32_t>> cand;
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < s.nq; ++i) {
      eligible_blocks(in, opt, i, opt.hisa_block, &blocks);
      const int64_t nb = static_cast<int64_t>(blocks.size());
      const float* q = in.q.data() + i * h * d;
      const float* w = in.w.data() + i * h;
      std::vector<char> keep(static_cast<size_t>(nb), 0);
      if (nb <= m) {
        std::fill(keep.begin(), keep.end(), 1);
      } else {
        std::vector<float> J(static_cast<size_t>(nb));
        for (int64_t b = 0; b < nb; ++b) {
          const auto key = std::make_pair(blocks[b].pool0, blocks[b].pool1);
          auto it = pools.find(key);
          if (it == pools.end()) {
            EmulatedPool ep;
            emulate_sm90_pool(in, key.first, key.second, true, &ep);
            it = pools.emplace(key, std::move(ep)).first;
          }
          J[b] = emulate_sm90_dsa_logit(q, w, h, d, it->second.value.data(), it->second.scale);
          if (opt.hisa_bf16_block_scores && !std::isnan(J[b])) J[b] = round_to_bf16(J[b]);
        }
        keep[0] = keep[nb - 1] = 1;
        std::vector<int64_t> pool;
        const int64_t p0 = opt.hisa_topm_plus_ends ? 0 : 1, p1 = opt.hisa_topm_plus_ends ? nb : nb - 1;
        for (int64_t b = p0; b < p1; ++b) pool.push_back(b);
        const int64_t take = std::min<int64_t>(opt.hisa_topm_plus_ends ? m : m - 2, static_cast<int64_t>(pool.size()));
        if (take > 0) {
          std::partial_sort(pool.begin(), pool.begin() + take, pool.end(),
                            [&](int64_t a, int64_t b) { return ranks_before(J[a], a, J[b], b); });
          for (int64_t t = 0; t < take; ++t) keep[pool[t]] = 1;
        }
      }
      cand.clear();
      for (int64_t b = 0; b < nb; ++b) {
        if (!keep[b]) continue;
        for (int64_t j = blocks[b].vis0; j < blocks[b].vis1; ++j) {
          const float v = emulate_sm90_dsa_logit(q, w, h, d, in.k.data() + j * d, key_scale(in, j));
          cand.emplace_back(v, static_cast<int32_t>(j));
          if (opt.want_logits) r.logits[i * s.nk + j] = v;
        }
      }
      const int32_t off = opt.index_base == IndexBase::kRelative ? in.ks[i] : 0;
      canonical_top_k(&cand, K, off, &r.index[i * K], &r.score[i * K]);
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

Status emulate_sm90_hisa_paged(const PagedInputs& in, const Options& opt, Result* out) {
  if (!out) return error("emulate_sm90_hisa_paged: out is null");
  Inputs flat;
  std::vector<int64_t> slots;
  INDEXLAB_RETURN_IF_ERROR(flatten_paged(in, opt, &flat, &slots));
  // The sm90 kernels pool to the context length and place blocks on the sequence's positions:
  // both alignments give that grid on the flattened problem (block_origin = ks = offset).
  Options o = opt;
  o.index_base = IndexBase::kRelative;
  o.want_logits = opt.want_logits;
  Result fr;
  INDEXLAB_RETURN_IF_ERROR(emulate_sm90_hisa(flat, o, &fr));
  const int64_t rows = in.rows(), cols = in.max_pages * in.page_tokens, nk = flat.shape.nk;
  Result r;
  r.nq = rows;
  r.k = in.k;
  r.index = std::move(fr.index);
  r.score = std::move(fr.score);
  INDEXLAB_RETURN_IF_ERROR(paged_indices_to_slots(in, opt, flat, slots, &r));
  if (opt.want_logits) {
    r.logits_cols = cols;
    r.logits.assign(static_cast<size_t>(rows * cols), -INFINITY);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t off = flat.ks[i];
      const int64_t ctx = flat.seq_end[i] - off;
      for (int64_t t = 0; t < ctx && t < cols; ++t) r.logits[i * cols + t] = fr.logits[i * nk + off + t];
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace indexlab::ref
