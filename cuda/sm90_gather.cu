/// Candidate-gather fp8 logits (tile and list mode, flat and paged) on wgmma, bit-identical to the
/// DSA logits kernel for every (query, key) pair, and the column -> key index remap.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/sm90_common.cuh"
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
    float p0 = u0[0], p1 = u1[0];
    p0 = __fadd_rn(p0, __shfl_xor_sync(0xffffffffu, p0, 1));
    p1 = __fadd_rn(p1, __shfl_xor_sync(0xffffffffu, p1, 1));
    p0 = __fadd_rn(p0, __shfl_xor_sync(0xffffffffu, p0, 2));
    p1 = __fadd_rn(p1, __shfl_xor_sync(0xffffffffu, p1, 2));
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
