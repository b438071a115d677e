/// mbarrier, TMA and bulk-copy helpers of the Hopper kernels that stream through a ring of
/// shared-memory stages (paged_tma_kernel in sm90_logits.cu, the TMA gather in sm90_gather.cu),
/// and the host encoders of their tensor maps (defined in sm90_logits.cu).
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (the encoder is fetched from the driver at run time)
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sm90_common.cuh"

namespace indexlab::cuda::detail {

/// The first 1024-byte aligned address of dynamic shared memory (a 128-byte swizzled TMA box
/// must start on one); the kernels ask for 1024 bytes more than they use.
__device__ __forceinline__ uint8_t* smem_align_1024(uint8_t* smem_raw) {
  return smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      " selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  while (!mbar_try_wait(bar, parity)) {
  }
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2,
                                            uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_u32(dst)),
               "l"(src), "r"(bytes), "r"(smem_u32(bar))
               : "memory");
}
/// An L2 policy for data read once: evict it first (keep what else is in L2, e.g. the logits a
/// top-k reads next).
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  return pol;
}
/// tma_load_3d and bulk_load with an L2 cache policy (l2_evict_first_policy).
__device__ __forceinline__ void tma_load_3d_hint(void* dst, const CUtensorMap* map, int c0, int c1, int c2,
                                                 uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, %3, "
      "%4}], [%5], %6;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar)), "l"(policy)
      : "memory");
}
__device__ __forceinline__ void bulk_load_hint(void* dst, const void* src, uint32_t bytes, uint64_t* bar,
                                               uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(
          smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
      : "memory");
}
/// Descriptor of a K-major tile whose rows of rb bytes were written by TMA with the rb-byte swizzle
/// (rb = 128: layout type 1, 128B; rb = 64: type 2, 64B); 8-row groups are 8 rb bytes apart (SBO);
/// LBO is unused for these layouts. The tile must start on a 1024-byte boundary; a k-step of 32
/// bytes adds 32 to the start address (the hardware applies the swizzle to the address bits).
__device__ __forceinline__ uint64_t make_desc_swizzled(uint32_t smem_addr, int rb) {
  uint64_t d = static_cast<uint64_t>((smem_addr >> 4) & 0x3FFF);
  d |= static_cast<uint64_t>(1) << 16;
  d |= static_cast<uint64_t>(((8 * rb) >> 4) & 0x3FFF) << 32;
  d |= static_cast<uint64_t>(rb == 128 ? 1 : 2) << 62;
  return d;
}

// An mbarrier wait that gives up: a phase that has not completed after ~2^34 cycles (seconds) means
// a lost arrival or byte count, and the kernel traps (the launch fails with an illegal-instruction
// error) instead of hanging the process. No message: a printf here is a function call, and ptxas
// then serializes every wgmma of the kernel (C7510, "wgmma pipeline crossing function boundary").
__device__ __forceinline__ void mbar_wait_or_trap(uint64_t* bar, uint32_t parity) {
  const long long t0 = clock64();
  while (!mbar_try_wait(bar, parity)) {
    if (clock64() - t0 > (1ll << 34)) __trap();
  }
}
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void tma_load_1d(void* dst, const CUtensorMap* map, int c0, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2}], [%3];\n" ::"r"(
          smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(smem_u32(bar))
      : "memory");
}

/// Byte offset of byte `o` of a tile of d-byte rows (d = 128 or 64) as TMA writes it with the
/// d-byte swizzle from a 1024-byte aligned base: 16-byte chunk bits [4, 4 + log2(d / 16)) XOR
/// row-group bits [7, ...). Lets generic stores build the layout make_desc_swizzled reads.
__device__ __forceinline__ uint32_t swizzled_offset(uint32_t o, int d) {
  const uint32_t mask = d == 128 ? 7u : 3u;
  return o ^ (((o >> 7) & mask) << 4);
}

/// The tensor map of a paged fp8 cache's key rows: [num_pages, 64, d] bytes with page stride
/// page_bytes, boxes of one page, swizzled as make_desc_swizzled expects.
Status encode_page_map(const uint8_t* cache, int64_t num_pages, int d, int64_t page_bytes, CUtensorMap* map);
/// The tensor map of flat fp8 keys [nk, d] bytes, boxes of 64 rows, swizzled as make_desc_swizzled
/// expects. keys must be 16-byte aligned.
Status encode_rows_map(const uint8_t* keys, int64_t nk, int d, CUtensorMap* map);
/// The tensor map of a float vector [n], boxes of box_elems elements (a multiple of 4, at most
/// 256; out-of-range ones read as 0). v must be 16-byte aligned, and so must a box's start
/// (coordinate times 4 bytes): the innermost coordinate of a tensor copy is 16-byte aligned.
Status encode_vec_map(const float* v, int64_t n, int box_elems, CUtensorMap* map);

}  // namespace indexlab::cuda::detail
