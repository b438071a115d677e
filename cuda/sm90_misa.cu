/// Hopper MISA and MISA-dagger (SPEC 5-6), fp8. Stages: pool (launch_pool_fp8: fp32 router means)
/// -> router (router_kernel: fixed fp32 order, top-h heads, gather
/// of the active heads into a compact [hp = 8..128] q / w) -> score (compact8_logits_kernel for
/// hp = 8 flat, else the DSA logits kernels with h = hp) -> top-K; dagger: top-K1 -> ascending
/// candidate sort (bitmap, bitonic fallback) -> launch_gather_logits_fp8 (list mode, all heads) ->
/// top-K over the K1 columns -> launch_remap_indices. ref::emulate_sm90_misa* follows it bit for bit.
/// Test/benchmark switches (same numbers): INDEXLAB_MISA_SCORE=dsa, INDEXLAB_MISA_SORT=bitonic,
/// INDEXLAB_MISA_CHUNK_ROWS=n.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "cuda/bench_staged.cuh"
#include "cuda/pooled_cache.h"
#include "cuda/sm90_common.cuh"
#include "cuda/sm90_host.cuh"
#include "cuda/sm90_wgmma_gen.cuh"
#include "cuda/sparse.h"
#include "cuda/sparse_detail.h"
#include "reference/emulate_sm90_sparse.h"

namespace indexlab::cuda {
namespace detail {
namespace {

constexpr int kRouterThreads = 256;
constexpr int kRouterTile = 32;             // pooled blocks staged in shared memory at once
constexpr int64_t kPoolBudget = 1 << 18;    // pooled blocks per row chunk (128 MiB at d = 128)
constexpr int kSortThreads = 1024;

enum RouterMode : int { kModePooled = 0, kModeOwnKey = 1, kModeQNorm = 2 };

struct RouterParams {
  const uint8_t* q = nullptr;         // [rows, H, d] e4m3
  const float* w = nullptr;           // [rows, H]
  const float* q_scale = nullptr;     // [rows, H] (q-norm; null = 1)
  int64_t rows = 0;
  int H = 0, d = 0, h = 0, hp = 0;
  int mode = kModePooled;
  // pooled
  const float* pooled = nullptr;      // [npools, d] fp32 means
  const int32_t* row_ptr = nullptr;   // [rows + 1] into pool_ids
  const int32_t* pool_ids = nullptr;  // router blocks of each row, in block order
  // own key, flat: key ke - 1 when ks < ke
  const uint8_t* k = nullptr;         // [nk, d]
  const float* k_scale = nullptr;     // [nk]
  const int32_t* ks = nullptr;        // [rows]
  const int32_t* ke = nullptr;        // [rows]
  int64_t nk = 0;
  // own key, paged (next_n = 1): position ke - 1 of sequence row / next_n
  const uint8_t* cache = nullptr;
  const int32_t* block_table = nullptr;  // [batch, max_pages]
  int64_t max_pages = 0, num_pages = 0;
  int next_n = 1;
  // outputs
  int32_t* active = nullptr;          // [rows, h] ascending
  uint8_t* q_act = nullptr;           // [rows, hp, d]: active heads' codes, zero codes after h
  float* w_act = nullptr;             // [rows, hp]: their weights, 0 after h
};

__device__ __forceinline__ float e4m3_decode(uint8_t code) {
  __nv_fp8_e4m3 v;
  v.__x = code;
  return static_cast<float>(v);
}
__device__ __forceinline__ float router_relu(float x) { return x <= 0.0f ? 0.0f : x; }
__device__ __forceinline__ bool ranks_before(float a, int ia, float b, int ib) {
  const bool na = a != a, nb = b != b;
  if (na != nb) return nb;
  if (!na && a != b) return a > b;
  return ia < ib;
}
// dot(a, b): fma chain over x ascending from +0 (emulate_sm90_sparse.h).
__device__ __forceinline__ float router_dot(const float* a, const float* b, int d) {
  float acc = 0.0f;
  for (int x = 0; x < d; ++x) acc = __fmaf_rn(a[x], b[x], acc);
  return acc;
}

// NC dot chains of one pooled block (pb) with heads g0, g0 + 8, ..., interleaved; results relu'd
// into rt[g * (kRouterTile + 1)]. Requires kRouterThreads / kRouterTile == 8.
template <int NC>
__device__ __forceinline__ void router_dots(const float* qf, const float* pb, int g0, int d, float* rt) {
  float acc[NC];
#pragma unroll
  for (int c = 0; c < NC; ++c) acc[c] = 0.0f;
  // 16-byte loads of 4 consecutive x; each chain still adds x = 0, 1, 2, ... in order.
  for (int x = 0; x < d; x += 4) {
    const float4 pv = *reinterpret_cast<const float4*>(pb + x);
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const float4 qv = *reinterpret_cast<const float4*>(qf + (g0 + 8 * c) * d + x);
      acc[c] = __fmaf_rn(qv.x, pv.x, acc[c]);
      acc[c] = __fmaf_rn(qv.y, pv.y, acc[c]);
      acc[c] = __fmaf_rn(qv.z, pv.z, acc[c]);
      acc[c] = __fmaf_rn(qv.w, pv.w, acc[c]);
    }
  }
#pragma unroll
  for (int c = 0; c < NC; ++c) rt[(g0 + 8 * c) * (kRouterTile + 1)] = router_relu(acc[c]);
}
static_assert(kRouterThreads / kRouterTile == 8, "router_dots maps 8 head groups");

// Router, fixed fp32 order (ref::emulate_sm90_misa_router):
//   pooled:  E = +0; per router block in order: E = __fadd_rn(E, __fmul_rn(|w|, relu(dot(q, p_b))))
//   own_key: E = __fmul_rn(w, relu(__fmul_rn(s, dot(q, k))))
//   q_norm:  E = __fmul_rn(q_scale, __fsqrt_rn(dot(q, q)))
// relu(x) = x <= 0 ? +0 : x. Then top-h (ties: lower head; NaN last) by rank counting, active heads
// ascending, and the gather of their codes and weights into the compact [hp] layout.
// One CTA per query row.
__global__ void __launch_bounds__(kRouterThreads) router_kernel(const RouterParams p) {
  extern __shared__ __align__(16) float sm[];
  const int H = p.H, d = p.d, tid = threadIdx.x;
  const int64_t row = blockIdx.x;
  float* qf = sm;                                   // [H, d]
  float* pt = qf + H * d;                           // [kRouterTile, d + 4] (rows 16-byte aligned)
  float* rt = pt + kRouterTile * (d + 4);           // [H, kRouterTile + 1]
  float* E = rt + H * (kRouterTile + 1);            // [H]
  int* flag = reinterpret_cast<int*>(E + H);        // [H]
  int* slot_head = flag + H;                        // [hp]
  const uint8_t* qrow = p.q + row * H * d;
  // 16-byte loads of the row's codes (H * d is a multiple of 16; rows start 16-byte aligned).
  for (int i = tid; i < H * d / 16; i += blockDim.x) {
    const uint4 v = reinterpret_cast<const uint4*>(qrow)[i];
    const uint32_t w4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int c = 0; c < 16; ++c) qf[16 * i + c] = e4m3_decode(static_cast<uint8_t>(w4[c / 4] >> (8 * (c % 4))));
  }
  for (int g = tid; g < H; g += blockDim.x) E[g] = 0.0f;
  __syncthreads();
  if (p.mode == kModePooled) {
    const int32_t p0 = p.row_ptr[row], p1 = p.row_ptr[row + 1];
    for (int32_t t0 = p0; t0 < p1; t0 += kRouterTile) {
      const int nb = min(kRouterTile, p1 - t0);
      for (int i = tid; i < nb * (d / 4); i += blockDim.x) {  // 16-byte loads and stores
        const int b = i / (d / 4), x4 = i % (d / 4);
        const float4 v = reinterpret_cast<const float4*>(p.pooled + static_cast<int64_t>(p.pool_ids[t0 + b]) * d)[x4];
        *reinterpret_cast<float4*>(pt + b * (d + 4) + 4 * x4) = v;
      }
      __syncthreads();
      // Thread t scores block b = t % 32 against heads g = t / 32 + 8 * c (c = 0 .. H/8 - 1), the
      // H/8 fma chains interleaved for latency hiding; each chain's order is unchanged.
      {
        const int b = tid % kRouterTile, g0 = tid / kRouterTile;
        if (b < nb) {
          switch (H) {
            case 8: router_dots<1>(qf, pt + b * (d + 4), g0, d, rt + b); break;
            case 16: router_dots<2>(qf, pt + b * (d + 4), g0, d, rt + b); break;
            case 32: router_dots<4>(qf, pt + b * (d + 4), g0, d, rt + b); break;
            case 64: router_dots<8>(qf, pt + b * (d + 4), g0, d, rt + b); break;
            default: router_dots<16>(qf, pt + b * (d + 4), g0, d, rt + b); break;
          }
        }
      }
      __syncthreads();
      for (int g = tid; g < H; g += blockDim.x) {
        const float aw = fabsf(p.w[row * H + g]);
        float e = E[g];
        for (int b = 0; b < nb; ++b) e = __fadd_rn(e, __fmul_rn(aw, rt[g * (kRouterTile + 1) + b]));
        E[g] = e;
      }
      __syncthreads();
    }
  } else if (p.mode == kModeOwnKey) {
    // The row's own key (the last one it sees); none seen: E stays +0 for every head.
    int64_t j = -1;
    float s = 0.0f;
    const uint8_t* kp = nullptr;
    bool bad = false;
    if (p.cache == nullptr) {
      const int64_t a = p.ks[row], b = p.ke[row];
      if (a < b) {
        j = b - 1;
        if (j < 0 || j >= p.nk) bad = true;
        else {
          kp = p.k + j * d;
          s = p.k_scale[j];
        }
      }
    } else {
      const int64_t b = p.ke[row];  // visible positions of the row
      if (b > 0) {
        j = b - 1;
        const int64_t seq = row / p.next_n, lp = j / 64;
        const int32_t page = lp < p.max_pages ? p.block_table[seq * p.max_pages + lp] : -1;
        if (page < 0 || page >= p.num_pages) bad = true;
        else {
          const uint8_t* base = p.cache + static_cast<int64_t>(page) * 64 * (d + 4);
          kp = base + (j % 64) * d;
          s = reinterpret_cast<const float*>(base + 64 * d)[j % 64];
        }
      }
    }
    if (j >= 0) {
      for (int x = tid; x < d; x += blockDim.x) pt[x] = bad ? __int_as_float(0x7FC00000) : e4m3_decode(kp[x]);
      __syncthreads();
      for (int g = tid; g < H; g += blockDim.x) {
        const float dot = router_dot(qf + g * d, pt, d);
        E[g] = __fmul_rn(p.w[row * H + g], router_relu(__fmul_rn(s, dot)));
      }
    }
  } else {
    for (int g = tid; g < H; g += blockDim.x) {
      const float n2 = router_dot(qf + g * d, qf + g * d, d);
      const float qs = p.q_scale ? p.q_scale[row * H + g] : 1.0f;
      E[g] = __fmul_rn(qs, __fsqrt_rn(n2));
    }
  }
  __syncthreads();
  for (int g = tid; g < H; g += blockDim.x) {
    const float eg = E[g];
    int rank = 0;
    for (int g2 = 0; g2 < H; ++g2) rank += ranks_before(E[g2], g2, eg, g) ? 1 : 0;
    flag[g] = rank < p.h ? 1 : 0;
  }
  __syncthreads();
  for (int g = tid; g < H; g += blockDim.x) {
    if (flag[g]) {
      int pos = 0;
      for (int g2 = 0; g2 < g; ++g2) pos += flag[g2];
      p.active[row * p.h + pos] = g;
      slot_head[pos] = g;
    }
  }
  __syncthreads();
  const int chunks = d / 16;
  uint4* qa = reinterpret_cast<uint4*>(p.q_act + row * p.hp * d);
  for (int i = tid; i < p.hp * chunks; i += blockDim.x) {
    const int slot = i / chunks, c = i % chunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (slot < p.h) v = reinterpret_cast<const uint4*>(qrow + slot_head[slot] * d)[c];
    qa[i] = v;
  }
  for (int s = tid; s < p.hp; s += blockDim.x)
    p.w_act[row * p.hp + s] = s < p.h ? p.w[row * H + slot_head[s]] : 0.0f;
}

// ---- Routed scoring for hp = 8 (flat): the DSA logits kernel's pipeline with a head-major B tile --
// The DSA kernel (cuda/sm90_logits.cu) puts query j8 in accumulator columns 8*j8 .. 8*j8+7, so at
// h = 8 each quad lane holds 2 heads of every query and the head sum needs two shuffle rounds per
// query; with 8x fewer MMA flops than H = 64 that epilogue dominates. Here B row n (= accumulator
// column) holds query 4*(j8/4) + q and head 2*(j8%4) + c (j8 = n/8, q = (n%8)/2, c = n%2): every
// thread owns all 8 heads of its 8 queries and sums them in registers, no shuffles. The fp32
// order is exactly the DSA kernel's at h = 8 (emulate_sm90_dsa_logit with h = 8):
//   u_i = fmaf(r[2i+1], w[2i+1], r[2i] * w[2i]) (i = 0..3), total = (u_0 + u_1) + (u_2 + u_3),
//   logit = total * s + 0, r = fmaxf(dot, 0); -inf outside [ks, ke).
constexpr int kCKeys = 64, kCStages = 4, kCN = 256, kCNWG = 2, kCQ = 32;  // kCQ: queries per warpgroup

struct CompactParams {
  const uint8_t* q;       // [nq, 8, d]
  const float* w;         // [nq, 8]
  float* logits;          // [nq, ld]
  int64_t ld, nq, n_blocks, blocks_per_cta;
  const uint8_t* k;       // [nk, d]
  const float* k_scale;   // [nk]
  const int32_t* ks;      // [nq]
  const int32_t* ke;      // [nq]
  int64_t nk;
};

template <int D>
struct CSmem {
  static constexpr int kQBytes = kCNWG * kCN * D;
  static constexpr int kWBytes = kCNWG * kCN * 4;
  static constexpr int kKBytes = kCKeys * D;
  static constexpr int kRows = kCNWG * kCQ;
  static constexpr int kOffW = kQBytes;
  static constexpr int kOffK = kOffW + kWBytes;
  static constexpr int kOffS = kOffK + kCNWG * kCStages * kKBytes;
  static constexpr int kOffRows = kOffS + kCNWG * kCStages * kCKeys * 4;
  static constexpr int kTotal = kOffRows + 2 * kRows * 4;
};

template <int D>
__global__ void __launch_bounds__(kCNWG * 128, 1) compact8_logits_kernel(const CompactParams p) {
  using L = CSmem<D>;
  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t* q_s = smem;
  float* w_s = reinterpret_cast<float*>(smem + L::kOffW);
  uint8_t* k_s = smem + L::kOffK;
  float* sc_s = reinterpret_cast<float*>(smem + L::kOffS);
  int32_t* row_lo = reinterpret_cast<int32_t*>(smem + L::kOffRows);
  int32_t* row_hi = row_lo + L::kRows;
  constexpr int kThreads = kCNWG * 128;
  const int tid = threadIdx.x;
  const int64_t tile = static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x;
  const int64_t row0 = tile * L::kRows;
  const int64_t rows_valid = min64(L::kRows, p.nq - row0);
  for (int r = tid; r < L::kRows; r += kThreads) {
    int32_t lo = 0, hi = 0;
    if (r < rows_valid) {
      int64_t a = p.ks[row0 + r], b = p.ke[row0 + r];
      a = max64(0, min64(a, p.nk));
      b = max64(a, min64(b, p.nk));
      lo = static_cast<int32_t>(a);
      hi = static_cast<int32_t>(b);
    }
    row_lo[r] = lo;
    row_hi[r] = hi;
  }
  constexpr int kQChunks = kCNWG * kCN * (D / 16);
  for (int c = tid; c < kQChunks; c += kThreads) {
    const int g = c / (kCN * (D / 16));
    const int cc = c % (kCN * (D / 16));
    int n, kc;
    tile_chunk(cc, D, &n, &kc);
    const int j8 = n >> 3;
    const int r = g * kCQ + 4 * (j8 >> 2) + ((n & 7) >> 1);
    const int hh = 2 * (j8 & 3) + (n & 1);
    const bool ok = r < rows_valid;
    const uint8_t* src = ok ? p.q + ((row0 + r) * 8 + hh) * D + kc * 16 : p.q;
    cp_async_16(q_s + g * kCN * D + core_offset(n, kc, D), src, ok ? 16 : 0);
  }
  for (int c = tid; c < kCNWG * kCN; c += kThreads) {
    const int g = c / kCN, n = c % kCN, j8 = n >> 3;
    const int r = g * kCQ + 4 * (j8 >> 2) + ((n & 7) >> 1);
    const int hh = 2 * (j8 & 3) + (n & 1);
    w_s[c] = r < rows_valid ? p.w[(row0 + r) * 8 + hh] : 0.0f;
  }
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  int32_t umin = INT32_MAX, umax = 0;
  for (int r = 0; r < L::kRows; ++r) {
    if (row_hi[r] > row_lo[r]) {
      umin = min(umin, row_lo[r]);
      umax = max(umax, row_hi[r]);
    }
  }
  const int64_t c_lo = static_cast<int64_t>(blockIdx.y) * p.blocks_per_cta;
  const int64_t c_hi = min64(c_lo + p.blocks_per_cta, p.n_blocks);
  int64_t blo = c_lo, bhi = c_lo;
  if (umax > umin) {
    blo = max64(c_lo, umin / kCKeys);
    bhi = min64(c_hi, (static_cast<int64_t>(umax) + kCKeys - 1) / kCKeys);
    if (bhi < blo) bhi = blo;
  }
  {
    const int64_t col_a = c_lo * kCKeys, col_b = min64(c_hi * kCKeys, p.nk);
    const int64_t act_a = blo * kCKeys, act_b = bhi * kCKeys;
    const int64_t width = col_b - col_a;
    for (int r = 0; r < rows_valid; ++r) {
      float* out = p.logits + (row0 + r) * p.ld;
      for (int64_t t = tid; t < width; t += kThreads) {
        const int64_t j = col_a + t;
        if (j < act_a || j >= act_b) out[j] = -INFINITY;
      }
    }
  }
  const int64_t nblk = bhi - blo;
  const int wg = tid / 128;
  const int wtid = tid % 128;
  const int warp = wtid / 32;
  const int lane = tid % 32;
  const int quad = lane & 3;
  uint8_t* k_wg = k_s + wg * kCStages * L::kKBytes;
  float* sc_wg = sc_s + wg * kCStages * kCKeys;

  auto load_block = [&](int64_t b, int stage) {
    uint8_t* kd = k_wg + stage * L::kKBytes;
    float* sd = sc_wg + stage * kCKeys;
    const uint8_t* base = p.k + b * kCKeys * D;
    const float* sbase = p.k_scale + b * kCKeys;
    const int valid_rows = static_cast<int>(min64(kCKeys, p.nk - b * kCKeys));
    cp_async_key_block<kCKeys, D, true>(kd, sd, base, sbase, valid_rows, wtid);
  };
#pragma unroll
  for (int s = 0; s < kCStages - 1; ++s) {
    if (s < nblk) load_block(blo + s, s);
    cp_async_commit();
  }
  const uint32_t q_addr = smem_u32(q_s + wg * kCN * D);
  float acc[kCN / 2];
  for (int64_t it = 0; it < nblk; ++it) {
    const int stage = static_cast<int>(it % kCStages);
    cp_async_wait<kCStages - 2>();
    fence_proxy_async();
    named_barrier_sync(1 + wg, 128);
    {
      const int64_t nb = it + kCStages - 1;
      if (nb < nblk) load_block(blo + nb, static_cast<int>(nb % kCStages));
      cp_async_commit();
    }
    const uint32_t k_addr = smem_u32(k_wg + stage * L::kKBytes);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < D / 32; ++s) {
      const uint64_t da = make_desc(k_addr + s * 256, 128, 8 * D);
      const uint64_t db = make_desc(q_addr + s * 256, 128, 8 * D);
      wgmma_m64n256k32_e4m3(acc, da, db, s > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(acc);
    const int64_t b = blo + it;
    const int r0 = warp * 16 + (lane >> 2);
    const int64_t j0 = b * kCKeys + r0, j1 = j0 + 8;
    const float s0 = sc_wg[stage * kCKeys + r0], s1 = sc_wg[stage * kCKeys + r0 + 8];
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      float u0[4], u1[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int j8 = 4 * m + i;
        const float2 wv = *reinterpret_cast<const float2*>(&w_s[wg * kCN + j8 * 8 + quad * 2]);
        u0[i] = fmaf(fmaxf(acc[4 * j8 + 1], 0.0f), wv.y, __fmul_rn(fmaxf(acc[4 * j8 + 0], 0.0f), wv.x));
        u1[i] = fmaf(fmaxf(acc[4 * j8 + 3], 0.0f), wv.y, __fmul_rn(fmaxf(acc[4 * j8 + 2], 0.0f), wv.x));
      }
      const float t0 = __fadd_rn(__fadd_rn(u0[0], u0[1]), __fadd_rn(u0[2], u0[3]));
      const float t1 = __fadd_rn(__fadd_rn(u1[0], u1[1]), __fadd_rn(u1[2], u1[3]));
      const int ql = wg * kCQ + 4 * m + quad;
      if (ql < rows_valid) {
        const int32_t lo = row_lo[ql], hi = row_hi[ql];
        float* out = p.logits + (row0 + ql) * p.ld;
        if (j0 < p.nk) out[j0] = (j0 >= lo && j0 < hi) ? __fadd_rn(__fmul_rn(t0, s0), 0.0f) : -INFINITY;
        if (j1 < p.nk) out[j1] = (j1 >= lo && j1 < hi) ? __fadd_rn(__fmul_rn(t1, s1), 0.0f) : -INFINITY;
      }
    }
  }
  cp_async_wait<0>();
}

int sm_count() {
  static int n = [] {
    int dev = 0, v = 132;
    if (cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
      return v;
    return 132;
  }();
  return n;
}

template <int D>
Status launch_compact8_d(const CompactParams& kp, dim3 grid, cudaStream_t st) {
  auto kernel = compact8_logits_kernel<D>;
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, CSmem<D>::kTotal));
  kernel<<<grid, kCNWG * 128, CSmem<D>::kTotal, st>>>(kp);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

/// Flat routed logits for 8 compact heads (LogitsParams with h = 8).
Status launch_compact8_logits(const LogitsParams& p) {
  if (p.h != 8) return error("compact logits: h = ", p.h, " (need 8)");
  if (p.d != 64 && p.d != 128) return error("compact logits: d = ", p.d, " (need 64 or 128)");
  if (p.ld < p.nk) return error("ld = ", p.ld, " is smaller than nk = ", p.nk);
  if (p.nq == 0 || p.nk == 0) return Status::Ok();
  CompactParams kp{};
  kp.q = p.q;
  kp.w = p.w;
  kp.logits = p.logits;
  kp.ld = p.ld;
  kp.nq = p.nq;
  kp.n_blocks = (p.nk + kCKeys - 1) / kCKeys;
  kp.k = p.k;
  kp.k_scale = p.k_scale;
  kp.ks = p.ks;
  kp.ke = p.ke;
  kp.nk = p.nk;
  const int64_t tiles = (p.nq + kCNWG * kCQ - 1) / (kCNWG * kCQ);
  if (tiles > INT32_MAX) return error("nq = ", p.nq, " is too large");
  const int64_t target = 4 * static_cast<int64_t>(sm_count());
  const int64_t want_chunks = max64(1, (target + tiles - 1) / tiles);
  int64_t bpc = (kp.n_blocks + want_chunks - 1) / want_chunks;
  bpc = min64(max64(bpc, 16), max64(kp.n_blocks, 1));
  kp.blocks_per_cta = bpc;
  const int64_t chunks = (kp.n_blocks + bpc - 1) / bpc;
  if (chunks > 65535) return error("nk = ", p.nk, " is too large");
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  cudaStream_t st = static_cast<cudaStream_t>(p.stream);
  return p.d == 64 ? launch_compact8_d<64>(kp, grid, st) : launch_compact8_d<128>(kp, grid, st);
}

size_t router_smem(int H, int d, int hp) {
  return sizeof(float) * (static_cast<size_t>(H) * d + kRouterTile * (d + 4) + H * (kRouterTile + 1) + H) +
         sizeof(int) * (H + hp);
}

Status launch_router(const RouterParams& p, cudaStream_t st) {
  if (p.rows == 0) return Status::Ok();
  if (p.rows > INT32_MAX) return error("router: rows = ", p.rows, " is too large");
  const size_t smem = router_smem(p.H, p.d, p.hp);
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(router_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  router_kernel<<<static_cast<unsigned>(p.rows), kRouterThreads, smem, st>>>(p);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

// Per-row ascending sort of the dagger candidates (-1 last): bitonic in shared memory, so the
// stage-2 top-k's column tie-break equals the key tie-break.
__global__ void __launch_bounds__(kSortThreads) sort_rows_kernel(int32_t* cand, int64_t k1, int n2) {
  extern __shared__ int32_t ss[];
  int32_t* c = cand + static_cast<int64_t>(blockIdx.x) * k1;
  for (int i = threadIdx.x; i < n2; i += blockDim.x) {
    const int32_t v = i < k1 ? c[i] : -1;
    ss[i] = v < 0 ? INT_MAX : v;
  }
  __syncthreads();
  for (int size = 2; size <= n2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n2; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const bool up = (i & size) == 0;
          const int32_t a = ss[i], b = ss[j];
          if ((a > b) == up && a != b) {
            ss[i] = b;
            ss[j] = a;
          }
        }
      }
      __syncthreads();
    }
  }
  for (int i = threadIdx.x; i < k1; i += blockDim.x) c[i] = ss[i] == INT_MAX ? -1 : ss[i];
}

// The same ascending order through a bitmap of the row's visible range [lo, hi): every candidate
// sets its bit, then each thread turns its span of words back into keys at its prefix-count
// offset. O(range / 32 + K1) per row; used when the widest range of the chunk fits kBitmapBits.
constexpr int64_t kBitmapBits = int64_t{1} << 20;  // 128 KiB of shared memory
__global__ void __launch_bounds__(kSortThreads) bitmap_sort_kernel(int32_t* cand, int64_t k1,
                                                                   const int32_t* lo, const int32_t* hi) {
  extern __shared__ uint32_t bm[];
  __shared__ int warp_sums[kSortThreads / 32];
  const int tid = threadIdx.x;
  int32_t* c = cand + static_cast<int64_t>(blockIdx.x) * k1;
  const int64_t a = lo ? lo[blockIdx.x] : 0, b = hi[blockIdx.x];
  const int64_t range = max64(0, min64(b - a, kBitmapBits));
  const int words = static_cast<int>((range + 31) / 32);
  for (int i = tid; i < words; i += blockDim.x) bm[i] = 0u;
  __syncthreads();
  for (int64_t t = tid; t < k1; t += blockDim.x) {
    const int64_t v = c[t];
    if (v >= a && v - a < range) atomicOr(&bm[(v - a) >> 5], 1u << ((v - a) & 31));
  }
  __syncthreads();
  const int per = (words + kSortThreads - 1) / kSortThreads;
  const int w0 = min(words, tid * per), w1 = min(words, w0 + per);
  int cnt = 0;
  for (int w = w0; w < w1; ++w) cnt += __popc(bm[w]);
  // Block-wide exclusive scan of cnt.
  const int lane = tid & 31, warp = tid >> 5;
  int incl = cnt;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int ws = lane < kSortThreads / 32 ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, ws, o);
      if (lane >= o) ws += y;
    }
    if (lane < kSortThreads / 32) warp_sums[lane] = ws;  // inclusive over warps
  }
  __syncthreads();
  const int total = warp_sums[kSortThreads / 32 - 1];
  int pos = incl - cnt + (warp > 0 ? warp_sums[warp - 1] : 0);
  for (int w = w0; w < w1; ++w) {
    uint32_t bits = bm[w];
    while (bits) {
      const int lsb = __ffs(bits) - 1;
      c[pos++] = static_cast<int32_t>(a + static_cast<int64_t>(w) * 32 + lsb);
      bits &= bits - 1;
    }
  }
  for (int64_t t = total + tid; t < k1; t += blockDim.x) c[t] = -1;
}

Status launch_bitmap_sort(int32_t* cand, int64_t rows, int64_t k1, const int32_t* lo, const int32_t* hi,
                          int64_t max_range, cudaStream_t st) {
  if (rows == 0 || k1 == 0) return Status::Ok();
  const int64_t words = (std::min(max_range, kBitmapBits) + 31) / 32;
  const size_t smem = sizeof(uint32_t) * static_cast<size_t>(std::max<int64_t>(words, 1));
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(bitmap_sort_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  bitmap_sort_kernel<<<static_cast<unsigned>(rows), kSortThreads, smem, st>>>(cand, k1, lo, hi);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

Status launch_sort_rows(int32_t* cand, int64_t rows, int64_t k1, cudaStream_t st) {
  if (rows == 0 || k1 == 0) return Status::Ok();
  int n2 = 1;
  while (n2 < k1) n2 <<= 1;
  const size_t smem = sizeof(int32_t) * n2;
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(sort_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  sort_rows_kernel<<<static_cast<unsigned>(rows), kSortThreads, smem, st>>>(cand, k1, n2);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

// ---- The whole path on device buffers ---------------------------------------------------------

/// Host metadata of the rows of one problem: what the router pools and which rows form a chunk.
struct Chunk {
  int64_t r0 = 0, rn = 0;                          // rows [r0, r0 + rn)
  int64_t max_range = 0;                           // widest visible range of its rows
  int64_t min_range = 0;                           // narrowest (the top-k's min_len_hint)
  std::vector<int32_t> pbeg, pend, pseq;           // [npools] pooled ranges (paged: positions)
  std::vector<int32_t> row_ptr, pool_ids;          // CSR of each row's router blocks
  DeviceArray<int32_t> d_pbeg, d_pend, d_pseq, d_row_ptr, d_pool_ids;
};

/// One MISA / MISA-dagger problem on the device (inputs, workspaces, outputs) and its run.
class MisaRunner {
 public:
  bool paged = false, dagger = false;
  ref::Options opt;
  int64_t rows = 0, cols = 0, nk = 0;
  int H = 0, d = 0, h = 0, hp = 0, K = 0;
  int64_t k1 = 0;
  bool use_dsa_score = false;  // hp = 8 flat: the DSA logits kernel instead of compact8 (same numbers)
  bool use_bitonic = false;    // dagger: the bitonic candidate sort instead of the bitmap one
  // inputs
  DeviceArray<uint8_t> q, k, cache;
  DeviceArray<float> w, q_scale, k_scale;
  DeviceArray<int32_t> ks, ke, zeros, block_table, context_lens;
  int64_t batch = 0, max_pages = 0, num_pages = 0;
  int next_n = 1;
  // workspaces (per chunk, reused)
  DeviceArray<float> pooled, w_act, logits, glog;
  DeviceArray<uint8_t> q_act;
  DeviceArray<int32_t> cand;
  // outputs
  DeviceArray<int32_t> index, active;
  DeviceArray<float> score;
  std::vector<std::unique_ptr<Chunk>> chunks;
  std::vector<int32_t> h_ks, h_ke;  // host copies (ke = visible positions when paged)
  // Paged pooled routing with a router block that is a multiple of 64: the router reads the fp32
  // means of this cache (slot seq * blocks_per_seq + block) instead of pooling per call.
  const PagedPooledCache* pooled_cache = nullptr;
  double router_pairs = 0;          // (row, block) pairs the router scores

  /// Plans the chunks from the row ranges. end/origin: flat pooling end and release origin.
  Status plan(const std::vector<int32_t>& end, const std::vector<int32_t>& origin) {
    int64_t max_chunk = detail::chunk_rows(rows, std::max<int64_t>(cols, dagger ? k1 : 1));
    if (const char* e = std::getenv("INDEXLAB_MISA_CHUNK_ROWS")) {  // tests: force small chunks
      const int64_t v = std::strtoll(e, nullptr, 10);
      if (v > 0) max_chunk = std::min(max_chunk, v);
    }
    if (paged) max_chunk = std::max<int64_t>(1, max_chunk / next_n) * next_n;
    std::vector<ref::RouterBlock> blocks;
    chunks.clear();
    router_pairs = 0;
    int64_t r = 0;
    while (r < rows) {
      auto cp = std::make_unique<Chunk>();
      Chunk& c = *cp;
      c.r0 = r;
      std::map<std::tuple<int64_t, int64_t, int64_t>, int32_t> ids;
      c.row_ptr.push_back(0);
      while (r < rows && c.rn < max_chunk) {
        const int64_t unit = paged ? next_n : 1;  // paged chunks hold whole sequences
        std::vector<int32_t> add_ptr, add_ids;
        int64_t new_pools = 0;
        std::map<std::tuple<int64_t, int64_t, int64_t>, int32_t> add;
        std::vector<int32_t> rowlist;
        for (int64_t u = 0; u < unit; ++u) {
          const int64_t i = r + u;
          if (opt.routing == ref::Routing::kPooled) {
            if (!paged) {
              ref::misa_router_blocks(h_ks[i], h_ke[i], end[i], origin[i], opt, &blocks);
            } else {
              ref::misa_router_blocks(0, h_ke[i], end[i], 0, opt, &blocks);
            }
            const int64_t seq = paged ? i / next_n : 0;
            if (pooled_cache) {  // blocks [t Br, min((t + 1) Br, ctx)): the cache's slots
              const int64_t br = pooled_cache->block();
              for (const auto& b : blocks) {
                if (b.begin % br != 0 || b.end != std::min<int64_t>(b.begin + br, end[i]))
                  return error("row ", i, ": router block [", b.begin, ", ", b.end, ") is not a pooled-cache block");
                add_ids.push_back(static_cast<int32_t>(seq * pooled_cache->blocks_per_seq() + b.begin / br));
              }
              add_ptr.push_back(static_cast<int32_t>(c.pool_ids.size() + add_ids.size()));
              continue;
            }
            for (const auto& b : blocks) {
              const auto key = std::make_tuple(seq, b.begin, b.end);
              auto it = ids.find(key);
              int32_t id;
              if (it != ids.end()) {
                id = it->second;
              } else {
                auto it2 = add.find(key);
                if (it2 != add.end()) {
                  id = it2->second;
                } else {
                  id = static_cast<int32_t>(ids.size() + add.size());
                  add.emplace(key, id);
                  ++new_pools;
                }
              }
              add_ids.push_back(id);
            }
          }
          add_ptr.push_back(static_cast<int32_t>(c.pool_ids.size() + add_ids.size()));
        }
        if (c.rn > 0 && static_cast<int64_t>(ids.size()) + new_pools > kPoolBudget) break;
        if (static_cast<int64_t>(c.pool_ids.size() + add_ids.size()) > INT32_MAX)
          return error("the router of rows ", c.r0, ".. needs more than 2^31 block entries");
        for (auto& kv : add) ids.emplace(kv.first, kv.second);
        c.pool_ids.insert(c.pool_ids.end(), add_ids.begin(), add_ids.end());
        c.row_ptr.insert(c.row_ptr.end(), add_ptr.begin(), add_ptr.end());
        c.rn += unit;
        r += unit;
      }
      c.min_range = INT64_MAX;
      for (int64_t i = c.r0; i < c.r0 + c.rn; ++i) {
        const int64_t len = static_cast<int64_t>(h_ke[i]) - (paged ? 0 : h_ks[i]);
        c.max_range = std::max(c.max_range, len);
        c.min_range = std::min(c.min_range, len);
      }
      if (c.rn == 0) c.min_range = 0;
      c.pbeg.resize(ids.size());
      c.pend.resize(ids.size());
      c.pseq.resize(ids.size());
      for (const auto& kv : ids) {
        c.pseq[kv.second] = static_cast<int32_t>(std::get<0>(kv.first));
        c.pbeg[kv.second] = static_cast<int32_t>(std::get<1>(kv.first));
        c.pend[kv.second] = static_cast<int32_t>(std::get<2>(kv.first));
      }
      router_pairs += static_cast<double>(c.pool_ids.size());
      INDEXLAB_RETURN_IF_ERROR(c.d_pbeg.upload(c.pbeg));
      INDEXLAB_RETURN_IF_ERROR(c.d_pend.upload(c.pend));
      if (paged) INDEXLAB_RETURN_IF_ERROR(c.d_pseq.upload(c.pseq));
      INDEXLAB_RETURN_IF_ERROR(c.d_row_ptr.upload(c.row_ptr));
      INDEXLAB_RETURN_IF_ERROR(c.d_pool_ids.upload(c.pool_ids));
      chunks.push_back(std::move(cp));
    }
    size_t max_pools = 0;
    int64_t max_rn = 0;
    for (const auto& c : chunks) {
      max_pools = std::max(max_pools, c->pbeg.size());
      max_rn = std::max(max_rn, c->rn);
    }
    INDEXLAB_RETURN_IF_ERROR(pooled.alloc(max_pools * d));
    INDEXLAB_RETURN_IF_ERROR(q_act.alloc(static_cast<size_t>(max_rn) * hp * d));
    INDEXLAB_RETURN_IF_ERROR(w_act.alloc(static_cast<size_t>(max_rn) * hp));
    INDEXLAB_RETURN_IF_ERROR(logits.alloc(static_cast<size_t>(max_rn * cols)));
    if (dagger) {
      INDEXLAB_RETURN_IF_ERROR(cand.alloc(static_cast<size_t>(max_rn * k1)));
      INDEXLAB_RETURN_IF_ERROR(glog.alloc(static_cast<size_t>(max_rn * k1)));
    }
    INDEXLAB_RETURN_IF_ERROR(index.alloc(static_cast<size_t>(rows) * K));
    INDEXLAB_RETURN_IF_ERROR(score.alloc(static_cast<size_t>(rows) * K));
    INDEXLAB_RETURN_IF_ERROR(active.alloc(static_cast<size_t>(rows) * h));
    return Status::Ok();
  }

  /// Runs every chunk; after_chunk (may be null) is called after each chunk's kernels finished.
  template <typename F>
  Status run(StageTimer* timer, F&& after_chunk) {
    auto mark = [&](const char* name) -> Status {
      if (timer) return timer->mark(name);
      return Status::Ok();
    };
    const bool absolute = opt.index_base == ref::IndexBase::kAbsolute;
    for (auto& cu : chunks) {
      Chunk& c = *cu;
      const int64_t r0 = c.r0, rn = c.rn;
      const int64_t b0 = paged ? r0 / next_n : 0;
      if (opt.routing == ref::Routing::kPooled && !c.pbeg.empty()) {
        PoolParams pp;
        pp.k = k.get();
        pp.k_scale = k_scale.get();
        pp.nk = nk;
        if (paged) {
          pp.cache = cache.get();
          pp.block_table = block_table.get();
          pp.max_pages = max_pages;
          pp.num_pages = num_pages;
          pp.seq = c.d_pseq.get();
        }
        pp.begin = c.d_pbeg.get();
        pp.end = c.d_pend.get();
        pp.nblocks = static_cast<int64_t>(c.pbeg.size());
        pp.d = d;
        pp.pooled_f32 = pooled.get();
        INDEXLAB_RETURN_IF_ERROR(launch_pool_fp8(pp));
      }
      INDEXLAB_RETURN_IF_ERROR(mark("pool"));
      RouterParams rp;
      rp.q = q.get() + r0 * H * d;
      rp.w = w.get() + r0 * H;
      rp.q_scale = q_scale.size() ? q_scale.get() + r0 * H : nullptr;
      rp.rows = rn;
      rp.H = H;
      rp.d = d;
      rp.h = h;
      rp.hp = hp;
      rp.mode = opt.routing == ref::Routing::kPooled ? kModePooled
                : opt.routing == ref::Routing::kOwnKey ? kModeOwnKey : kModeQNorm;
      rp.pooled = pooled_cache ? pooled_cache->means() : pooled.get();
      rp.row_ptr = c.d_row_ptr.get();
      rp.pool_ids = c.d_pool_ids.get();
      rp.k = k.get();
      rp.k_scale = k_scale.get();
      rp.ks = paged ? nullptr : ks.get() + r0;
      rp.ke = ke.get() + r0;
      rp.nk = nk;
      if (paged) {
        rp.cache = cache.get();
        rp.block_table = block_table.get() + b0 * max_pages;
        rp.max_pages = max_pages;
        rp.num_pages = num_pages;
        rp.next_n = next_n;
      }
      rp.active = active.get() + r0 * h;
      rp.q_act = q_act.get();
      rp.w_act = w_act.get();
      INDEXLAB_RETURN_IF_ERROR(launch_router(rp, nullptr));
      INDEXLAB_RETURN_IF_ERROR(mark("router"));
      if (!paged) {
        LogitsParams lp;
        lp.q = q_act.get();
        lp.k = k.get();
        lp.k_scale = k_scale.get();
        lp.w = w_act.get();
        lp.ks = ks.get() + r0;
        lp.ke = ke.get() + r0;
        lp.logits = logits.get();
        lp.nq = rn;
        lp.nk = nk;
        lp.ld = cols;
        lp.h = hp;
        lp.d = d;
        INDEXLAB_RETURN_IF_ERROR(hp == 8 && !use_dsa_score ? launch_compact8_logits(lp) : launch_mqa_logits_fp8(lp));
      } else {
        PagedLogitsParams pp;
        pp.q = q_act.get();
        pp.w = w_act.get();
        pp.cache = cache.get();
        pp.block_table = block_table.get() + b0 * max_pages;
        pp.context_lens = context_lens.get() + b0;
        pp.logits = logits.get();
        pp.batch = rn / next_n;
        pp.max_pages = max_pages;
        pp.num_pages = num_pages;
        pp.ld = cols;
        pp.h = hp;
        pp.d = d;
        pp.next_n = next_n;
        INDEXLAB_RETURN_IF_ERROR(launch_paged_logits_fp8(pp));
      }
      INDEXLAB_RETURN_IF_ERROR(mark("score"));
      TopkParams tp;
      tp.logits = logits.get();
      tp.ks = paged ? nullptr : ks.get() + r0;
      tp.ke = ke.get() + r0;
      tp.rows = rn;
      tp.cols = cols;
      tp.ld = cols;
      tp.min_len_hint = c.min_range;
      if (!dagger) {
        tp.index = index.get() + r0 * K;
        tp.score = score.get() + r0 * K;
        tp.k = K;
        tp.absolute = absolute;
        if (paged) {
          tp.block_table = block_table.get() + b0 * max_pages;
          tp.max_pages = max_pages;
          tp.next_n = next_n;
        }
        INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
        INDEXLAB_RETURN_IF_ERROR(mark("topk"));
      } else {
        // Stage 1: top K1 keys (flat: absolute keys; paged: positions), sorted ascending.
        tp.index = cand.get();
        tp.score = nullptr;
        tp.k = static_cast<int>(k1);
        tp.absolute = !paged;
        INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
        INDEXLAB_RETURN_IF_ERROR(mark("topk"));
        if (c.max_range <= kBitmapBits && !use_bitonic)
          INDEXLAB_RETURN_IF_ERROR(launch_bitmap_sort(cand.get(), rn, k1, paged ? nullptr : ks.get() + r0,
                                                      ke.get() + r0, c.max_range, nullptr));
        else
          INDEXLAB_RETURN_IF_ERROR(launch_sort_rows(cand.get(), rn, k1, nullptr));
        INDEXLAB_RETURN_IF_ERROR(mark("sort"));
        // Stage 2: every head on the listed candidates.
        GatherLogitsParams gp;
        gp.q = q.get() + r0 * H * d;
        gp.w = w.get() + r0 * H;
        if (!paged) {
          gp.k = k.get();
          gp.k_scale = k_scale.get();
          gp.nk = nk;
          gp.lo = ks.get() + r0;
        } else {
          gp.cache = cache.get();
          gp.block_table = block_table.get() + b0 * max_pages;
          gp.max_pages = max_pages;
          gp.num_pages = num_pages;
          gp.next_n = next_n;
          gp.lo = zeros.get();
        }
        gp.hi = ke.get() + r0;
        gp.cand = cand.get();
        gp.ncand = k1;
        gp.logits = glog.get();
        gp.ld = k1;
        gp.nq = rn;
        gp.h = H;
        gp.d = d;
        INDEXLAB_RETURN_IF_ERROR(launch_gather_logits_fp8(gp));
        INDEXLAB_RETURN_IF_ERROR(mark("rescore"));
        TopkParams t2;
        t2.logits = glog.get();
        t2.index = index.get() + r0 * K;
        t2.score = score.get() + r0 * K;
        t2.rows = rn;
        t2.cols = k1;
        t2.ld = k1;
        t2.k = K;
        t2.absolute = true;  // columns; mapped to keys next
        INDEXLAB_RETURN_IF_ERROR(launch_topk(t2));
        RemapParams mp;
        mp.index = index.get() + r0 * K;
        mp.rows = rn;
        mp.k = K;
        mp.cand = cand.get();
        mp.ncand = k1;
        if (!paged && !absolute) mp.base = ks.get() + r0;
        if (paged && absolute) {
          mp.block_table = block_table.get() + b0 * max_pages;
          mp.max_pages = max_pages;
          mp.next_n = next_n;
        }
        INDEXLAB_RETURN_IF_ERROR(launch_remap_indices(mp));
        INDEXLAB_RETURN_IF_ERROR(mark("topk2"));
      }
      INDEXLAB_RETURN_IF_ERROR(after_chunk(c));
    }
    return Status::Ok();
  }
};

// INDEXLAB_MISA_SCORE=dsa: routed scoring through launch_mqa_logits_fp8 even for hp = 8.
bool dsa_score_requested() {
  const char* e = std::getenv("INDEXLAB_MISA_SCORE");
  return e && std::string(e) == "dsa";
}

// INDEXLAB_MISA_SORT=bitonic: dagger candidates sorted by the bitonic kernel.
bool bitonic_requested() {
  const char* e = std::getenv("INDEXLAB_MISA_SORT");
  return e && std::string(e) == "bitonic";
}

Status common_checks(ref::Path path, int H, int h) {
  if (path != ref::Path::kMisa && path != ref::Path::kMisaDagger)
    return error("path = ", ref::path_name(path), " is not a MISA path");
  if (ref::misa_padded_heads(h) == 0) return error("misa_heads = ", h, " is more than 128");
  (void)H;
  return Status::Ok();
}

void init_result(const MisaRunner& m, ref::Result* out) {
  out->nq = m.rows;
  out->k = m.K;
  out->index.assign(static_cast<size_t>(m.rows) * m.K, -1);
  out->score.assign(static_cast<size_t>(m.rows) * m.K, -INFINITY);
  out->bound.clear();
  out->ambiguous.clear();
  out->active_heads.assign(static_cast<size_t>(m.rows) * m.h, -1);
  out->logits_cols = m.opt.want_logits ? m.cols : 0;
  out->logits.clear();
  if (m.opt.want_logits) out->logits.assign(static_cast<size_t>(m.rows * m.cols), -INFINITY);
}

/// Copies a chunk's final scores into out->logits: MISA's dense logits, or dagger's rescored
/// candidates (every other column -inf). col_base: subtracted from a candidate (flat: 0).
Status download_chunk_logits(MisaRunner& m, const Chunk& c, ref::Result* out) {
  if (!m.opt.want_logits) return Status::Ok();
  INDEXLAB_RETURN_IF_ERROR(sync_check());
  float* dst = out->logits.data() + c.r0 * m.cols;
  if (!m.dagger) return m.logits.download(dst, static_cast<size_t>(c.rn * m.cols));
  std::vector<int32_t> cand(static_cast<size_t>(c.rn * m.k1));
  std::vector<float> gl(cand.size());
  INDEXLAB_RETURN_IF_ERROR(m.cand.download(cand.data(), cand.size()));
  INDEXLAB_RETURN_IF_ERROR(m.glog.download(gl.data(), gl.size()));
  for (int64_t r = 0; r < c.rn; ++r)
    for (int64_t t = 0; t < m.k1; ++t) {
      const int32_t j = cand[r * m.k1 + t];
      if (j >= 0 && j < m.cols) dst[r * m.cols + j] = gl[r * m.k1 + t];
    }
  return Status::Ok();
}

Status finish_result(MisaRunner& m, ref::Result* out) {
  INDEXLAB_RETURN_IF_ERROR(sync_check());
  INDEXLAB_RETURN_IF_ERROR(m.index.download(out->index.data(), out->index.size()));
  INDEXLAB_RETURN_IF_ERROR(m.score.download(out->score.data(), out->score.size()));
  INDEXLAB_RETURN_IF_ERROR(m.active.download(out->active_heads.data(), out->active_heads.size()));
  return Status::Ok();
}

Status poison_all(MisaRunner& m) {
  INDEXLAB_RETURN_IF_ERROR(poison(m.index, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(poison(m.score, 0xFF));
  INDEXLAB_RETURN_IF_ERROR(poison(m.active, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(poison(m.logits, 0xFF));
  INDEXLAB_RETURN_IF_ERROR(poison(m.q_act, 0xFF));
  INDEXLAB_RETURN_IF_ERROR(poison(m.w_act, 0xFF));
  INDEXLAB_RETURN_IF_ERROR(poison(m.pooled, 0xFF));
  if (m.dagger) {
    INDEXLAB_RETURN_IF_ERROR(poison(m.cand, 0x7F));
    INDEXLAB_RETURN_IF_ERROR(poison(m.glog, 0xFF));
  }
  return Status::Ok();
}

Status misa_flat(ref::Path path, const ref::Inputs& in, const ref::Options& opt, ref::Result* out) {
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(can_implement_sparse(path, in, opt));
  INDEXLAB_RETURN_IF_ERROR(common_checks(path, in.shape.h, opt.misa_heads));
  INDEXLAB_RETURN_IF_ERROR(need_device());
  MisaRunner m;
  m.paged = false;
  m.dagger = path == ref::Path::kMisaDagger;
  m.opt = opt;
  m.rows = in.shape.nq;
  m.nk = in.shape.nk;
  m.cols = in.shape.nk;
  m.H = in.shape.h;
  m.d = in.shape.d;
  m.h = opt.misa_heads;
  m.hp = ref::misa_padded_heads(m.h);
  m.K = in.shape.k;
  m.k1 = opt.dagger_k1;
  m.h_ks = in.ks;
  m.h_ke = in.ke;
  std::vector<float> scale = in.k_scale;
  if (scale.empty()) scale.assign(static_cast<size_t>(m.nk), 1.0f);
  INDEXLAB_RETURN_IF_ERROR(m.q.upload(to_e4m3(in.q)));
  INDEXLAB_RETURN_IF_ERROR(m.k.upload(to_e4m3(in.k)));
  INDEXLAB_RETURN_IF_ERROR(m.k_scale.upload(scale));
  INDEXLAB_RETURN_IF_ERROR(m.w.upload(in.w));
  if (opt.routing == ref::Routing::kQNorm && !in.q_scale.empty())
    INDEXLAB_RETURN_IF_ERROR(m.q_scale.upload(in.q_scale));
  INDEXLAB_RETURN_IF_ERROR(m.ks.upload(in.ks));
  INDEXLAB_RETURN_IF_ERROR(m.ke.upload(in.ke));
  std::vector<int32_t> end(static_cast<size_t>(m.rows)), origin(static_cast<size_t>(m.rows));
  for (int64_t i = 0; i < m.rows; ++i) {
    end[i] = in.seq_end.empty() ? static_cast<int32_t>(m.nk) : in.seq_end[i];
    origin[i] = in.block_origin.empty() ? 0 : in.block_origin[i];
  }
  m.use_dsa_score = dsa_score_requested();
  m.use_bitonic = bitonic_requested();
  INDEXLAB_RETURN_IF_ERROR(m.plan(end, origin));
  init_result(m, out);
  INDEXLAB_RETURN_IF_ERROR(poison_all(m));
  INDEXLAB_RETURN_IF_ERROR(
      m.run(nullptr, [&](const Chunk& c) { return download_chunk_logits(m, c, out); }));
  return finish_result(m, out);
}

/// Paged pooled routing reads a PagedPooledCache when its blocks can be cache slots: a router
/// block that is a multiple of 64 (the cache's granularity) and int32 slot ids. Otherwise the
/// router's blocks are pooled on every call (launch_pool_fp8), with the same bits.
bool use_pooled_cache(const ref::Options& opt, int64_t batch, int64_t max_pages) {
  if (opt.routing != ref::Routing::kPooled || opt.misa_block < 64 || opt.misa_block % 64 != 0) return false;
  const int64_t bps = (max_pages * 64 + opt.misa_block - 1) / opt.misa_block;
  return batch * bps <= INT32_MAX;
}

Status misa_paged(ref::Path path, const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out) {
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(can_implement_sparse(path, in, opt));
  INDEXLAB_RETURN_IF_ERROR(common_checks(path, in.h, opt.misa_heads));
  INDEXLAB_RETURN_IF_ERROR(need_device());
  if (opt.index_base == ref::IndexBase::kAbsolute && in.num_pages * 64 > INT32_MAX)
    return error("absolute slot indices need num_pages * 64 <= 2^31 - 1");
  MisaRunner m;
  m.paged = true;
  m.dagger = path == ref::Path::kMisaDagger;
  m.opt = opt;
  m.rows = in.rows();
  m.cols = in.max_pages * 64;
  m.H = in.h;
  m.d = in.d;
  m.h = opt.misa_heads;
  m.hp = ref::misa_padded_heads(m.h);
  m.K = in.k;
  m.k1 = opt.dagger_k1;
  m.batch = in.batch;
  m.max_pages = in.max_pages;
  m.num_pages = in.num_pages;
  m.next_n = in.next_n;
  const int nn = in.next_n;
  m.h_ks.assign(static_cast<size_t>(m.rows), 0);
  m.h_ke.resize(static_cast<size_t>(m.rows));
  std::vector<int32_t> end(static_cast<size_t>(m.rows)), origin(static_cast<size_t>(m.rows), 0);
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t ctx = in.context_lens[r / nn];
    m.h_ke[r] = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - nn + (r % nn) + 1)));
    end[r] = static_cast<int32_t>(ctx);
  }
  INDEXLAB_RETURN_IF_ERROR(m.q.upload(to_e4m3(in.q)));
  INDEXLAB_RETURN_IF_ERROR(m.w.upload(in.w));
  if (opt.routing == ref::Routing::kQNorm && !in.q_scale.empty())
    INDEXLAB_RETURN_IF_ERROR(m.q_scale.upload(in.q_scale));
  INDEXLAB_RETURN_IF_ERROR(m.cache.upload(in.cache));
  INDEXLAB_RETURN_IF_ERROR(m.block_table.upload(in.block_table));
  INDEXLAB_RETURN_IF_ERROR(m.context_lens.upload(in.context_lens));
  INDEXLAB_RETURN_IF_ERROR(m.ke.upload(m.h_ke));
  INDEXLAB_RETURN_IF_ERROR(m.zeros.upload(m.h_ks));
  PagedPooledCache pc;
  if (use_pooled_cache(opt, in.batch, in.max_pages)) {
    INDEXLAB_RETURN_IF_ERROR(pc.reset(in.batch, in.max_pages, opt.misa_block, in.d, PooledForm::kMeans));
    INDEXLAB_RETURN_IF_ERROR(pc.update(m.cache.get(), m.block_table.get(), in.num_pages, in.context_lens, nullptr));
    m.pooled_cache = &pc;
  }
  m.use_dsa_score = dsa_score_requested();
  m.use_bitonic = bitonic_requested();
  INDEXLAB_RETURN_IF_ERROR(m.plan(end, origin));
  init_result(m, out);
  INDEXLAB_RETURN_IF_ERROR(poison_all(m));
  INDEXLAB_RETURN_IF_ERROR(
      m.run(nullptr, [&](const Chunk& c) { return download_chunk_logits(m, c, out); }));
  return finish_result(m, out);
}

// ---- Benchmark fixture ------------------------------------------------------------------------

class MisaWorkload : public Workload {
 public:
  MisaRunner m;
  StageTimer timer;
  // Paged pooled routing: one decode step per run, every sequence grown by one token and pooled
  // into its last block (the shrink before the timer only resets the lengths, one block each),
  // timed as the "pool" stage, as HISA's decode fixture does.
  PagedPooledCache pc;
  std::vector<int32_t> ctx, ctx_prev;
  Status run(float* ms) override {
    if (m.pooled_cache)
      INDEXLAB_RETURN_IF_ERROR(pc.update(m.cache.get(), m.block_table.get(), m.num_pages, ctx_prev, nullptr));
    INDEXLAB_RETURN_IF_ERROR(timer.begin());
    if (m.pooled_cache)
      INDEXLAB_RETURN_IF_ERROR(pc.update(m.cache.get(), m.block_table.get(), m.num_pages, ctx, nullptr));
    INDEXLAB_RETURN_IF_ERROR(m.run(&timer, [](const Chunk&) { return Status::Ok(); }));
    return timer.finish(ms, &stages);
  }
};

}  // namespace

Status make_misa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out) {
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(need_device());
  INDEXLAB_RETURN_IF_ERROR(common_checks(spec.path, spec.h, spec.opt.misa_heads));
  if (spec.opt.misa_heads < 1 || spec.opt.misa_heads > spec.h)
    return error("misa_heads = ", spec.opt.misa_heads, " must lie in [1, h = ", spec.h, "]");
  if (spec.path == ref::Path::kMisaDagger && (spec.opt.dagger_k1 < spec.k || spec.opt.dagger_k1 > kMaxTopK))
    return error("dagger_k1 = ", spec.opt.dagger_k1, " must lie in [k, ", kMaxTopK, "]");
  if (spec.opt.strict_pooling)
    return error("strict_pooling is not implemented by the sm90 ", ref::path_name(spec.path), " kernels");
  if (spec.opt.routing == ref::Routing::kOwnKey && spec.batch > 0 && spec.next_n != 1)
    return error("routing own_key is defined for paged decode with next_n = 1 only");
  SyntheticFp8 s;
  INDEXLAB_RETURN_IF_ERROR(make_synthetic_fp8(spec, &s));
  auto wl = std::make_unique<MisaWorkload>();
  MisaRunner& m = wl->m;
  m.paged = spec.batch > 0;
  m.dagger = spec.path == ref::Path::kMisaDagger;
  m.opt = spec.opt;
  m.rows = s.rows;
  m.H = spec.h;
  m.d = spec.d;
  m.h = spec.opt.misa_heads;
  m.hp = ref::misa_padded_heads(m.h);
  m.K = spec.k;
  m.k1 = spec.opt.dagger_k1;
  INDEXLAB_RETURN_IF_ERROR(m.q.upload(s.q));
  INDEXLAB_RETURN_IF_ERROR(m.w.upload(s.w));
  INDEXLAB_RETURN_IF_ERROR(m.q_scale.upload(s.q_scale));
  std::vector<int32_t> end(static_cast<size_t>(m.rows)), origin(static_cast<size_t>(m.rows), 0);
  if (!m.paged) {
    m.nk = m.cols = spec.sk;
    m.h_ks = s.ks;
    m.h_ke = s.ke;
    for (auto& e : end) e = static_cast<int32_t>(spec.sk);
    INDEXLAB_RETURN_IF_ERROR(m.k.upload(s.k));
    INDEXLAB_RETURN_IF_ERROR(m.k_scale.upload(s.k_scale));
    INDEXLAB_RETURN_IF_ERROR(m.ks.upload(s.ks));
    INDEXLAB_RETURN_IF_ERROR(m.ke.upload(s.ke));
  } else {
    m.batch = spec.batch;
    m.max_pages = s.max_pages;
    m.num_pages = s.num_pages;
    m.next_n = spec.next_n;
    m.cols = s.max_pages * 64;
    m.h_ks.assign(static_cast<size_t>(m.rows), 0);
    m.h_ke.resize(static_cast<size_t>(m.rows));
    for (int64_t r = 0; r < m.rows; ++r) {
      const int64_t ctx = s.context_lens[r / m.next_n];
      m.h_ke[r] = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - m.next_n + (r % m.next_n) + 1)));
      end[r] = static_cast<int32_t>(ctx);
    }
    INDEXLAB_RETURN_IF_ERROR(m.cache.upload(s.cache));
    INDEXLAB_RETURN_IF_ERROR(m.block_table.upload(s.block_table));
    INDEXLAB_RETURN_IF_ERROR(m.context_lens.upload(s.context_lens));
    INDEXLAB_RETURN_IF_ERROR(m.ke.upload(m.h_ke));
    INDEXLAB_RETURN_IF_ERROR(m.zeros.upload(m.h_ks));
    if (use_pooled_cache(spec.opt, spec.batch, s.max_pages)) {
      wl->ctx = s.context_lens;
      wl->ctx_prev = s.context_lens;
      for (auto& c : wl->ctx_prev) c = std::max(0, c - 1);
      INDEXLAB_RETURN_IF_ERROR(wl->pc.reset(spec.batch, s.max_pages, spec.opt.misa_block, spec.d, PooledForm::kMeans));
      INDEXLAB_RETURN_IF_ERROR(wl->pc.update(m.cache.get(), m.block_table.get(), s.num_pages, wl->ctx, nullptr));
      m.pooled_cache = &wl->pc;
    }
  }
  m.use_dsa_score = dsa_score_requested();
  m.use_bitonic = bitonic_requested();
  INDEXLAB_RETURN_IF_ERROR(m.plan(end, origin));
  // Useful work: routed scoring over visible pairs with h heads, the router's (row, block, head)
  // dots, dagger's K1 candidates with all heads.
  const double dd = spec.d;
  wl->flops = s.pairs * 2.0 * m.h * dd;
  if (spec.opt.routing == ref::Routing::kPooled) wl->flops += m.router_pairs * 2.0 * m.H * dd;
  if (m.dagger) wl->flops += static_cast<double>(m.rows) * std::min<double>(m.k1, s.pairs / m.rows) * 2.0 * m.H * dd;
  const double key_bytes = m.paged ? static_cast<double>(s.num_pages) * 64 * (dd + 4)
                                   : static_cast<double>(spec.sk) * (dd + 4);
  // Keys read by scoring, and by pooling unless the pooled cache holds them (it re-reads one token
  // per sequence a step).
  wl->bytes = static_cast<double>(m.rows) * (m.H * dd + 4.0 * m.H + 8.0 * m.K) + (m.pooled_cache ? 1 : 2) * key_bytes;
  *out = std::move(wl);
  return Status::Ok();
}

}  // namespace detail

Status misa_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out) {
  return detail::misa_flat(ref::Path::kMisa, in, opt, out);
}
Status misa_dagger_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out) {
  return detail::misa_flat(ref::Path::kMisaDagger, in, opt, out);
}
Status misa_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out) {
  return detail::misa_paged(ref::Path::kMisa, in, opt, out);
}
Status misa_dagger_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out) {
  return detail::misa_paged(ref::Path::kMisaDagger, in, opt, out);
}

}  // namespace indexlab::cuda
