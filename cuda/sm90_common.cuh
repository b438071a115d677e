/// Shared device helpers of the Hopper kernels: the CUDA checking macro, cp.async, wgmma descriptors.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "reference/status.h"

/// The one checking macro for CUDA runtime calls: returns an indexlab::Status naming the call.
#define INDEXLAB_CUDA_CHECK(expr)                                                             \
  do {                                                                                       \
    cudaError_t _il_err = (expr);                                                            \
    if (_il_err != cudaSuccess) {                                                            \
      return ::indexlab::error("CUDA error in ", #expr, " (", __FILE__, ":", __LINE__, "): ", \
                               cudaGetErrorString(_il_err));                                 \
    }                                                                                        \
  } while (0)

namespace indexlab::cuda::detail {

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/// 16-byte global -> shared cp.async through L1 (.ca); src_bytes = 0 zero-fills the destination
/// without reading src. The L1-bypassing .cg form sent every lane's 16 bytes to L2 as its own
/// request: on paged decode (H200, ncu) 37.6M L2 read requests and 33.7M sectors for 17.3M
/// sectors of keys, L2 at 78% busy with DRAM at 37%; with .ca the L1 merges a quarter warp's
/// copies into whole sectors (12.4M requests, 18.3M sectors), and decode logits went from
/// 0.290-0.291 to 0.240 ms (the two builds alternated twice in one run).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// NOTE: shared memory written through the generic proxy (cp.async, st.shared) and read next by
// wgmma (async proxy) needs this fence in each writing thread before the barrier.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Programmatic dependent launch (PTX griddepcontrol, sm_90). pdl_wait: a kernel launched with
// launch_pdl blocks here until the grid before it in the stream has completed and its writes are
// visible; it must come before the kernel's first global access (a no-op when there is no such
// grid). pdl_launch_dependents: this CTA no longer holds back the next kernel's launch (its CTAs
// may then start on free SMs and run to their pdl_wait).
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::); }

/// Launches kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream
/// serialization: its CTAs may start while the kernel before it in the stream finishes, once
/// that kernel's CTAs have all called pdl_launch_dependents or exited. The kernel must call
/// pdl_wait before its first global access.
template <typename... KArgs, typename... Args>
Status launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                  Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  INDEXLAB_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
  return Status::Ok();
}

__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void fence_acc(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

/// Shared-memory matrix descriptor, K-major, no swizzle ("interleave"): 8x16-byte core matrices
/// of 128 contiguous bytes; lbo = byte distance between core matrices adjacent along K,
/// sbo = byte distance between core matrices adjacent along M/N.
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((smem_addr >> 4) & 0x3FFF);
  d |= static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32;
  return d;  // base offset 0, layout type 0 (no swizzle)
}

/// Byte offset of element (row, kbyte) in the K-major core-matrix layout with rows of d bytes:
/// core matrix (row/8, kbyte/16) at (row/8)*(8*d) + (kbyte/16)*128, row%8 at 16 bytes each.
__device__ __forceinline__ uint32_t core_offset(int row, int kchunk, int d) {
  return static_cast<uint32_t>((row >> 3) * (8 * d) + kchunk * 128 + (row & 7) * 16);
}

/// Which (row, 16-byte chunk) the c-th 16-byte copy of a tile with rows of rb bytes (rb a multiple
/// of 32, rows a multiple of 8) moves. Each 8 consecutive copies (a quarter warp) take 4 rows x 32
/// bytes: whole 32-byte sectors of global memory, 2-way bank conflicts in the core-matrix layout
/// (the order row = c % 8, chunk = c / 8 gave each quarter warp eight half sectors).
__device__ __forceinline__ void tile_chunk(int c, int rb, int* row, int* kchunk) {
  const int pairs = rb / 32;  // 32-byte column pairs per row
  const int g = (c >> 4) % pairs, rg = (c >> 4) / pairs;
  *row = rg * 8 + ((c >> 3) & 1) * 4 + ((c >> 1) & 3);
  *kchunk = 2 * g + (c & 1);
}

/// 128 threads (t = 0..127) copy one block of Rows key rows of RB bytes into the core-matrix
/// layout at kd, and its Rows scales to sd, by cp.async (the caller commits): rows at or past
/// valid_rows are zero-filled (their source is clamped to base, 0 bytes read). Unrolled: false
/// where registers are scarce (after setmaxnreg.dec).
template <int Rows, int RB, bool Unrolled>
__device__ __forceinline__ void cp_async_key_block(uint8_t* kd, float* sd, const uint8_t* base, const float* sbase,
                                                   int valid_rows, int t) {
  auto copy = [&](int c) {
    int row, kc;
    tile_chunk(c, RB, &row, &kc);
    const bool ok = row < valid_rows;
    cp_async_16(kd + core_offset(row, kc, RB), ok ? base + row * RB + kc * 16 : base, ok ? 16 : 0);
  };
  if constexpr (Unrolled) {
#pragma unroll
    for (int c = t; c < Rows * (RB / 16); c += 128) copy(c);
  } else {
#pragma unroll 1
    for (int c = t; c < Rows * (RB / 16); c += 128) copy(c);
  }
  if (t < Rows) {
    const bool ok = t < valid_rows;
    cp_async_4(sd + t, ok ? sbase + t : sbase, ok ? 4 : 0);
  }
}

}  // namespace indexlab::cuda::detail
