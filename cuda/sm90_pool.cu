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

__device__ __forceinline__ float e4m3_decode(uint8_t code) {
  __nv_fp8_e4m3 v;
  v.__x = code;
  return static_cast<float>(v);
}

// One CTA per pooled block; thread x owns feature x and walks the block's keys in ascending order.
__global__ void __launch_bounds__(kPoolThreads) pool_kernel(const PoolParams p) {
  const int64_t t = blockIdx.x;
  const int x = threadIdx.x;
  const int d = p.d;
  const int64_t j0 = p.begin[t], j1 = p.end[t];
  const bool paged = p.cache != nullptr;
  const int64_t page_bytes = static_cast<int64_t>(64) * (d + 4);
  const int32_t sq = paged ? p.seq[t] : 0;
  bool bad = j1 <= j0;
  double acc = 0.0;
  if (x < d) {
    for (int64_t j = j0; j < j1; ++j) {
      float s, v;
      if (!paged) {
        if (j < 0 || j >= p.nk) {
          bad = true;
          break;
        }
        s = p.k_scale[j];
        v = e4m3_decode(p.k[j * d + x]);
      } else {
        const int64_t lp = j / 64;
        const int32_t page = (j >= 0 && lp < p.max_pages) ? p.block_table[sq * p.max_pages + lp] : -1;
        if (page < 0 || page >= p.num_pages) {
          bad = true;
          break;
        }
        const uint8_t* base = p.cache + static_cast<int64_t>(page) * page_bytes;
        v = e4m3_decode(base[(j % 64) * d + x]);
        s = reinterpret_cast<const float*>(base + 64 * d)[j % 64];
      }
      // s (24 bits) times an e4m3 value (4 bits) is exact in fp64, so a contracted fma equals
      // the product-then-add the emulation does.
      acc = __dadd_rn(acc, __dmul_rn(static_cast<double>(s), static_cast<double>(v)));
    }
  }
  const float mean = bad ? __int_as_float(0x7FC00000)
                         : __fdiv_rn(__double2float_rn(acc), static_cast<float>(j1 - j0));
  if (x < d && p.pooled_f32) p.pooled_f32[t * d + x] = mean;
  if (!p.pooled_codes) return;
  __shared__ float red[kPoolThreads / 32];
  const int bad_any = __syncthreads_or(bad ? 1 : 0);
  float a = x < d ? fabsf(mean) : 0.0f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  if ((x & 31) == 0) red[x / 32] = a;
  __syncthreads();
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kPoolThreads / 32; ++i) amax = fmaxf(amax, red[i]);
  const float scale = fmaxf(__fdiv_rn(amax, 448.0f), 1e-10f);
  if (x < d) {
    // A block that could not be read gets code 0x7F (NaN) and a NaN scale: never a silent value.
    p.pooled_codes[t * d + x] =
        bad_any ? static_cast<uint8_t>(0x7F)
                : static_cast<uint8_t>(__nv_cvt_float_to_fp8(__fdiv_rn(mean, scale), __NV_SATFINITE, __NV_E4M3));
  }
  if (x == 0 && p.pooled_scale) p.pooled_scale[t] = bad_any ? __int_as_float(0x7FC00000) : scale;
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
