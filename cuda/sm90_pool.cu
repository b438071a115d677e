/// Block pooling for HISA and MISA (SPEC 4.2 / 5.1): fp32 means of dequantized keys, optionally
/// re-quantized per block to e4m3. The operation order is fixed (sparse.h) and emulated bit for bit
/// by ref::emulate_sm90_pool. Also the incremental pooled cache of a paged decode cache
/// (PagedPooledCache, used by HISA and MISA decode).
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/pooled_cache.h"
#include "cuda/sm90_common.cuh"
#include "cuda/sm90_host.cuh"
#include "cuda/sparse.h"

namespace indexlab::cuda {
namespace detail {
namespace {

constexpr int kPoolThreads = 128;  // one thread per feature (d <= 128)
constexpr int kPoolTile = 32;      // keys per shared-memory tile
constexpr int kPoolStages = 4;     // cp.async pipeline depth

__device__ __forceinline__ float e4m3_decode(uint8_t code) {
  __nv_fp8_e4m3 v;
  v.__x = code;
  return static_cast<float>(v);
}

// The per-block re-quantization of SPEC 4.2, shared by both pooling kernels; every thread of the
// CTA (kPoolThreads, thread x owning feature x < d) calls it with its feature's mean. scale =
// max(amax / 448, 1e-10) over the block's |mean|, codes = e4m3 satfinite(mean / scale). A block
// that could not be read gets code 0x7F (NaN) and a NaN scale: never a silent value.
__device__ __forceinline__ void requantize_block(float mean, bool bad, int x, int d, float* red,
                                                 uint8_t* codes, float* scale_out) {
  float a = x < d ? fabsf(mean) : 0.0f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  if ((x & 31) == 0) red[x / 32] = a;
  __syncthreads();
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kPoolThreads / 32; ++i) amax = fmaxf(amax, red[i]);
  const float scale = fmaxf(__fdiv_rn(amax, 448.0f), 1e-10f);
  if (x < d)
    codes[x] = bad ? static_cast<uint8_t>(0x7F)
                   : static_cast<uint8_t>(__nv_cvt_float_to_fp8(__fdiv_rn(mean, scale), __NV_SATFINITE, __NV_E4M3));
  if (x == 0 && scale_out) *scale_out = bad ? __int_as_float(0x7FC00000) : scale;
}

// One CTA per pooled block. The block's keys stream through shared memory in tiles of kPoolTile
// (16-byte cp.async, kPoolStages deep); thread x owns feature x and adds the keys in ascending
// order. A key that cannot be read (flat index out of range, bad page id) makes the block NaN.
__global__ void __launch_bounds__(kPoolThreads) pool_kernel(const PoolParams p) {
  __shared__ __align__(16) uint8_t codes[kPoolStages][kPoolTile * 128];
  __shared__ float scl[kPoolStages][kPoolTile];
  __shared__ float red[kPoolThreads / 32];
  __shared__ int bad_s;
  const int tid = threadIdx.x, d = p.d, chunks = d / 16;
  const int64_t t = blockIdx.x;
  const int64_t j0 = p.begin[t], j1 = p.end[t];
  const bool paged = p.cache != nullptr;
  const int64_t page_bytes = static_cast<int64_t>(64) * (d + 4);
  const int32_t sq = paged ? p.seq[t] : 0;
  if (tid == 0) bad_s = j1 <= j0 ? 1 : 0;
  __syncthreads();
  const int64_t ntiles = j1 > j0 ? (j1 - j0 + kPoolTile - 1) / kPoolTile : 0;
  auto key_base = [&](int64_t j, const uint8_t** val, const float** sc) -> bool {
    if (!paged) {
      if (j < 0 || j >= p.nk) return false;
      *val = p.k + j * d;
      *sc = p.k_scale + j;
      return true;
    }
    const int64_t lp = j / 64;
    const int32_t page = (j >= 0 && lp < p.max_pages) ? p.block_table[sq * p.max_pages + lp] : -1;
    if (page < 0 || page >= p.num_pages) return false;
    const uint8_t* base = p.cache + static_cast<int64_t>(page) * page_bytes;
    *val = base + (j % 64) * d;
    *sc = reinterpret_cast<const float*>(base + 64 * d) + (j % 64);
    return true;
  };
  const uint8_t* dummy8 = paged ? p.cache : p.k;
  const float* dummyf = paged ? reinterpret_cast<const float*>(p.cache) : p.k_scale;
  auto load = [&](int64_t tile, int st) {
    const int64_t k0 = j0 + tile * kPoolTile;
    for (int c = tid; c < kPoolTile * chunks; c += kPoolThreads) {
      const int row = c / chunks, kc = c % chunks;
      const int64_t j = k0 + row;
      const uint8_t* val = dummy8;
      const float* sc = dummyf;
      const bool in = j < j1;
      const bool ok = in && key_base(j, &val, &sc);
      if (in && !ok) bad_s = 1;
      cp_async_16(&codes[st][row * d + kc * 16], ok ? val + kc * 16 : dummy8, ok ? 16 : 0);
      if (kc == 0) cp_async_4(&scl[st][row], ok ? sc : dummyf, ok ? 4 : 0);
    }
  };
#pragma unroll
  for (int s = 0; s < kPoolStages - 1; ++s) {
    if (s < ntiles) load(s, s);
    cp_async_commit();
  }
  double acc = 0.0;
  for (int64_t it = 0; it < ntiles; ++it) {
    const int st = static_cast<int>(it % kPoolStages);
    cp_async_wait<kPoolStages - 2>();
    __syncthreads();
    {
      const int64_t nt = it + kPoolStages - 1;
      if (nt < ntiles) load(nt, static_cast<int>(nt % kPoolStages));
      cp_async_commit();
    }
    const int n = static_cast<int>(min64(kPoolTile, j1 - (j0 + it * kPoolTile)));
    if (tid < d) {
      // s (24 bits) times an e4m3 value (4 bits) is exact in fp64, so a contracted fma equals
      // the product-then-add the emulation does.
      for (int r = 0; r < n; ++r)
        acc = __dadd_rn(acc, __dmul_rn(static_cast<double>(scl[st][r]),
                                       static_cast<double>(e4m3_decode(codes[st][r * d + tid]))));
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  const bool bad = bad_s != 0;
  const float mean = bad ? __int_as_float(0x7FC00000)
                         : __fdiv_rn(__double2float_rn(acc), static_cast<float>(j1 - j0));
  if (tid < d && p.pooled_f32) p.pooled_f32[t * d + tid] = mean;
  if (!p.pooled_codes) return;
  requantize_block(mean, bad, tid, d, red, p.pooled_codes + t * d, p.pooled_scale ? p.pooled_scale + t : nullptr);
}

// Incremental pooling of the decode cache (same arithmetic as launch_pool_fp8, emulated by
// ref::emulate_sm90_pool): the fp64 per-feature sums of every block are kept, so appending keys
// [from, to) to a block continues its ascending-order sum exactly where it stopped, and the
// result equals pooling the whole block from scratch bit for bit. Entry t: meta[0..4][t] = from,
// to, seq, slot, block start; a block starts from 0.0 when from == its start. A key that cannot
// be read marks the block bad (persisted), as the pooling kernel does: NaN codes, scale and means.
// Outputs: fp32 means (MISA's router keys) and / or re-quantized codes + scales (HISA), each
// written only when its pointer is non-null.
constexpr int kIncThreads = kPoolThreads;  // requantize_block reduces over kPoolThreads

__global__ void __launch_bounds__(kIncThreads) pool_append_kernel(
    const uint8_t* cache, const int32_t* block_table, int64_t max_pages, int64_t num_pages,
    const int32_t* meta, int64_t n, int d, double* acc64, int32_t* bad_state, float* means, uint8_t* codes,
    float* scales) {
  const int64_t t = blockIdx.x;
  const int x = threadIdx.x;
  const int64_t from = meta[t], to = meta[n + t], seq = meta[2 * n + t], slot = meta[3 * n + t],
                start = meta[4 * n + t];
  const int64_t page_bytes = static_cast<int64_t>(64) * (d + 4);
  const bool fresh = from == start;
  bool bad = !fresh && bad_state[slot] != 0;
  double acc = (fresh || x >= d) ? 0.0 : acc64[slot * d + x];
  if (x < d) {
#pragma unroll 8
    for (int64_t j = from; j < to; ++j) {
      const int64_t lp = j / 64;
      const int32_t page = lp < max_pages ? block_table[seq * max_pages + lp] : -1;
      const bool ok = page >= 0 && page < num_pages;
      bad = bad || !ok;
      float v = 0.0f, s = 0.0f;
      if (ok) {
        const uint8_t* base = cache + static_cast<int64_t>(page) * page_bytes;
        v = e4m3_decode(base[(j % 64) * d + x]);
        s = reinterpret_cast<const float*>(base + 64 * d)[j % 64];
      }
      acc = __dadd_rn(acc, __dmul_rn(static_cast<double>(s), static_cast<double>(v)));
    }
    acc64[slot * d + x] = acc;
  }
  const int bad_any = __syncthreads_or(bad ? 1 : 0);
  if (x == 0) bad_state[slot] = bad_any;
  const float mean = bad_any ? __int_as_float(0x7FC00000)
                             : __fdiv_rn(__double2float_rn(acc), static_cast<float>(to - start));
  if (means && x < d) means[slot * d + x] = mean;
  if (!codes) return;  // uniform over the CTA
  __shared__ float red[kIncThreads / 32];
  requantize_block(mean, bad_any != 0, x, d, red, codes + slot * d, scales + slot);
}

}  // namespace
}  // namespace detail

Status launch_pool_fp8(const PoolParams& p) {
  if (p.d != 64 && p.d != 128) return error("d = ", p.d, " is not supported by the pooling kernel (need 64 or 128)");
  if (p.nblocks < 0) return error("nblocks = ", p.nblocks, " must be >= 0");
  if (p.nblocks == 0) return Status::Ok();
  if (p.nblocks > INT32_MAX) return error("nblocks = ", p.nblocks, " is too large");
  if (!p.begin || !p.end) return error("PoolParams: begin and end must not be null");
  const bool paged = p.cache != nullptr;
  if (paged && (!p.block_table || !p.seq)) return error("PoolParams: paged pooling needs block_table and seq");
  if (!paged && (!p.k || !p.k_scale)) return error("PoolParams: flat pooling needs k and k_scale");
  if (!p.pooled_f32 && !p.pooled_codes) return error("PoolParams: no output (pooled_f32 or pooled_codes)");
  if (p.pooled_codes && !p.pooled_scale) return error("PoolParams: pooled_codes needs pooled_scale");
  detail::pool_kernel<<<static_cast<unsigned>(p.nblocks), detail::kPoolThreads, 0,
                        static_cast<cudaStream_t>(p.stream)>>>(p);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

// ---- Pooled cache --------------------------------------------------------------------------------

struct PagedPooledCache::Impl {
  int64_t batch = 0, max_pages = 0, bps = 0, repooled = 0;
  int block = 128, d = 128;
  PooledForm form = PooledForm::kQuantized;
  std::vector<int32_t> len;
  detail::DeviceArray<uint8_t> codes, hcache;
  detail::DeviceArray<float> scales, means;  // means: [batch * bps, d] fp32 (PooledForm with means)
  detail::DeviceArray<double> acc;      // [batch * bps, d] fp64 sums of each block's keys so far
  detail::DeviceArray<int32_t> bad;     // [batch * bps] a key of the block could not be read
  detail::DeviceArray<int32_t> meta, hbt;  // meta: [5, n] from, to, seq, slot, block start
  std::vector<int32_t> host_meta;
};

PagedPooledCache::PagedPooledCache() : impl_(std::make_unique<Impl>()) {}
PagedPooledCache::~PagedPooledCache() = default;

Status PagedPooledCache::reset(int64_t batch, int64_t max_pages, int block, int d, PooledForm form) {
  if (batch < 0 || max_pages < 0) return error("PagedPooledCache: batch = ", batch, ", max_pages = ", max_pages, " must be >= 0");
  if (block < 64 || block % 64 != 0) return error("PagedPooledCache: block = ", block, " must be a positive multiple of 64");
  if (d != 64 && d != 128) return error("PagedPooledCache: d = ", d, " is not 64 or 128");
  INDEXLAB_RETURN_IF_ERROR(detail::need_device());
  Impl& m = *impl_;
  m.batch = batch;
  m.max_pages = max_pages;
  m.block = block;
  m.d = d;
  m.bps = (max_pages * 64 + block - 1) / block;
  m.len.assign(static_cast<size_t>(batch), 0);
  m.repooled = 0;
  m.form = form;
  const bool quantized = form != PooledForm::kMeans, with_means = form != PooledForm::kQuantized;
  INDEXLAB_RETURN_IF_ERROR(m.codes.alloc(quantized ? static_cast<size_t>(batch * m.bps * d) : 0));
  INDEXLAB_RETURN_IF_ERROR(m.scales.alloc(quantized ? static_cast<size_t>(batch * m.bps) : 0));
  INDEXLAB_RETURN_IF_ERROR(m.means.alloc(with_means ? static_cast<size_t>(batch * m.bps * d) : 0));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(m.codes, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(m.scales, 0xFF));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(m.means, 0xFF));
  INDEXLAB_RETURN_IF_ERROR(m.acc.alloc(static_cast<size_t>(batch * m.bps * d)));
  INDEXLAB_RETURN_IF_ERROR(m.bad.alloc(static_cast<size_t>(batch * m.bps)));
  return Status::Ok();
}

Status PagedPooledCache::update(const uint8_t* cache, const int32_t* block_table, int64_t num_pages,
                               const std::vector<int32_t>& ctx, void* stream) {
  Impl& m = *impl_;
  if (static_cast<int64_t>(ctx.size()) != m.batch)
    return error("PagedPooledCache: context_lens has ", ctx.size(), " entries, expected batch = ", m.batch);
  std::vector<int32_t>& hm = m.host_meta;
  std::vector<int32_t> f, e, s, t, st;
  for (int64_t i = 0; i < m.batch; ++i) {
    const int64_t c = ctx[i];
    if (c < 0 || c > m.max_pages * 64)
      return error("PagedPooledCache: context_lens[", i, "] = ", c, " is outside [0, max_pages * 64 = ", m.max_pages * 64, "]");
    if (c == m.len[i]) continue;
    // Growing: continue the last block's sums, start the new ones. Shrinking: re-pool the new
    // last block from its start.
    const int64_t old = c < m.len[i] ? (c / m.block) * m.block : m.len[i];
    for (int64_t blk = old / m.block; blk * m.block < c; ++blk) {
      const int64_t b0 = blk * m.block;
      f.push_back(static_cast<int32_t>(std::max(b0, old)));
      e.push_back(static_cast<int32_t>(std::min<int64_t>(b0 + m.block, c)));
      s.push_back(static_cast<int32_t>(i));
      t.push_back(static_cast<int32_t>(i * m.bps + blk));
      st.push_back(static_cast<int32_t>(b0));
    }
  }
  m.repooled = static_cast<int64_t>(f.size());
  if (!f.empty()) {
    if (!cache || !block_table) return error("PagedPooledCache: cache and block_table must not be null");
    const size_t n = f.size();
    if (m.meta.size() < 5 * n) INDEXLAB_RETURN_IF_ERROR(m.meta.alloc(5 * std::max<size_t>(n, 2 * m.meta.size() / 5)));
    hm.resize(5 * n);
    std::copy(f.begin(), f.end(), hm.begin());
    std::copy(e.begin(), e.end(), hm.begin() + n);
    std::copy(s.begin(), s.end(), hm.begin() + 2 * n);
    std::copy(t.begin(), t.end(), hm.begin() + 3 * n);
    std::copy(st.begin(), st.end(), hm.begin() + 4 * n);
    cudaStream_t cs = static_cast<cudaStream_t>(stream);
    INDEXLAB_CUDA_CHECK(cudaMemcpyAsync(m.meta.get(), hm.data(), 5 * n * sizeof(int32_t), cudaMemcpyHostToDevice, cs));
    detail::pool_append_kernel<<<static_cast<unsigned>(n), detail::kIncThreads, 0, cs>>>(
        cache, block_table, m.max_pages, num_pages, m.meta.get(), static_cast<int64_t>(n), m.d, m.acc.get(),
        m.bad.get(), m.means.size() ? m.means.get() : nullptr, m.codes.size() ? m.codes.get() : nullptr,
        m.scales.get());
    INDEXLAB_CUDA_CHECK(cudaGetLastError());
  }
  m.len = ctx;
  return Status::Ok();
}

Status PagedPooledCache::update(const ref::PagedInputs& in) {
  Impl& m = *impl_;
  if (in.batch != m.batch || in.max_pages != m.max_pages || in.d != m.d)
    return error("PagedPooledCache: inputs (batch ", in.batch, ", max_pages ", in.max_pages, ", d ", in.d,
                 ") differ from the reset shape");
  if (static_cast<int64_t>(in.block_table.size()) != in.batch * in.max_pages)
    return error("PagedPooledCache: block_table has ", in.block_table.size(), " entries, expected batch * max_pages");
  if (static_cast<int64_t>(in.cache.size()) != in.num_pages * 64 * (in.d + 4))
    return error("PagedPooledCache: cache has ", in.cache.size(), " bytes, expected num_pages * 64 * (d + 4) = ",
                 in.num_pages * 64 * (in.d + 4));
  if (static_cast<int64_t>(in.context_lens.size()) != in.batch)
    return error("PagedPooledCache: context_lens has ", in.context_lens.size(), " entries, expected batch = ", in.batch);
  INDEXLAB_RETURN_IF_ERROR(m.hcache.upload(in.cache));
  INDEXLAB_RETURN_IF_ERROR(m.hbt.upload(in.block_table));
  INDEXLAB_RETURN_IF_ERROR(update(m.hcache.get(), m.hbt.get(), in.num_pages, in.context_lens, nullptr));
  return detail::sync_check();
}

Status PagedPooledCache::download(std::vector<uint8_t>* codes, std::vector<float>* scales) const {
  if (!codes || !scales) return error("PagedPooledCache::download: null output");
  if (impl_->form == PooledForm::kMeans)
    return error("PagedPooledCache::download: this cache keeps means only (PooledForm::kMeans)");
  INDEXLAB_RETURN_IF_ERROR(detail::sync_check());
  codes->resize(impl_->codes.size());
  scales->resize(impl_->scales.size());
  INDEXLAB_RETURN_IF_ERROR(impl_->codes.download(codes->data(), codes->size()));
  return impl_->scales.download(scales->data(), scales->size());
}

Status PagedPooledCache::download_means(std::vector<float>* means) const {
  if (!means) return error("PagedPooledCache::download_means: null output");
  if (impl_->form == PooledForm::kQuantized)
    return error("PagedPooledCache::download_means: this cache keeps codes only (PooledForm::kQuantized)");
  INDEXLAB_RETURN_IF_ERROR(detail::sync_check());
  means->resize(impl_->means.size());
  return impl_->means.download(means->data(), means->size());
}

int64_t PagedPooledCache::last_repooled() const { return impl_->repooled; }
int64_t PagedPooledCache::blocks_per_seq() const { return impl_->bps; }
int64_t PagedPooledCache::batch() const { return impl_->batch; }
int PagedPooledCache::block() const { return impl_->block; }
int PagedPooledCache::d() const { return impl_->d; }
const std::vector<int32_t>& PagedPooledCache::lengths() const { return impl_->len; }
PooledForm PagedPooledCache::form() const { return impl_->form; }
const uint8_t* PagedPooledCache::codes() const { return impl_->codes.size() ? impl_->codes.get() : nullptr; }
const float* PagedPooledCache::scales() const { return impl_->scales.size() ? impl_->scales.get() : nullptr; }
const float* PagedPooledCache::means() const { return impl_->means.size() ? impl_->means.get() : nullptr; }

}  // namespace indexlab::cuda
