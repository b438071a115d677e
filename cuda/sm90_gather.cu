/// Candidate-gather fp8 logits (tile and list mode, flat and paged) on wgmma, bit-identical to the
/// DSA logits kernel for every (query, key) pair, and the column -> key index remap.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda/sm90_common.cuh"
#include "cuda/sm90_tma.cuh"
#include "cuda/sm90_wgmma_gen.cuh"
#include "cuda/sparse.h"

namespace indexlab::cuda {
namespace detail {
int num_sms();  // sm90_logits.cu
namespace {

// Same arithmetic as sm90_logits.cu (its epilogue comment is the contract; emulated by
// ref::emulate_sm90_dsa_logit): A = 64 candidate key rows, B = the query's h head rows (padded
// with zero rows to the wgmma N), 32-wide k-steps, scale-d 0 on the first, then per quad lane
//   u_i = fma(r[8i+2l+1], w[8i+2l+1], r[8i+2l] * w[8i+2l]), pairwise tree over i,
//   total = (p0 + p1) + (p2 + p3) (shuffle xor 1 then 2), logit = total * s + 0.
// Each warpgroup owns one query row and a range of 64-column groups, with its own cp.async
// pipeline and named barrier; the two warpgroups of a CTA take two rows.

constexpr int kTileKeys = 64;
constexpr int kStages = 5;
constexpr int kNwg = 2;

template <int N>
__device__ __forceinline__ void wgmma_e4m3(float (&d)[N / 2], uint64_t da, uint64_t db, int sd);
template <>
__device__ __forceinline__ void wgmma_e4m3<8>(float (&d)[4], uint64_t da, uint64_t db, int sd) {
  wgmma_m64n8k32_e4m3(d, da, db, sd);
}
template <>
__device__ __forceinline__ void wgmma_e4m3<64>(float (&d)[32], uint64_t da, uint64_t db, int sd) {
  wgmma_m64n64k32_e4m3(d, da, db, sd);
}
template <>
__device__ __forceinline__ void wgmma_e4m3<128>(float (&d)[64], uint64_t da, uint64_t db, int sd) {
  wgmma_m64n128k32_e4m3(d, da, db, sd);
}

template <int N, int D>
struct GatherSmem {
  static constexpr int kQBytes = N * D;
  static constexpr int kKBytes = kTileKeys * D;
  static constexpr int kOffW = kQBytes;                       // N floats
  static constexpr int kOffK = kOffW + N * 4;
  static constexpr int kOffS = kOffK + kStages * kKBytes;     // kStages x 64 floats
  static constexpr int kOffInfo = kOffS + kStages * kTileKeys * 4;  // kStages x 64 int32
  static constexpr int kPerWg = kOffInfo + kStages * kTileKeys * 4;
  static constexpr int kTotal = kNwg * kPerWg;
};

struct GatherKernelParams {
  GatherLogitsParams p;
  int64_t ngroups;         // 64-column groups per row
  int64_t groups_per_cta;  // groups of one blockIdx.y chunk
  int64_t ncols;           // columns written per row
  int64_t page_bytes;
};

// The epilogue's head reduction for a thread's two key rows (r0 and r0 + 8) of a 64-key tile:
// relu(logit) * w per head, heads paired (fma of the odd onto the rounded product of the even),
// the 8-head groups summed as a tree, then the quad's four lanes by xor shuffles. Both gather
// kernels call it, so their bits are the same by construction.
template <int HB, int A>
__device__ __forceinline__ void head_sums(const float (&acc)[A], const float* w_s, int quad, float* p0,
                                          float* p1) {
  static_assert(4 * HB <= A, "HB 8-head groups of the accumulator");
  float u0[HB], u1[HB];
#pragma unroll
  for (int j8 = 0; j8 < HB; ++j8) {
    const float2 wv = *reinterpret_cast<const float2*>(&w_s[j8 * 8 + quad * 2]);
    u0[j8] = fmaf(fmaxf(acc[4 * j8 + 1], 0.0f), wv.y, __fmul_rn(fmaxf(acc[4 * j8 + 0], 0.0f), wv.x));
    u1[j8] = fmaf(fmaxf(acc[4 * j8 + 3], 0.0f), wv.y, __fmul_rn(fmaxf(acc[4 * j8 + 2], 0.0f), wv.x));
  }
#pragma unroll
  for (int st = 1; st < HB; st *= 2) {
#pragma unroll
    for (int j8 = 0; j8 + st < HB; j8 += 2 * st) {
      u0[j8] = __fadd_rn(u0[j8], u0[j8 + st]);
      u1[j8] = __fadd_rn(u1[j8], u1[j8 + st]);
    }
  }
  float a = u0[0], b = u1[0];
  a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 1));
  b = __fadd_rn(b, __shfl_xor_sync(0xffffffffu, b, 1));
  a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 2));
  b = __fadd_rn(b, __shfl_xor_sync(0xffffffffu, b, 2));
  *p0 = a;
  *p1 = b;
}

// Info of candidate row `i` of column group g: >= 0 the key (visible, loadable), -1 no key
// (-inf), -2 a visible key whose page cannot be read (NaN). *src / *ssrc: its code row and scale.
__device__ __forceinline__ int32_t key_info(const GatherKernelParams& kp, int64_t r, int64_t g, int i,
                                            int32_t lo, int32_t hi, int32_t ts,
                                            const uint8_t** src, const float** ssrc, int d) {
  const GatherLogitsParams& p = kp.p;
  int64_t key;
  if (p.tile_start) {
    key = ts < 0 ? -1 : static_cast<int64_t>(ts) + i;
  } else {
    const int64_t c = g * kTileKeys + i;
    key = c < p.ncand ? p.cand[r * p.ncand + c] : -1;
  }
  if (key < lo || key >= hi || key < 0) return -1;
  if (!p.cache) {
    if (key >= p.nk) return -1;
    *src = p.k + key * d;
    *ssrc = p.k_scale + key;
    return static_cast<int32_t>(key);
  }
  const int64_t seq = r / p.next_n;
  const int64_t lp = key / kTileKeys;
  const int32_t page = lp < p.max_pages ? p.block_table[seq * p.max_pages + lp] : -1;
  if (page < 0 || page >= p.num_pages) return -2;
  const uint8_t* base = p.cache + static_cast<int64_t>(page) * kp.page_bytes;
  *src = base + (key % kTileKeys) * d;
  *ssrc = reinterpret_cast<const float*>(base + kTileKeys * d) + (key % kTileKeys);
  return static_cast<int32_t>(key);
}

template <int N, int D, int H>
__global__ void __launch_bounds__(kNwg * 128, N <= 64 ? 2 : 1) gather_kernel(const GatherKernelParams kp) {
  using L = GatherSmem<N, D>;
  constexpr int HB = H / 8;
  const GatherLogitsParams& p = kp.p;
  extern __shared__ __align__(1024) uint8_t smem[];
  const int wg = threadIdx.x / 128;
  const int wtid = threadIdx.x % 128;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kNwg + wg;
  if (r >= p.nq) return;  // no CTA-wide barrier below: each warpgroup runs on its own
  uint8_t* base_s = smem + wg * L::kPerWg;
  uint8_t* q_s = base_s;
  float* w_s = reinterpret_cast<float*>(base_s + L::kOffW);
  uint8_t* k_s = base_s + L::kOffK;
  float* sc_s = reinterpret_cast<float*>(base_s + L::kOffS);
  int32_t* info_s = reinterpret_cast<int32_t*>(base_s + L::kOffInfo);
  const int bar = 1 + wg;

  const int32_t lo = p.lo[r], hi = p.hi[r];
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * kp.groups_per_cta;
  const int64_t g1 = min64(g0 + kp.groups_per_cta, kp.ngroups);
  if (g0 >= g1) return;
  const int32_t* ts_row = p.tile_start ? p.tile_start + r * p.max_tiles : nullptr;

  // Q rows (heads; rows >= H are zero) in the K-major core-matrix layout, and weights.
  for (int c = wtid; c < N * (D / 16); c += 128) {
    int n, kc;
    tile_chunk(c, D, &n, &kc);
    const bool ok = n < H;
    const uint8_t* src = ok ? p.q + (r * H + n) * D + kc * 16 : p.q;
    cp_async_16(q_s + core_offset(n, kc, D), src, ok ? 16 : 0);
  }
  for (int c = wtid; c < N; c += 128) w_s[c] = c < H ? p.w[r * H + c] : 0.0f;
  cp_async_commit();

  // A group is active when it may hold a visible key (tile mode: its tile meets [lo, hi)).
  auto tile_of = [&](int64_t g) -> int32_t { return ts_row ? ts_row[g] : 0; };
  auto active = [&](int64_t g, int32_t ts) -> bool {
    if (hi <= lo) return false;
    if (!ts_row) return true;
    return ts >= 0 && static_cast<int64_t>(ts) < hi && static_cast<int64_t>(ts) + kTileKeys > lo;
  };
  auto load_group = [&](int64_t g, int stage) {
    const int32_t ts = tile_of(g);
    if (!active(g, ts)) return;
    uint8_t* kd = k_s + stage * L::kKBytes;
    float* sd = sc_s + stage * kTileKeys;
#pragma unroll
    for (int c = wtid; c < kTileKeys * (D / 16); c += 128) {
      int row, kc;
      tile_chunk(c, D, &row, &kc);
      const uint8_t* src = p.cache ? p.cache : p.k;
      const float* ssrc = nullptr;
      const int32_t inf = key_info(kp, r, g, row, lo, hi, ts, &src, &ssrc, D);
      const bool ok = inf >= 0;
      cp_async_16(kd + core_offset(row, kc, D), ok ? src + kc * 16 : src, ok ? 16 : 0);
    }
    if (wtid < kTileKeys) {
      const uint8_t* src = nullptr;
      const float* ssrc = p.cache ? reinterpret_cast<const float*>(p.cache) : p.k_scale;
      const int32_t inf = key_info(kp, r, g, wtid, lo, hi, ts, &src, &ssrc, D);
      const bool ok = inf >= 0;
      cp_async_4(sd + wtid, ssrc, ok ? 4 : 0);
      info_s[stage * kTileKeys + wtid] = inf;
    }
  };

  // Trailing inactive groups (tile mode writes tiles first, -1 after) get -inf without wgmma.
  int64_t g_end = g1;
  if (ts_row)
    while (g_end > g0 && !active(g_end - 1, ts_row[g_end - 1])) --g_end;
  for (int64_t c = g_end * kTileKeys + wtid; c < g1 * kTileKeys && c < kp.ncols; c += 128)
    p.logits[r * p.ld + c] = -INFINITY;
  const int64_t ng = g_end - g0;
  if (ng <= 0) {
    cp_async_wait<0>();
    return;
  }
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ng) load_group(g0 + s, s);
    cp_async_commit();
  }
  const uint32_t q_addr = smem_u32(q_s);
  const int warp = wtid / 32, lane = threadIdx.x % 32, quad = lane & 3;
  const int r0 = warp * 16 + (lane >> 2);
  float* out = p.logits + r * p.ld;

  auto epilogue = [&](float (&acc)[N / 2], int64_t it) {
    const int stage = static_cast<int>(it % kStages);
    const int64_t g = g0 + it;
    const int64_t c0 = g * kTileKeys + r0, c1 = c0 + 8;
    float p0, p1;
    head_sums<HB>(acc, w_s, quad, &p0, &p1);
    const int32_t* inf = info_s + stage * kTileKeys;
    const float* scl = sc_s + stage * kTileKeys;
    if (quad == 0 && c0 < kp.ncols) {
      const int32_t x = inf[r0];
      out[c0] = x >= 0 ? __fadd_rn(__fmul_rn(p0, scl[r0]), 0.0f) : (x == -2 ? NAN : -INFINITY);
    }
    if (quad == 1 && c1 < kp.ncols) {
      const int32_t x = inf[r0 + 8];
      out[c1] = x >= 0 ? __fadd_rn(__fmul_rn(p1, scl[r0 + 8]), 0.0f) : (x == -2 ? NAN : -INFINITY);
    }
  };
  auto write_inf = [&](int64_t it) {
    const int64_t c0 = (g0 + it) * kTileKeys + r0, c1 = c0 + 8;
    if (quad == 0 && c0 < kp.ncols) out[c0] = -INFINITY;
    if (quad == 1 && c1 < kp.ncols) out[c1] = -INFINITY;
  };
  {
    // Wait for group it, prefetch group it + kStages - 1, wgmma, epilogue. (A variant with two
    // accumulator sets, the next group's wgmma overlapping this epilogue, measured no faster:
    // 64K causal rescore 30.1 vs 30.3 ms, decode slower; other warpgroups hide the epilogue.)
    float acc[N / 2];
    for (int64_t it = 0; it < ng; ++it) {
      const int stage = static_cast<int>(it % kStages);
      cp_async_wait<kStages - 2>();
      fence_proxy_async();
      named_barrier_sync(bar, 128);
      {
        const int64_t nb = it + kStages - 1;
        if (nb < ng) load_group(g0 + nb, static_cast<int>(nb % kStages));
        cp_async_commit();
      }
      if (!active(g0 + it, tile_of(g0 + it))) {
        write_inf(it);
        continue;
      }
      const uint32_t k_addr = smem_u32(k_s + stage * L::kKBytes);
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < D / 32; ++s) {
        const uint64_t da = make_desc(k_addr + s * 256, 128, 8 * D);
        const uint64_t db = make_desc(q_addr + s * 256, 128, 8 * D);
        wgmma_e4m3<N>(acc, da, db, s > 0 ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_acc(acc);
      epilogue(acc, it);
    }
  }
  cp_async_wait<0>();
}

template <int N, int D, int H>
Status launch_gather(const GatherKernelParams& kp, dim3 grid, cudaStream_t st) {
  using L = GatherSmem<N, D>;
  auto kernel = gather_kernel<N, D, H>;
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal));
  kernel<<<grid, kNwg * 128, L::kTotal, st>>>(kp);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

template <int D>
Status launch_gather_h(const GatherKernelParams& kp, dim3 grid, cudaStream_t st) {
  switch (kp.p.h) {
    case 8: return launch_gather<8, D, 8>(kp, grid, st);
    case 16: return launch_gather<64, D, 16>(kp, grid, st);
    case 32: return launch_gather<64, D, 32>(kp, grid, st);
    case 64: return launch_gather<64, D, 64>(kp, grid, st);
    default: return launch_gather<128, D, 128>(kp, grid, st);
  }
}

// ---- Tile mode through TMA ---------------------------------------------------------------------
//
// The same arithmetic as gather_kernel (A = the tile's 64 key rows, B = the query's H heads padded
// to N = 64 with zero rows, the same k-steps and epilogue order), so every logit is bit-identical;
// only the loads differ. One CTA takes one query row and a chunk of its tiles. A producer warp
// streams each tile into a ring of kTmaStages stages with one TMA for the key rows (flat: a
// [64, d] box of the keys at row ts, rows past nk read as zero; paged: the tile's page, when ts is
// a multiple of 64, as paged_tma_kernel loads it) and one copy of its 64 scales (flat: a 64-float
// TMA box from the 16-byte boundary at or before ts, as the innermost coordinate of a tensor copy
// must be 16-byte aligned; paged: a bulk copy of the page's scale block), with full / empty
// mbarriers. A paged
// tile that straddles two pages (ts not a multiple of 64: HISA's tiles never do) is copied by the
// producer warp's own loads into the same swizzled layout. One math warpgroup consumes the ring.
// The chunk's tile starts and page ids are read into shared memory first, so the producer's loop
// issues copies without waiting on a global load.

constexpr int kTmaStages = 4;
constexpr int kTmaMaxGroups = 256;  // tiles of one CTA's chunk
constexpr int kTmaThreads = 128 + 32;
constexpr int kTmaScaleBox = 68;      // flat: the scales from ts rounded down to 4, 4 to spare
constexpr int kTmaScaleStride = 96;   // floats a stage: 384 bytes, TMA destinations 128-byte aligned

template <int D>
struct GatherTmaSmem {
  static constexpr int kKBytes = kTileKeys * D;                   // 1024-byte multiple
  static constexpr int kOffK = 0;                                 // S x [64, D], swizzled
  static constexpr int kOffS = kOffK + kTmaStages * kKBytes;       // S x kTmaScaleStride scales
  static constexpr int kOffQ = kOffS + kTmaStages * kTmaScaleStride * 4;  // [64, D] core-matrix layout
  static constexpr int kOffW = kOffQ + 64 * D;                     // 64 weights
  static constexpr int kOffBar = kOffW + 64 * 4;                   // full[S], empty[S]
  static constexpr int kOffTs = kOffBar + 2 * kTmaStages * 8;      // tile starts (-1: inactive)
  static constexpr int kOffPid = kOffTs + kTmaMaxGroups * 4;       // paged: two page ids a tile
  static constexpr int kUsed = kOffPid + 2 * kTmaMaxGroups * 4;
  static constexpr int kTotal = kUsed + 1024;                      // the base is rounded up to 1024
};

template <int D, int H>
__global__ void __launch_bounds__(kTmaThreads, 1)
    gather_tma_kernel(const GatherKernelParams kp, const __grid_constant__ CUtensorMap kmap,
                      const __grid_constant__ CUtensorMap smap) {
  using L = GatherTmaSmem<D>;
  constexpr int S = kTmaStages;
  constexpr int HB = H / 8;
  static_assert(H >= 16 && H <= 64, "N = 64 wgmma columns");
  const GatherLogitsParams& p = kp.p;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_align_1024(smem_raw);
  uint8_t* k_s = smem + L::kOffK;
  float* sc_s = reinterpret_cast<float*>(smem + L::kOffS);
  uint8_t* q_s = smem + L::kOffQ;
  float* w_s = reinterpret_cast<float*>(smem + L::kOffW);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kOffBar);
  uint64_t* empty = full + S;
  int32_t* ts_s = reinterpret_cast<int32_t*>(smem + L::kOffTs);
  int32_t* pid_s = reinterpret_cast<int32_t*>(smem + L::kOffPid);

  const int tid = threadIdx.x;
  const int64_t r = blockIdx.x;
  const bool paged = p.cache != nullptr;
  const int32_t lo = p.lo[r], hi = p.hi[r];
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * kp.groups_per_cta;
  const int64_t g1 = min64(g0 + kp.groups_per_cta, kp.ngroups);
  if (g0 >= g1) return;  // the whole CTA, before any barrier
  const int nall = static_cast<int>(g1 - g0);
  const int32_t* ts_row = p.tile_start + r * p.max_tiles;
  const int64_t seq = paged ? r / p.next_n : 0;

  for (int c = tid; c < 64 * (D / 16); c += kTmaThreads) {
    int n, kc;
    tile_chunk(c, D, &n, &kc);
    const bool ok = n < H;
    cp_async_16(q_s + core_offset(n, kc, D), ok ? p.q + (r * H + n) * D + kc * 16 : p.q, ok ? 16 : 0);
  }
  cp_async_commit();
  for (int c = tid; c < 64; c += kTmaThreads) w_s[c] = c < H ? p.w[r * H + c] : 0.0f;
  for (int g = tid; g < nall; g += kTmaThreads) {
    const int32_t ts = ts_row[g0 + g];
    // Active: the tile may hold a visible key (gather_kernel's rule).
    const bool act = hi > lo && ts >= 0 && static_cast<int64_t>(ts) < hi && static_cast<int64_t>(ts) + kTileKeys > lo;
    ts_s[g] = act ? ts : -1;
    if (paged) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        int32_t page = -1;
        const int64_t lp = static_cast<int64_t>(ts) / kTileKeys + j;
        if (act && (j == 0 || ts % kTileKeys != 0) && lp < p.max_pages) page = p.block_table[seq * p.max_pages + lp];
        pid_s[2 * g + j] = page >= 0 && page < p.num_pages ? page : -1;  // -1: unreadable
      }
    }
  }
  if (tid == 0) {
    for (int st = 0; st < S; ++st) {
      mbar_init(&full[st], 32);    // every producer lane (lane 0's with the copies' bytes as tx)
      mbar_init(&empty[st], 128);  // every math thread, after its last read of the stage
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  // Trailing inactive tiles (tile mode writes its tiles first, -1 after) get -inf without a copy.
  int ng = nall;
  while (ng > 0 && ts_s[ng - 1] < 0) --ng;
  float* out = p.logits + r * p.ld;
  for (int64_t c = (g0 + ng) * kTileKeys + tid; c < g1 * kTileKeys && c < kp.ncols; c += kTmaThreads)
    out[c] = -INFINITY;
  if (ng == 0) return;

  if (tid >= 128) {  // producer warp
    const int lane = tid - 128;
    for (int it = 0; it < ng; ++it) {
      const int stage = it % S;
      if (it >= S) mbar_wait_or_trap(&empty[stage], static_cast<uint32_t>((it / S - 1) & 1));
      const int32_t ts = ts_s[it];
      uint8_t* kd = k_s + stage * L::kKBytes;
      float* sd = sc_s + stage * kTmaScaleStride;
      const int32_t pg0 = paged && ts >= 0 ? pid_s[2 * it] : -1;
      const int off = ts % kTileKeys;
      if (ts < 0 || !paged || off == 0) {  // copies by lane 0, or nothing to read
        if (lane == 0) {
          if (ts < 0) {
            mbar_arrive(&full[stage]);  // inactive: -inf
          } else if (!paged) {
            mbar_arrive_expect_tx(&full[stage], static_cast<uint32_t>(L::kKBytes + kTmaScaleBox * 4));
            tma_load_2d(kd, &kmap, 0, ts, &full[stage]);
            tma_load_1d(sd, &smap, ts & ~3, &full[stage]);
          } else if (pg0 >= 0) {
            mbar_arrive_expect_tx(&full[stage], static_cast<uint32_t>(L::kKBytes + kTileKeys * 4));
            tma_load_3d(kd, &kmap, 0, 0, pg0, &full[stage]);
            bulk_load(sd, p.cache + static_cast<int64_t>(pg0) * kp.page_bytes + kTileKeys * D, kTileKeys * 4,
                      &full[stage]);
          } else {
            mbar_arrive(&full[stage]);  // an unreadable page: NaN for its visible keys
          }
        } else {
          mbar_arrive(&full[stage]);
        }
        continue;
      }
      // A tile across two pages: the warp's own 16-byte loads, stored where the TMA would put them.
      const int32_t pg1 = pid_s[2 * it + 1];
      for (int c = lane; c < kTileKeys * (D / 16); c += 32) {
        const int row = c / (D / 16), kc = c % (D / 16);
        const int pr = off + row;
        const int32_t pg = pr < kTileKeys ? pg0 : pg1;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (pg >= 0)
          v = *reinterpret_cast<const uint4*>(p.cache + static_cast<int64_t>(pg) * kp.page_bytes +
                                              (pr % kTileKeys) * D + kc * 16);
        *reinterpret_cast<uint4*>(kd + swizzled_offset(static_cast<uint32_t>(row * D + kc * 16), D)) = v;
      }
      for (int i = lane; i < kTileKeys; i += 32) {
        const int pr = off + i;
        const int32_t pg = pr < kTileKeys ? pg0 : pg1;
        sd[i] = pg >= 0 ? *reinterpret_cast<const float*>(p.cache + static_cast<int64_t>(pg) * kp.page_bytes +
                                                          kTileKeys * D + (pr % kTileKeys) * 4)
                        : 0.0f;
      }
      // Each lane publishes its own stores (fenced for wgmma's async proxy) with its own arrival:
      // racecheck does not see one lane's arrival after __syncwarp as ordering the others' stores.
      fence_proxy_async();
      mbar_arrive(&full[stage]);
    }
    return;
  }

  const int warp = tid / 32, lane = tid % 32, quad = lane & 3;
  const int r0 = warp * 16 + (lane >> 2);
  const uint32_t q_addr = smem_u32(q_s);
  float acc[32];
  for (int it = 0; it < ng; ++it) {
    const int stage = it % S;
    mbar_wait_or_trap(&full[stage], static_cast<uint32_t>((it / S) & 1));
    const int32_t ts = ts_s[it];
    const int64_t c0 = (g0 + it) * kTileKeys + r0, c1 = c0 + 8;
    if (ts < 0) {
      mbar_arrive(&empty[stage]);
      if (quad == 0 && c0 < kp.ncols) out[c0] = -INFINITY;
      if (quad == 1 && c1 < kp.ncols) out[c1] = -INFINITY;
      continue;
    }
    const uint32_t k_addr = smem_u32(k_s + stage * L::kKBytes);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < D / 32; ++s) {
      const uint64_t da = make_desc_swizzled(k_addr + s * 32, D);
      const uint64_t db = make_desc(q_addr + s * 256, 128, 8 * D);
      wgmma_m64n64k32_e4m3(acc, da, db, s > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(acc);
    const float* sd = sc_s + stage * kTmaScaleStride + (paged ? 0 : ts & 3);
    const float s0 = sd[r0], s1 = sd[r0 + 8];
    mbar_arrive(&empty[stage]);
    // gather_kernel's epilogue (head_sums, then key_info's rule below).
    float p0, p1;
    head_sums<HB>(acc, w_s, quad, &p0, &p1);
    // key_info's rule: -inf outside [lo, hi) (flat: or past nk), NaN on an unreadable page.
    auto value = [&](int i, float pv, float sv) -> float {
      const int64_t key = static_cast<int64_t>(ts) + i;
      if (key < lo || key >= hi) return -INFINITY;
      if (!paged) return key < p.nk ? __fadd_rn(__fmul_rn(pv, sv), 0.0f) : -INFINITY;
      const int32_t pg = pid_s[2 * it + ((ts % kTileKeys) + i >= kTileKeys ? 1 : 0)];
      return pg < 0 ? NAN : __fadd_rn(__fmul_rn(pv, sv), 0.0f);
    };
    if (quad == 0 && c0 < kp.ncols) out[c0] = value(r0, p0, s0);
    if (quad == 1 && c1 < kp.ncols) out[c1] = value(r0 + 8, p1, s1);
  }
}

/// The tensor maps of the last TMA gather launch on this thread, reused while the keys they
/// describe stay the same (HISA launches once per chunk of rows on the same keys).
struct GatherMaps {
  const void* keys = nullptr;
  bool paged = false;
  int64_t n = -1;
  int d = -1;
  const float* smap_src = nullptr;
  CUtensorMap kmap, smap;
};

template <int D, int H>
Status launch_gather_tma(GatherKernelParams kp, cudaStream_t st) {
  using L = GatherTmaSmem<D>;
  static_assert(L::kTotal <= 227 * 1024, "TMA gather shared memory");
  const GatherLogitsParams& p = kp.p;
  const bool paged = p.cache != nullptr;
  thread_local GatherMaps last;
  const void* keys = paged ? static_cast<const void*>(p.cache) : static_cast<const void*>(p.k);
  const int64_t n = paged ? p.num_pages : p.nk;
  if (last.keys != keys || last.paged != paged || last.n != n || last.d != D ||
      (!paged && last.smap_src != p.k_scale)) {
    last.keys = nullptr;
    if (paged) {
      INDEXLAB_RETURN_IF_ERROR(encode_page_map(p.cache, p.num_pages, D, kp.page_bytes, &last.kmap));
      last.smap = last.kmap;  // unused
    } else {
      INDEXLAB_RETURN_IF_ERROR(encode_rows_map(p.k, p.nk, D, &last.kmap));
      INDEXLAB_RETURN_IF_ERROR(encode_vec_map(p.k_scale, p.nk, kTmaScaleBox, &last.smap));
    }
    last.keys = keys;
    last.paged = paged;
    last.n = n;
    last.d = D;
    last.smap_src = paged ? nullptr : p.k_scale;
  }
  auto kernel = gather_tma_kernel<D, H>;
  // The shared-memory opt-in and the occupancy it allows, once per instantiation (HISA decode
  // launches at every step).
  struct Occupancy {
    cudaError_t err;
    int per_sm;
  };
  static const Occupancy occ = [] {
    Occupancy o{cudaSuccess, 0};
    o.err = cudaFuncSetAttribute(gather_tma_kernel<D, H>, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal);
    if (o.err == cudaSuccess)
      o.err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o.per_sm, gather_tma_kernel<D, H>, kTmaThreads, L::kTotal);
    return o;
  }();
  INDEXLAB_CUDA_CHECK(occ.err);
  // One wave when the rows are few (decode): the tiles of a row split over the CTAs an SM holds,
  // at least 8 tiles a chunk (the query load is paid per CTA), at most kTmaMaxGroups.
  const int64_t slots = static_cast<int64_t>(std::max(occ.per_sm, 1)) * num_sms();
  const int64_t chunks_wanted = std::max<int64_t>(1, slots / p.nq);
  int64_t gpc = (kp.ngroups + chunks_wanted - 1) / chunks_wanted;
  gpc = std::max<int64_t>(gpc, std::min<int64_t>(8, kp.ngroups));
  gpc = std::min<int64_t>(gpc, kTmaMaxGroups);
  kp.groups_per_cta = gpc;
  const int64_t chunks = (kp.ngroups + gpc - 1) / gpc;
  const dim3 grid(static_cast<unsigned>(p.nq), static_cast<unsigned>(chunks));
  kernel<<<grid, kTmaThreads, L::kTotal, st>>>(kp, last.kmap, last.smap);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

template <int D>
Status launch_gather_tma_h(const GatherKernelParams& kp, cudaStream_t st) {
  switch (kp.p.h) {
    case 16: return launch_gather_tma<D, 16>(kp, st);
    case 32: return launch_gather_tma<D, 32>(kp, st);
    default: return launch_gather_tma<D, 64>(kp, st);
  }
}

__global__ void remap_kernel(const RemapParams p) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.rows * p.k) return;
  const int64_t r = t / p.k;
  const int32_t col = p.index[t];
  int64_t key = -1;
  if (col >= 0) {
    if (p.tile_start) {
      const int64_t g = col / kTileKeys;
      const int32_t ts = g < p.max_tiles ? p.tile_start[r * p.max_tiles + g] : -1;
      key = ts < 0 ? -1 : static_cast<int64_t>(ts) + col % kTileKeys;
    } else {
      key = col < p.ncand ? p.cand[r * p.ncand + col] : -1;
    }
  }
  int32_t out = -1;
  if (key >= 0) {
    if (p.block_table) {
      const int64_t lp = key / kTileKeys;
      const int32_t page = lp < p.max_pages ? p.block_table[(r / p.next_n) * p.max_pages + lp] : -1;
      out = page < 0 ? -1 : static_cast<int32_t>(static_cast<int64_t>(page) * kTileKeys + key % kTileKeys);
    } else {
      out = static_cast<int32_t>(key - (p.base ? p.base[r] : 0));
    }
  }
  p.index[t] = out;
}

}  // namespace
}  // namespace detail

Status launch_gather_logits_fp8(const GatherLogitsParams& p) {
  INDEXLAB_RETURN_IF_ERROR(can_implement(p.h, p.d, 1));
  if (p.nq < 0) return error("GatherLogitsParams: nq = ", p.nq, " must be >= 0");
  const bool tile = p.tile_start != nullptr;
  if (tile == (p.cand != nullptr))
    return error("GatherLogitsParams: set exactly one of tile_start (tile mode) and cand (list mode)");
  if (tile && p.max_tiles < 0) return error("GatherLogitsParams: max_tiles = ", p.max_tiles, " must be >= 0");
  if (!tile && p.ncand < 0) return error("GatherLogitsParams: ncand = ", p.ncand, " must be >= 0");
  const int64_t ncols = tile ? p.max_tiles * detail::kTileKeys : p.ncand;
  if (ncols > INT32_MAX) return error("GatherLogitsParams: ", ncols, " columns per row is too many");
  if (p.ld < ncols) return error("GatherLogitsParams: ld = ", p.ld, " is smaller than the ", ncols, " columns");
  if (p.nq == 0 || ncols == 0) return Status::Ok();
  if (!p.q || !p.w || !p.lo || !p.hi || !p.logits) return error("GatherLogitsParams: a device pointer is null");
  const bool paged = p.cache != nullptr;
  if (paged) {
    if (!p.block_table) return error("GatherLogitsParams: paged mode needs block_table");
    if (p.next_n < 1) return error("GatherLogitsParams: next_n = ", p.next_n, " must be >= 1");
    if (p.max_pages < 0 || p.num_pages < 0) return error("GatherLogitsParams: negative paged sizes");
  } else {
    if (!p.k || !p.k_scale) return error("GatherLogitsParams: flat mode needs k and k_scale");
    if (p.nk < 0) return error("GatherLogitsParams: nk = ", p.nk, " must be >= 0");
  }
  detail::GatherKernelParams kp{};
  kp.p = p;
  kp.ncols = ncols;
  kp.ngroups = (ncols + detail::kTileKeys - 1) / detail::kTileKeys;
  kp.page_bytes = static_cast<int64_t>(detail::kTileKeys) * (p.d + 4);
  // Tile mode with 16 to 64 heads takes the TMA kernel (the same bits) where its copies apply:
  // 16-byte aligned keys and scales (flat) or cache (paged), and rows and tiles the grid holds.
  // INDEXLAB_GATHER=v1 keeps gather_kernel (tests compare the two; read at every launch). The TMA
  // launcher sizes its own chunks.
  const char* path = std::getenv("INDEXLAB_GATHER");
  const bool v1 = path && std::strcmp(path, "v1") == 0;
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  const bool tma_loads = paged ? aligned(p.cache) && p.num_pages > 0
                               : aligned(p.k) && aligned(p.k_scale) && p.nk > 0 && p.nk <= UINT32_MAX;
  if (tile && !v1 && (p.h == 16 || p.h == 32 || p.h == 64) && tma_loads && p.nq <= INT32_MAX &&
      kp.ngroups <= int64_t{65535} * detail::kTmaMaxGroups)
    return p.d == 64 ? detail::launch_gather_tma_h<64>(kp, static_cast<cudaStream_t>(p.stream))
                     : detail::launch_gather_tma_h<128>(kp, static_cast<cudaStream_t>(p.stream));
  const int64_t ctas_x = (p.nq + detail::kNwg - 1) / detail::kNwg;
  if (ctas_x > INT32_MAX) return error("GatherLogitsParams: nq = ", p.nq, " is too large");
  // Enough column chunks that about two CTAs per SM exist (decode has few rows), at least 8
  // groups per chunk so the query load is amortized.
  const int64_t target = 2 * detail::num_sms();
  const int64_t chunks_wanted = std::max<int64_t>(1, (target + ctas_x - 1) / ctas_x);
  int64_t gpc = (kp.ngroups + chunks_wanted - 1) / chunks_wanted;
  gpc = std::max<int64_t>(gpc, std::min<int64_t>(8, kp.ngroups));
  int64_t chunks = (kp.ngroups + gpc - 1) / gpc;
  if (chunks > 65535) {
    gpc = (kp.ngroups + 65534) / 65535;
    chunks = (kp.ngroups + gpc - 1) / gpc;
  }
  kp.groups_per_cta = gpc;
  dim3 grid(static_cast<unsigned>(ctas_x), static_cast<unsigned>(chunks));
  cudaStream_t st = static_cast<cudaStream_t>(p.stream);
  return p.d == 64 ? detail::launch_gather_h<64>(kp, grid, st) : detail::launch_gather_h<128>(kp, grid, st);
}

Status launch_remap_indices(const RemapParams& p) {
  if (p.rows < 0 || p.k < 0) return error("RemapParams: rows = ", p.rows, ", k = ", p.k, " must be >= 0");
  if (p.rows == 0 || p.k == 0) return Status::Ok();
  if (!p.index) return error("RemapParams: index is null");
  if ((p.tile_start != nullptr) == (p.cand != nullptr))
    return error("RemapParams: set exactly one of tile_start and cand");
  if (p.block_table && (p.next_n < 1 || p.max_pages < 1))
    return error("RemapParams: paged absolute mode needs next_n >= 1 and max_pages >= 1");
  const int64_t n = p.rows * p.k;
  const int64_t blocks = (n + 255) / 256;
  if (blocks > INT32_MAX) return error("RemapParams: rows * k = ", n, " is too large");
  detail::remap_kernel<<<static_cast<unsigned>(blocks), 256, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

}  // namespace indexlab::cuda
