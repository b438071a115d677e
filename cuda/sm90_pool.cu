/// Block pooling for HISA and MISA (SPEC 4.2 / 5.1): fp32 means of dequantized keys, optionally
/// re-quantized per block to e4m3. The operation order is fixed (sparse.h) and emulated bit for bit
/// by ref::emulate_sm90_pool.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sm90_common.cuh"
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
  float a = tid < d ? fabsf(mean) : 0.0f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  if ((tid & 31) == 0) red[tid / 32] = a;
  __syncthreads();
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kPoolThreads / 32; ++i) amax = fmaxf(amax, red[i]);
  const float scale = fmaxf(__fdiv_rn(amax, 448.0f), 1e-10f);
  if (tid < d) {
    // A block that could not be read gets code 0x7F (NaN) and a NaN scale: never a silent value.
    p.pooled_codes[t * d + tid] =
        bad ? static_cast<uint8_t>(0x7F)
            : static_cast<uint8_t>(__nv_cvt_float_to_fp8(__fdiv_rn(mean, scale), __NV_SATFINITE, __NV_E4M3));
  }
  if (tid == 0 && p.pooled_scale) p.pooled_scale[t] = bad ? __int_as_float(0x7FC00000) : scale;
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

}  // namespace indexlab::cuda
