/// Deterministic radix top-k over rows of fp32 logits: canonical order, -1 padding, NaN never chosen.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/api.h"
#include "cuda/sm90_common.cuh"

namespace indexlab::cuda {
namespace detail {

constexpr int kTopkThreads = 1024;

// Order-preserving key of a float: larger float -> larger key. NaN and -inf map to 0 (never
// selected); -0 is folded onto +0 so equal scores tie and fall back to the index order.
__device__ __forceinline__ uint32_t float_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (f != f || u == 0xFF800000u) return 0u;
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  const uint32_t u = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
  return __uint_as_float(u);
}

// The selection works on a unique 64-bit composite per column: key << 32 | ~index, so that ties
// on the score resolve to the lower index. A radix select (8 bits a pass, re-reading the row from
// global memory, so no candidate buffer can overflow) finds the prefix P of the K-th largest
// composite; exactly K columns have (composite & M) >= P and are gathered, then sorted.
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const TopkParams p, int kpow2) {
  extern __shared__ __align__(16) uint64_t buf[];  // [kpow2]
  __shared__ uint32_t hist[256];
  __shared__ uint32_t s_count;
  __shared__ uint64_t s_prefix, s_mask;
  __shared__ uint32_t s_needed;
  __shared__ int s_done;

  const int tid = threadIdx.x;
  const int64_t row = blockIdx.x;
  int64_t lo = p.ks ? p.ks[row] : 0;
  int64_t hi = p.ke ? p.ke[row] : p.cols;
  lo = max64(0, min64(lo, p.cols));
  hi = max64(lo, min64(hi, p.cols));
  const int64_t n = hi - lo;
  const float* x = p.logits + row * p.ld + lo;
  const int k = p.k;

  if (tid == 0) {
    s_prefix = 0;
    s_mask = 0;
    s_done = 0;
    s_count = 0;
    s_needed = static_cast<uint32_t>(k);
  }
  // Radix passes over the 64-bit composite, 8 bits at a time; the first pass also counts the
  // valid columns (when there are at most K, all of them are selected).
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += kTopkThreads) hist[i] = 0;
    __syncthreads();
    const uint64_t prefix = s_prefix, mask = s_mask;
    for (int64_t i = tid; i < n; i += kTopkThreads) {
      const uint32_t key = float_key(x[i]);
      if (key == 0u) continue;
      const uint64_t c = (static_cast<uint64_t>(key) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
      if ((c & mask) == prefix) atomicAdd(&hist[(c >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid < 32) {
      // Warp 0 finds the bin holding the needed-th largest: lane L owns bins 8L .. 8L+7.
      const int lane = tid;
      uint32_t local[8], sum = 0;
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        local[t] = hist[lane * 8 + t];
        sum += local[t];
      }
      uint32_t incl = sum;  // suffix sum over lanes >= lane
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t v = __shfl_down_sync(0xffffffffu, incl, o);
        if (lane + o < 32) incl += v;
      }
      const uint32_t need = s_needed;
      const uint32_t total = __shfl_sync(0xffffffffu, incl, 0);
      __syncwarp();  // every lane has read s_needed before one lane rewrites it
      if (shift == 56 && total <= static_cast<uint32_t>(k)) {
        if (lane == 0) s_done = 1;  // prefix = mask = 0: every valid column
      } else {
        const uint32_t above = incl - sum;
        if (above < need && need <= incl) {
          uint32_t a = above;
          int bin = lane * 8;
#pragma unroll
          for (int t = 7; t >= 0; --t) {
            if (a + local[t] >= need) {
              bin = lane * 8 + t;
              break;
            }
            a += local[t];
          }
          const uint32_t rest = need - a;
          s_needed = rest;
          s_prefix = prefix | (static_cast<uint64_t>(bin) << shift);
          s_mask = mask | (static_cast<uint64_t>(255u) << shift);
          s_done = hist[bin] == rest;
        }
      }
    }
    __syncthreads();
    if (s_done) break;
  }
  const uint64_t prefix = s_prefix, mask = s_mask;
  // Gather exactly min(K, valid) composites (order fixed later by the sort).
  for (int i = tid; i < kpow2; i += kTopkThreads) buf[i] = 0;
  __syncthreads();
  for (int64_t i = tid; i < n; i += kTopkThreads) {
    const uint32_t key = float_key(x[i]);
    if (key == 0u) continue;
    const uint64_t c = (static_cast<uint64_t>(key) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
    if ((c & mask) >= prefix) {
      const uint32_t pos = atomicAdd(&s_count, 1u);
      if (pos < static_cast<uint32_t>(kpow2)) buf[pos] = c;  // never more than K by construction
    }
  }
  __syncthreads();
  // Bitonic sort, descending.
  for (int size = 2; size <= kpow2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < kpow2 / 2; i += kTopkThreads) {
        const int a = 2 * i - (i & (stride - 1));
        const int b = a + stride;
        const bool desc = (a & size) == 0;
        const uint64_t va = buf[a], vb = buf[b];
        if ((va < vb) == desc) {
          buf[a] = vb;
          buf[b] = va;
        }
      }
      __syncthreads();
    }
  }
  const uint32_t total = min(s_count, static_cast<uint32_t>(k));
  int32_t* out_i = p.index + row * k;
  float* out_s = p.score ? p.score + row * k : nullptr;
  for (int t = tid; t < k; t += kTopkThreads) {
    int32_t idx = -1;
    float sc = -INFINITY;
    if (static_cast<uint32_t>(t) < total) {
      const uint64_t c = buf[t];
      const int64_t rel = 0xFFFFFFFFu - static_cast<uint32_t>(c & 0xFFFFFFFFu);
      sc = key_float(static_cast<uint32_t>(c >> 32));
      if (!p.absolute) {
        idx = static_cast<int32_t>(rel);
      } else if (!p.block_table) {
        idx = static_cast<int32_t>(lo + rel);
      } else {
        const int64_t j = lo + rel;
        const int64_t seq = row / p.next_n;
        idx = p.block_table[seq * p.max_pages + j / 64] * 64 + static_cast<int32_t>(j % 64);
      }
    }
    out_i[t] = idx;
    if (out_s) out_s[t] = sc;
  }
}

}  // namespace detail

Status launch_topk(const TopkParams& p) {
  if (p.k < 1 || p.k > kMaxTopK) return error("k = ", p.k, " is outside [1, ", kMaxTopK, "]");
  if (p.rows < 0 || p.cols < 0) return error("rows and cols must be >= 0");
  if (p.cols > INT32_MAX) return error("cols = ", p.cols, " exceeds 2^31 - 1");
  if (p.ld < p.cols) return error("ld = ", p.ld, " is smaller than cols = ", p.cols);
  if (p.rows == 0) return Status::Ok();
  if (p.rows > INT32_MAX) return error("rows = ", p.rows, " is too large");
  if (!p.index || (!p.logits && p.cols > 0)) return error("TopkParams: a device pointer is null");
  if (p.block_table && p.absolute && (p.next_n < 1 || p.max_pages < 1))
    return error("TopkParams: paged absolute mode needs next_n >= 1 and max_pages >= 1");
  int kpow2 = 1;
  while (kpow2 < p.k) kpow2 <<= 1;
  const size_t smem = static_cast<size_t>(kpow2) * 8;
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(detail::topk_kernel,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  detail::topk_kernel<<<static_cast<unsigned>(p.rows), detail::kTopkThreads, smem,
                        static_cast<cudaStream_t>(p.stream)>>>(p, kpow2);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

}  // namespace indexlab::cuda
