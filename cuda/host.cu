/// Host entry points of the Hopper DSA kernels: device query, copies, launches, result assembly.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cuda/api.h"
#include "cuda/sm90_common.cuh"
#include "cuda/sm90_host.cuh"
#include "reference/numerics.h"

namespace indexlab::cuda {
namespace detail {
Status run_probe(const uint8_t* a, const uint8_t* b, const float* c, float* d, int scale_d);
Status run_probe_elem(bool bf16, const uint8_t* a, const uint8_t* b, const float* c, float* d,
                      int scale_d);

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = ref::float_to_bf16(v[i]);
  return out;
}

// Element storage of each precision's kernels and their device-pointer launchers.
template <bool kBf16>
struct ElemTraits {
  using T = uint8_t;
  using Logits = LogitsParams;
  using Paged = PagedLogitsParams;
  static constexpr ref::Precision kPrecision = ref::Precision::kFp8;
  static std::vector<T> encode(const std::vector<float>& v) { return to_e4m3(v); }
  static Status launch(const Logits& p) { return launch_mqa_logits_fp8(p); }
  static Status launch(const Paged& p) { return launch_paged_logits_fp8(p); }
};
template <>
struct ElemTraits<true> {
  using T = uint16_t;
  using Logits = LogitsBf16Params;
  using Paged = PagedLogitsBf16Params;
  static constexpr ref::Precision kPrecision = ref::Precision::kBf16;
  static std::vector<T> encode(const std::vector<float>& v) { return to_bf16(v); }
  static Status launch(const Logits& p) { return launch_mqa_logits_bf16(p); }
  static Status launch(const Paged& p) { return launch_paged_logits_bf16(p); }
};
}  // namespace detail

using detail::DeviceArray;

bool built_with_cuda() { return true; }

bool device_available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA driver or device: ") + cudaGetErrorString(e);
    cudaGetLastError();
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  cudaDeviceProp prop{};
  e = cudaGetDeviceProperties(&prop, 0);
  if (e != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(e);
    return false;
  }
  if (prop.major != 9 || prop.minor != 0) {
    if (why)
      *why = std::string("device 0 (") + prop.name + ") is sm_" + std::to_string(prop.major) +
             std::to_string(prop.minor) + "; the kernels are built for sm_90a (Hopper)";
    return false;
  }
  return true;
}

std::string device_name() {
  std::string why;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return "";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "";
  return prop.name;
}

using detail::need_device;

namespace {
template <bool kBf16>
Status dsa_flat(const ref::Inputs& in, const ref::Options& opt, ref::Result* out) {
  using Tr = detail::ElemTraits<kBf16>;
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(can_implement(in, opt, Tr::kPrecision));
  INDEXLAB_RETURN_IF_ERROR(need_device());
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int h = in.shape.h, d = in.shape.d, K = in.shape.k;
  std::vector<float> scale = in.k_scale;
  if (scale.empty()) scale.assign(static_cast<size_t>(nk), 1.0f);
  DeviceArray<typename Tr::T> dq, dk;
  DeviceArray<float> dsc, dw, dlog, dscore;
  DeviceArray<int32_t> dks, dke, didx;
  INDEXLAB_RETURN_IF_ERROR(dq.upload(Tr::encode(in.q)));
  INDEXLAB_RETURN_IF_ERROR(dk.upload(Tr::encode(in.k)));
  INDEXLAB_RETURN_IF_ERROR(dsc.upload(scale));
  INDEXLAB_RETURN_IF_ERROR(dw.upload(in.w));
  INDEXLAB_RETURN_IF_ERROR(dks.upload(in.ks));
  INDEXLAB_RETURN_IF_ERROR(dke.upload(in.ke));
  INDEXLAB_RETURN_IF_ERROR(didx.alloc(static_cast<size_t>(nq) * K));
  INDEXLAB_RETURN_IF_ERROR(dscore.alloc(static_cast<size_t>(nq) * K));
  const int64_t cr = detail::chunk_rows(nq, nk);
  INDEXLAB_RETURN_IF_ERROR(dlog.alloc(static_cast<size_t>(std::min(cr, nq) * nk)));
  out->nq = nq;
  out->k = K;
  out->index.assign(static_cast<size_t>(nq) * K, -1);
  out->score.assign(static_cast<size_t>(nq) * K, -INFINITY);
  out->bound.clear();
  out->ambiguous.clear();
  out->active_heads.clear();
  out->logits_cols = opt.want_logits ? nk : 0;
  out->logits.clear();
  if (opt.want_logits) out->logits.resize(static_cast<size_t>(nq * nk));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(didx, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(dscore, 0xFF));
  for (int64_t r0 = 0; r0 < nq; r0 += cr) {
    const int64_t rn = std::min(cr, nq - r0);
    INDEXLAB_RETURN_IF_ERROR(detail::poison(dlog, 0xFF));
    typename Tr::Logits lp;
    lp.q = dq.get() + r0 * h * d;
    lp.k = dk.get();
    lp.k_scale = dsc.get();
    lp.w = dw.get() + r0 * h;
    lp.ks = dks.get() + r0;
    lp.ke = dke.get() + r0;
    lp.logits = dlog.get();
    lp.nq = rn;
    lp.nk = nk;
    lp.ld = nk;
    lp.h = h;
    lp.d = d;
    // The top-k reads only [ks, ke); the -inf fill is for callers that want the logits.
    lp.clean_logits = opt.want_logits;
    INDEXLAB_RETURN_IF_ERROR(Tr::launch(lp));
    TopkParams tp;
    tp.logits = dlog.get();
    tp.ks = dks.get() + r0;
    tp.ke = dke.get() + r0;
    tp.index = didx.get() + r0 * K;
    tp.score = dscore.get() + r0 * K;
    tp.rows = rn;
    tp.cols = nk;
    tp.ld = nk;
    tp.k = K;
    tp.absolute = opt.index_base == ref::IndexBase::kAbsolute;
    INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
    INDEXLAB_RETURN_IF_ERROR(detail::sync_check());
    if (opt.want_logits) INDEXLAB_RETURN_IF_ERROR(dlog.download(out->logits.data() + r0 * nk, rn * nk));
  }
  INDEXLAB_RETURN_IF_ERROR(didx.download(out->index.data(), out->index.size()));
  INDEXLAB_RETURN_IF_ERROR(dscore.download(out->score.data(), out->score.size()));
  return Status::Ok();
}

template <bool kBf16>
Status dsa_paged(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out) {
  using Tr = detail::ElemTraits<kBf16>;
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(can_implement(in, opt, Tr::kPrecision));
  INDEXLAB_RETURN_IF_ERROR(need_device());
  const int h = in.h, d = in.d, K = in.k, nn = in.next_n;
  const int64_t rows = in.rows(), cols = in.max_pages * 64;
  std::vector<int32_t> ke(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t ctx = in.context_lens[r / nn];
    const int64_t v = ctx - nn + (r % nn) + 1;
    ke[r] = static_cast<int32_t>(std::max<int64_t>(0, std::min(ctx, v)));
  }
  DeviceArray<typename Tr::T> dq;
  DeviceArray<uint8_t> dcache;
  DeviceArray<float> dw, dlog, dscore;
  DeviceArray<int32_t> dbt, dctx, dke, didx;
  INDEXLAB_RETURN_IF_ERROR(dq.upload(Tr::encode(in.q)));
  INDEXLAB_RETURN_IF_ERROR(dw.upload(in.w));
  INDEXLAB_RETURN_IF_ERROR(dcache.upload(in.cache));
  INDEXLAB_RETURN_IF_ERROR(dbt.upload(in.block_table));
  INDEXLAB_RETURN_IF_ERROR(dctx.upload(in.context_lens));
  INDEXLAB_RETURN_IF_ERROR(dke.upload(ke));
  INDEXLAB_RETURN_IF_ERROR(didx.alloc(static_cast<size_t>(rows) * K));
  INDEXLAB_RETURN_IF_ERROR(dscore.alloc(static_cast<size_t>(rows) * K));
  const int64_t seq_chunk = std::max<int64_t>(1, detail::chunk_rows(rows, cols) / nn);
  INDEXLAB_RETURN_IF_ERROR(dlog.alloc(static_cast<size_t>(std::min(seq_chunk, in.batch) * nn * cols)));
  out->nq = rows;
  out->k = K;
  out->index.assign(static_cast<size_t>(rows) * K, -1);
  out->score.assign(static_cast<size_t>(rows) * K, -INFINITY);
  out->bound.clear();
  out->ambiguous.clear();
  out->active_heads.clear();
  out->logits_cols = opt.want_logits ? cols : 0;
  out->logits.clear();
  if (opt.want_logits) out->logits.resize(static_cast<size_t>(rows * cols));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(didx, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(dscore, 0xFF));
  for (int64_t b0 = 0; b0 < in.batch; b0 += seq_chunk) {
    const int64_t bn = std::min(seq_chunk, in.batch - b0);
    INDEXLAB_RETURN_IF_ERROR(detail::poison(dlog, 0xFF));
    const int64_t r0 = b0 * nn, rn = bn * nn;
    typename Tr::Paged pp;
    pp.q = dq.get() + r0 * h * d;
    pp.w = dw.get() + r0 * h;
    pp.cache = dcache.get();
    pp.block_table = dbt.get() + b0 * in.max_pages;
    pp.context_lens = dctx.get() + b0;
    pp.logits = dlog.get();
    pp.batch = bn;
    pp.max_pages = in.max_pages;
    pp.num_pages = in.num_pages;
    pp.ld = cols;
    pp.h = h;
    pp.d = d;
    pp.next_n = nn;
    INDEXLAB_RETURN_IF_ERROR(Tr::launch(pp));
    TopkParams tp;
    tp.logits = dlog.get();
    tp.ks = nullptr;
    tp.ke = dke.get() + r0;
    tp.index = didx.get() + r0 * K;
    tp.score = dscore.get() + r0 * K;
    tp.rows = rn;
    tp.cols = cols;
    tp.ld = cols;
    tp.k = K;
    tp.absolute = opt.index_base == ref::IndexBase::kAbsolute;
    tp.block_table = dbt.get() + b0 * in.max_pages;
    tp.max_pages = in.max_pages;
    tp.next_n = nn;
    INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
    INDEXLAB_RETURN_IF_ERROR(detail::sync_check());
    if (opt.want_logits)
      INDEXLAB_RETURN_IF_ERROR(dlog.download(out->logits.data() + r0 * cols, rn * cols));
  }
  INDEXLAB_RETURN_IF_ERROR(didx.download(out->index.data(), out->index.size()));
  INDEXLAB_RETURN_IF_ERROR(dscore.download(out->score.data(), out->score.size()));
  return Status::Ok();
}

}  // namespace

Status dsa_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out) {
  return dsa_flat<false>(in, opt, out);
}
Status dsa_bf16(const ref::Inputs& in, const ref::Options& opt, ref::Result* out) {
  return dsa_flat<true>(in, opt, out);
}
Status dsa_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out) {
  return dsa_paged<false>(in, opt, out);
}
Status dsa_paged_bf16(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out) {
  return dsa_paged<true>(in, opt, out);
}

Status mqa_logits_bf16(const ref::Inputs& in, std::vector<float>* logits) {
  if (!logits) return error("logits is null");
  ref::Options opt;
  opt.want_logits = true;
  ref::Result r;
  INDEXLAB_RETURN_IF_ERROR(dsa_bf16(in, opt, &r));
  *logits = std::move(r.logits);
  return Status::Ok();
}

Status mqa_logits_fp8(const ref::Inputs& in, std::vector<float>* logits) {
  if (!logits) return error("logits is null");
  ref::Options opt;
  opt.want_logits = true;
  ref::Result r;
  INDEXLAB_RETURN_IF_ERROR(dsa_fp8(in, opt, &r));
  *logits = std::move(r.logits);
  return Status::Ok();
}

Status topk_rows(const std::vector<float>& logits, int64_t rows, int64_t cols,
                 const std::vector<int32_t>& ks, const std::vector<int32_t>& ke, int k,
                 ref::IndexBase base, std::vector<int32_t>* index, std::vector<float>* score,
                 int64_t min_len_hint) {
  if (!index || !score) return error("index and score must not be null");
  if (rows < 0 || cols < 0) return error("rows = ", rows, ", cols = ", cols, " must be >= 0");
  if (static_cast<int64_t>(logits.size()) != rows * cols)
    return error("logits has ", logits.size(), " elements, expected rows * cols = ", rows * cols);
  if (!ks.empty() && static_cast<int64_t>(ks.size()) != rows)
    return error("ks has ", ks.size(), " elements, expected ", rows);
  if (!ke.empty() && static_cast<int64_t>(ke.size()) != rows)
    return error("ke has ", ke.size(), " elements, expected ", rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t a = ks.empty() ? 0 : ks[r], b = ke.empty() ? cols : ke[r];
    if (a < 0 || a > cols) return error("ks[", r, "] = ", a, " is outside [0, ", cols, "]");
    if (b < a || b > cols) return error("ke[", r, "] = ", b, " is outside [ks, ", cols, "]");
  }
  if (k < 1 || k > kMaxTopK) return error("k = ", k, " is outside [1, ", kMaxTopK, "]");
  INDEXLAB_RETURN_IF_ERROR(need_device());
  DeviceArray<float> dl, ds;
  DeviceArray<int32_t> dks, dke, di;
  INDEXLAB_RETURN_IF_ERROR(dl.upload(logits));
  INDEXLAB_RETURN_IF_ERROR(dks.upload(ks));
  INDEXLAB_RETURN_IF_ERROR(dke.upload(ke));
  INDEXLAB_RETURN_IF_ERROR(di.alloc(static_cast<size_t>(rows) * k));
  INDEXLAB_RETURN_IF_ERROR(ds.alloc(static_cast<size_t>(rows) * k));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(di, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(ds, 0xFF));
  TopkParams tp;
  tp.logits = dl.get();
  tp.ks = ks.empty() ? nullptr : dks.get();
  tp.ke = ke.empty() ? nullptr : dke.get();
  tp.index = di.get();
  tp.score = ds.get();
  tp.rows = rows;
  tp.cols = cols;
  tp.ld = cols;
  tp.k = k;
  tp.absolute = base == ref::IndexBase::kAbsolute;
  tp.min_len_hint = min_len_hint;
  INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
  INDEXLAB_RETURN_IF_ERROR(detail::sync_check());
  index->resize(static_cast<size_t>(rows) * k);
  score->resize(static_cast<size_t>(rows) * k);
  INDEXLAB_RETURN_IF_ERROR(di.download(index->data(), index->size()));
  INDEXLAB_RETURN_IF_ERROR(ds.download(score->data(), score->size()));
  return Status::Ok();
}

Status probe_wgmma_fp8(const uint8_t* a, const uint8_t* b, const float* c, float* d, bool use_acc) {
  if (!a || !b || !c || !d) return error("probe_wgmma_fp8: null argument");
  INDEXLAB_RETURN_IF_ERROR(need_device());
  INDEXLAB_RETURN_IF_ERROR(detail::run_probe(a, b, c, d, use_acc ? 1 : 0));
  return detail::sync_check();
}

Status probe_wgmma_bf16(const uint16_t* a, const uint16_t* b, const float* c, float* d, bool use_acc) {
  if (!a || !b || !c || !d) return error("probe_wgmma_bf16: null argument");
  INDEXLAB_RETURN_IF_ERROR(need_device());
  uint8_t ab[64 * 32], bb[8 * 32];  // little-endian bytes, 32 per row (16 bf16)
  std::memcpy(ab, a, sizeof(ab));
  std::memcpy(bb, b, sizeof(bb));
  INDEXLAB_RETURN_IF_ERROR(detail::run_probe_elem(true, ab, bb, c, d, use_acc ? 1 : 0));
  return detail::sync_check();
}

}  // namespace indexlab::cuda
