/// Benchmark fixtures of the sparse paths: the shared synthetic problem, the DSA fixture on the
/// same shapes (the baseline every sparse path is compared with), and the dispatcher.
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "cuda/bench_random.h"
#include "cuda/bench_staged.cuh"
#include "cuda/sm90_host.cuh"
#include "cuda/sparse.h"
#include "cuda/sparse_detail.h"

namespace indexlab::cuda {
namespace detail {
namespace {


Status check_spec(const SparseBenchSpec& s) {
  if (s.sk < 1) return error("SparseBenchSpec: sk = ", s.sk, " must be >= 1");
  if (s.batch < 0) return error("SparseBenchSpec: batch = ", s.batch, " must be >= 0");
  if (s.batch == 0 && (s.sq < 1 || s.sq > s.sk))
    return error("SparseBenchSpec: sq = ", s.sq, " must lie in [1, sk = ", s.sk, "]");
  if (s.next_n < 1) return error("SparseBenchSpec: next_n = ", s.next_n, " must be >= 1");
  if (s.sk > INT32_MAX / 2) return error("SparseBenchSpec: sk = ", s.sk, " is too large");
  return can_implement(s.h, s.d, s.k);
}

/// DSA on a flat SparseBenchSpec: logits + top-k over row chunks that bound the logits buffer
/// (2 GiB), so 128K causal prefill fits.
class DsaFlatWorkload : public Workload {
 public:
  DeviceArray<uint8_t> q, k;
  DeviceArray<float> sc, w, logits, score;
  DeviceArray<int32_t> ks, ke, index;
  int64_t rows = 0, cols = 0, chunk = 0;
  int h = 0, d = 0, kk = 0;
  StageTimer timer;
  Status run(float* ms) override {
    INDEXLAB_RETURN_IF_ERROR(timer.begin());
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t rn = std::min(chunk, rows - r0);
      LogitsParams lp;
      lp.q = q.get() + r0 * h * d;
      lp.k = k.get();
      lp.k_scale = sc.get();
      lp.w = w.get() + r0 * h;
      lp.ks = ks.get() + r0;
      lp.ke = ke.get() + r0;
      lp.logits = logits.get();
      lp.nq = rn;
      lp.nk = cols;
      lp.ld = cols;
      lp.h = h;
      lp.d = d;
      lp.clean_logits = false;  // the top-k below reads only [ks, ke)
      INDEXLAB_RETURN_IF_ERROR(launch_mqa_logits_fp8(lp));
      INDEXLAB_RETURN_IF_ERROR(timer.mark("logits"));
      TopkParams tp;
      tp.logits = logits.get();
      tp.ks = ks.get() + r0;
      tp.ke = ke.get() + r0;
      tp.index = index.get() + r0 * kk;
      tp.score = score.get() + r0 * kk;
      tp.rows = rn;
      tp.cols = cols;
      tp.ld = cols;
      tp.k = kk;
      INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
      INDEXLAB_RETURN_IF_ERROR(timer.mark("topk"));
    }
    return timer.finish(ms, &stages);
  }
};

}  // namespace

Status make_synthetic_fp8(const SparseBenchSpec& spec, SyntheticFp8* out) {
  INDEXLAB_RETURN_IF_ERROR(check_spec(spec));
  uint64_t st = spec.seed;
  const int h = spec.h, d = spec.d;
  SyntheticFp8 s;
  s.rows = spec.batch > 0 ? spec.batch * spec.next_n : spec.sq;
  s.q.resize(static_cast<size_t>(s.rows) * h * d);
  for (auto& c : s.q) c = rand_code(st);
  s.w.resize(static_cast<size_t>(s.rows) * h);
  for (auto& v : s.w) v = 2.0f * rand_unit(st) - 0.7f;
  s.q_scale.resize(s.w.size());
  for (auto& v : s.q_scale) v = 0.25f + rand_unit(st);
  if (spec.batch == 0) {
    s.k.resize(static_cast<size_t>(spec.sk) * d);
    for (auto& c : s.k) c = rand_code(st);
    s.k_scale.resize(static_cast<size_t>(spec.sk));
    for (auto& v : s.k_scale) v = 0.5f + rand_unit(st);
    s.ks.assign(static_cast<size_t>(s.rows), 0);
    s.ke.resize(static_cast<size_t>(s.rows));
    for (int64_t i = 0; i < s.rows; ++i) {
      s.ke[i] = static_cast<int32_t>(spec.sk - spec.sq + i + 1);
      s.pairs += s.ke[i];
    }
  } else {
    s.max_pages = (spec.sk + 63) / 64;
    s.num_pages = spec.batch * s.max_pages;
    const int64_t pb = 64 * (d + 4);
    s.cache.resize(static_cast<size_t>(s.num_pages * pb));
    for (int64_t pg = 0; pg < s.num_pages; ++pg) {
      uint8_t* base = s.cache.data() + pg * pb;
      for (int64_t i = 0; i < 64 * d; ++i) base[i] = rand_code(st);
      float* scl = reinterpret_cast<float*>(base + 64 * d);
      for (int i = 0; i < 64; ++i) scl[i] = 0.5f + rand_unit(st);
    }
    s.block_table.resize(static_cast<size_t>(s.num_pages));
    std::iota(s.block_table.begin(), s.block_table.end(), 0);
    for (int64_t i = s.num_pages - 1; i > 0; --i) std::swap(s.block_table[i], s.block_table[splitmix(st) % (i + 1)]);
    s.context_lens.assign(static_cast<size_t>(spec.batch), static_cast<int32_t>(spec.sk));
    for (int64_t r = 0; r < s.rows; ++r) s.pairs += spec.sk - spec.next_n + (r % spec.next_n) + 1;
  }
  *out = std::move(s);
  return Status::Ok();
}

Status make_dsa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out) {
  INDEXLAB_RETURN_IF_ERROR(need_device());
  INDEXLAB_RETURN_IF_ERROR(check_spec(spec));
  if (spec.batch > 0)
    return make_decode_workload(spec.batch, spec.sk, spec.h, spec.d, spec.k, spec.next_n, false,
                                spec.seed, out);
  SyntheticFp8 s;
  INDEXLAB_RETURN_IF_ERROR(make_synthetic_fp8(spec, &s));
  auto wl = std::make_unique<DsaFlatWorkload>();
  wl->rows = s.rows;
  wl->cols = spec.sk;
  wl->h = spec.h;
  wl->d = spec.d;
  wl->kk = spec.k;
  wl->chunk = std::max<int64_t>(1, std::min<int64_t>(s.rows, (int64_t{1} << 29) / spec.sk));
  INDEXLAB_RETURN_IF_ERROR(wl->q.upload(s.q));
  INDEXLAB_RETURN_IF_ERROR(wl->k.upload(s.k));
  INDEXLAB_RETURN_IF_ERROR(wl->sc.upload(s.k_scale));
  INDEXLAB_RETURN_IF_ERROR(wl->w.upload(s.w));
  INDEXLAB_RETURN_IF_ERROR(wl->ks.upload(s.ks));
  INDEXLAB_RETURN_IF_ERROR(wl->ke.upload(s.ke));
  INDEXLAB_RETURN_IF_ERROR(wl->logits.alloc(static_cast<size_t>(wl->chunk * spec.sk)));
  INDEXLAB_RETURN_IF_ERROR(wl->index.alloc(static_cast<size_t>(s.rows) * spec.k));
  INDEXLAB_RETURN_IF_ERROR(wl->score.alloc(static_cast<size_t>(s.rows) * spec.k));
  wl->flops = s.pairs * 2.0 * spec.h * spec.d;
  wl->bytes = static_cast<double>(s.rows) * (spec.h * spec.d + 4.0 * spec.h + 8.0 * spec.k) +
              static_cast<double>(spec.sk) * (spec.d + 4);
  *out = std::move(wl);
  return Status::Ok();
}

}  // namespace detail

Status make_sparse_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out) {
  if (!out) return error("out is null");
  switch (spec.path) {
    case ref::Path::kDsa: return detail::make_dsa_workload(spec, out);
    case ref::Path::kHisa: return detail::make_hisa_workload(spec, out);
    case ref::Path::kMisa:
    case ref::Path::kMisaDagger: return detail::make_misa_workload(spec, out);
  }
  return error("unknown path");
}

}  // namespace indexlab::cuda
