/// Hopper fp8 and bf16 MQA logits (prefill / ragged and paged decode) on wgmma, plus the wgmma probes.
#include <cuda.h>  // CUtensorMap and its enums (the encoder is fetched from the driver at run time)
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda/api.h"
#include "cuda/sm90_common.cuh"
#include "cuda/sm90_tma.cuh"
#include "cuda/sm90_wgmma_gen.cuh"

namespace indexlab::cuda {
namespace detail {

// Epilogue, exact fp32 operation order (reference/emulate_sm90_dsa.cc follows it bit for bit):
//   dot[h]  = wgmma chain over d in k-steps of 32 bytes (fp8: 32 elements, bf16: 16), the first
//             with scale-d = 0, A = key rows, B = (query, head) rows, fp32 accumulator
//             (measured models: reference/tc_emulation.h). Both element types share this kernel.
//   r[h]    = fmaxf(dot[h], 0)
//   lane l of a quad (l = 0..3) owns heads h = 8*i + 2*l + c (i = 0..H/8-1, c = 0, 1):
//   u_i     = fmaf(r[8i+2l+1], w[8i+2l+1], r[8i+2l] * w[8i+2l])      (one fmul, one fma)
//   p_l     = pairwise tree over i: stride 1, 2, 4, ...: u_i = u_i + u_{i+stride} (i % 2stride = 0);
//             p_l = u_0
//   total   = (p_0 + p_1) + (p_2 + p_3)            (two shuffle-xor rounds, xor 1 then xor 2)
//   logit   = (total * s[j]) + 0                    (fmul, then +0 folds -0 into +0)
//   logit   = -inf where j is outside [ks, ke); NaN where a paged block-table entry is out of range.

constexpr int kBlockKeys = 64;
constexpr int kMaxPagedBlocksPerCta = 256;  // page ids of a paged CTA's chunk, prefetched to smem

// Element type of q and k: e4m3 codes (1 byte) or bf16 (2 bytes). Rows are RB = d * bytes long.
enum class Elem { kE4m3, kBf16 };
template <Elem E>
constexpr int kElemBytes = E == Elem::kBf16 ? 2 : 1;

struct LogitsKernelParams {
  const uint8_t* q;       // [nq, h, d] elements (bytes of e4m3 codes or bf16)
  const float* w;         // [nq, h]
  float* logits;          // [nq, ld]
  int64_t ld, nq, ncols;  // ncols: columns written per row
  int64_t n_blocks;       // ceil(ncols / 64)
  int64_t blocks_per_cta;
  int h;
  bool paged;
  // Prefill: leave the columns outside the CTA's active blocks unwritten instead of -inf
  // (LogitsParams::clean_logits = false; zero-initialized params fill).
  bool skip_fill;
  // prefill
  const uint8_t* k;       // [nk, d] elements
  const float* k_scale;   // [nk]
  const int32_t* ks;      // [nq]
  const int32_t* ke;      // [nq]
  int64_t nk;
  // paged
  const uint8_t* cache;          // [num_pages, page_bytes]
  const int32_t* block_table;    // [batch, max_pages]
  const int32_t* context_lens;   // [batch]
  int64_t max_pages, num_pages, page_bytes, groups_per_seq;
  int next_n;
  // paged_tma_kernel: read the pages with an L2 evict-first policy (they are read once; the
  // logits the top-k reads next stay in L2).
  bool evict_first_keys;
};

template <int N>
__device__ __forceinline__ void wgmma_e4m3(float (&d)[N / 2], uint64_t da, uint64_t db, int sd);
template <int N>
__device__ __forceinline__ void wgmma_bf16(float (&d)[N / 2], uint64_t da, uint64_t db, int sd);
template <>
__device__ __forceinline__ void wgmma_bf16<64>(float (&d)[32], uint64_t da, uint64_t db, int sd) {
  wgmma_m64n64k16_bf16(d, da, db, sd);
}
template <>
__device__ __forceinline__ void wgmma_bf16<128>(float (&d)[64], uint64_t da, uint64_t db, int sd) {
  wgmma_m64n128k16_bf16(d, da, db, sd);
}
template <>
__device__ __forceinline__ void wgmma_bf16<256>(float (&d)[128], uint64_t da, uint64_t db, int sd) {
  wgmma_m64n256k16_bf16(d, da, db, sd);
}
// One k-step of 32 bytes of K.
template <Elem E, int N>
__device__ __forceinline__ void wgmma_step(float (&d)[N / 2], uint64_t da, uint64_t db, int sd) {
  if constexpr (E == Elem::kBf16) {
    wgmma_bf16<N>(d, da, db, sd);
  } else {
    wgmma_e4m3<N>(d, da, db, sd);
  }
}
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
template <>
__device__ __forceinline__ void wgmma_e4m3<256>(float (&d)[128], uint64_t da, uint64_t db, int sd) {
  wgmma_m64n256k32_e4m3(d, da, db, sd);
}

// Shared memory of one CTA; kStages (key-block pipeline depth per warpgroup) is the largest of
// 4, 3, 2 that fits 227 KB (bf16 at d = 128 with two 256-wide warpgroups: 2).
template <int RB, int N, int NWG, int S>
struct LogitsSmemS {
  static constexpr int kStages = S;
  static constexpr int kQBytes = NWG * N * RB;
  static constexpr int kWBytes = NWG * N * 4;
  static constexpr int kKBytes = kBlockKeys * RB;
  static constexpr int kSBytes = kBlockKeys * 4;
  static constexpr int kRows = NWG * N / 8;  // upper bound of rows per CTA (H >= 8)
  static constexpr int kOffW = kQBytes;
  static constexpr int kOffK = kOffW + kWBytes;
  static constexpr int kOffS = kOffK + NWG * S * kKBytes;
  static constexpr int kOffBad = kOffS + NWG * S * kSBytes;
  static constexpr int kOffRows = kOffBad + NWG * S * 4;
  static constexpr int kOffPid = kOffRows + 2 * kRows * 4;
  static constexpr int kTotal = kOffPid + kMaxPagedBlocksPerCta * 4;
};
constexpr int kMaxSmem = 227 * 1024;
template <int RB, int N, int NWG>
constexpr int pick_stages() {
  return LogitsSmemS<RB, N, NWG, 4>::kTotal <= kMaxSmem   ? 4
         : LogitsSmemS<RB, N, NWG, 3>::kTotal <= kMaxSmem ? 3
                                                          : 2;
}
template <Elem E, int N, int NWG, int D>
using LogitsSmem = LogitsSmemS<D * kElemBytes<E>, N, NWG, pick_stages<D * kElemBytes<E>, N, NWG>()>;

// ---- Pieces shared by the logits kernels (logits_kernel, logits_ws_kernel, paged_tma_kernel) ----

/// The query rows of a CTA: row0 (the global row of local row 0), rows_valid (local rows that
/// exist) and, for paged decode, its sequence and context length (clamped to the columns).
/// Prefill takes the biggest (last) tiles first, for causal balance.
struct CtaRows {
  int64_t row0, rows_valid, seq;
  int32_t ctx;
};
__device__ __forceinline__ CtaRows cta_rows(const LogitsKernelParams& p, int rows, bool paged) {
  CtaRows c{0, 0, 0, 0};
  if (!paged) {
    const int64_t tile = static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x;
    c.row0 = tile * rows;
    c.rows_valid = min64(rows, p.nq - c.row0);
  } else {
    c.seq = blockIdx.x / p.groups_per_seq;
    const int64_t g = blockIdx.x % p.groups_per_seq;
    c.row0 = c.seq * p.next_n + g * rows;
    c.rows_valid = min64(rows, p.next_n - g * rows);
    c.ctx = p.context_lens[c.seq];
    c.ctx = max(0, static_cast<int32_t>(min64(c.ctx, p.ncols)));
  }
  return c;
}

/// The visible key range [lo, hi) of every local row (empty past rows_valid): prefill ks / ke
/// clamped to [0, nk); paged positions [0, ctx - next_n + position + 1).
template <int kThreads>
__device__ __forceinline__ void fill_row_ranges(const LogitsKernelParams& p, const CtaRows& c, int rows, bool paged,
                                                int tid, int32_t* row_lo, int32_t* row_hi) {
  for (int r = tid; r < rows; r += kThreads) {
    int32_t lo = 0, hi = 0;
    if (r < c.rows_valid) {
      if (!paged) {
        int64_t a = p.ks[c.row0 + r], b = p.ke[c.row0 + r];
        a = max64(0, min64(a, p.nk));
        b = max64(a, min64(b, p.nk));
        lo = static_cast<int32_t>(a);
        hi = static_cast<int32_t>(b);
      } else {
        const int64_t rr = (c.row0 - c.seq * p.next_n) + r;  // position of the row in its sequence
        int64_t b = static_cast<int64_t>(c.ctx) - p.next_n + rr + 1;
        hi = static_cast<int32_t>(max64(0, min64(b, c.ctx)));
      }
    }
    row_lo[r] = lo;
    row_hi[r] = hi;
  }
}

/// Q tiles of NWG groups of N (query, head) columns in the K-major core-matrix layout, and their
/// weights; rows past the end are zero. The caller commits and waits for the copies.
template <int RB, int N, int NWG, int kThreads>
__device__ __forceinline__ void load_q_and_w(const LogitsKernelParams& p, int h, const CtaRows& c, int tid,
                                             uint8_t* q_s, float* w_s) {
  const int qpw = N / h;
  constexpr int kQChunks = NWG * N * (RB / 16);
  for (int t = tid; t < kQChunks; t += kThreads) {
    const int g = t / (N * (RB / 16));
    const int cc = t % (N * (RB / 16));
    int n, kc;
    tile_chunk(cc, RB, &n, &kc);
    const int r = g * qpw + n / h;
    const bool ok = r < c.rows_valid;
    const uint8_t* src = ok ? p.q + ((c.row0 + r) * h + (n % h)) * RB + kc * 16 : p.q;
    cp_async_16(q_s + g * N * RB + core_offset(n, kc, RB), src, ok ? 16 : 0);
  }
  for (int t = tid; t < NWG * N; t += kThreads) {
    const int g = t / N, n = t % N;
    const int r = g * qpw + n / h;
    w_s[t] = r < c.rows_valid ? p.w[(c.row0 + r) * h + (n % h)] : 0.0f;
  }
}

/// The physical page of every block of this CTA's chunk of a paged cache.
template <int kThreads>
__device__ __forceinline__ void load_page_ids(const LogitsKernelParams& p, int64_t seq, int tid, int32_t* pid_s) {
  const int64_t first = static_cast<int64_t>(blockIdx.y) * p.blocks_per_cta;
  const int64_t cnt = min64(p.blocks_per_cta, p.n_blocks - first);
  for (int64_t i = tid; i < cnt; i += kThreads) pid_s[i] = p.block_table[seq * p.max_pages + first + i];
}

/// The active key blocks [blo, bhi) of a CTA: its chunk of blocks (from c_lo, blockIdx.y)
/// intersected with the union of its rows' ranges; writes -inf into the chunk's columns outside
/// them (unless p.skip_fill). Needs row_lo / row_hi visible to every thread.
struct ActiveBlocks {
  int64_t c_lo, blo, bhi;
};
template <int kThreads>
__device__ __forceinline__ ActiveBlocks active_blocks(const LogitsKernelParams& p, const CtaRows& c, int rows,
                                                      const int32_t* row_lo, const int32_t* row_hi, int tid) {
  int32_t umin = INT32_MAX, umax = 0;
  for (int r = 0; r < rows; ++r) {
    if (row_hi[r] > row_lo[r]) {
      umin = min(umin, row_lo[r]);
      umax = max(umax, row_hi[r]);
    }
  }
  ActiveBlocks a;
  a.c_lo = static_cast<int64_t>(blockIdx.y) * p.blocks_per_cta;
  const int64_t c_hi = min64(a.c_lo + p.blocks_per_cta, p.n_blocks);
  a.blo = a.c_lo;
  a.bhi = a.c_lo;
  if (umax > umin) {
    a.blo = max64(a.c_lo, umin / kBlockKeys);
    a.bhi = min64(c_hi, (static_cast<int64_t>(umax) + kBlockKeys - 1) / kBlockKeys);
    if (a.bhi < a.blo) a.bhi = a.blo;
  }
  const int64_t col_a = a.c_lo * kBlockKeys, col_b = min64(c_hi * kBlockKeys, p.ncols);
  const int64_t act_a = a.blo * kBlockKeys, act_b = a.bhi * kBlockKeys;
  const int64_t width = col_b - col_a;
  for (int r = 0; r < c.rows_valid && !p.skip_fill; ++r) {
    float* out = p.logits + (c.row0 + r) * p.ld;
    for (int64_t t = tid; t < width; t += kThreads) {
      const int64_t j = col_a + t;
      if (j < act_a || j >= act_b) out[j] = -INFINITY;
    }
  }
  return a;
}

/// The first part of the reduction of one 64-key block for one warpgroup's N (query, head)
/// columns, in the order at the top of this file: relu, weights (load_w(j8): the float2 of this
/// lane's pair in group j8), the pairwise tree over each query's hb = h / 8 groups (hb a power of
/// two; hb > N / 8 leaves the tree's top levels to the caller). emit(g, p0, p1) then gets this
/// lane's partial p_l (l = lane & 3) of query g for its keys j0 and j0 + 8.
template <int N, typename LoadW, typename Emit>
__device__ __forceinline__ void partial_block_logits(const float (&acc)[N / 2], LoadW load_w, int hb, Emit emit) {
  float u0[N / 8], u1[N / 8];
#pragma unroll
  for (int j8 = 0; j8 < N / 8; ++j8) {
    const float2 wv = load_w(j8);
    u0[j8] = fmaf(fmaxf(acc[4 * j8 + 1], 0.0f), wv.y, __fmul_rn(fmaxf(acc[4 * j8 + 0], 0.0f), wv.x));
    u1[j8] = fmaf(fmaxf(acc[4 * j8 + 3], 0.0f), wv.y, __fmul_rn(fmaxf(acc[4 * j8 + 2], 0.0f), wv.x));
  }
  // Pairwise tree inside each query's group of hb entries.
#pragma unroll
  for (int st = 1; st < N / 8; st *= 2) {
    if (st < hb) {
#pragma unroll
      for (int j8 = 0; j8 + st < N / 8; j8 += 2 * st) {
        u0[j8] = __fadd_rn(u0[j8], u0[j8 + st]);
        u1[j8] = __fadd_rn(u1[j8], u1[j8 + st]);
      }
    }
  }
#pragma unroll
  for (int j8 = 0; j8 < N / 8; ++j8) {
    if ((j8 & (hb - 1)) == 0) emit(j8 / hb, u0[j8], u1[j8]);
  }
}

/// The reduction of one 64-key block for one warpgroup's N (query, head) columns:
/// partial_block_logits, then the quad shuffles. store(g, p0, p1) then gets query g's sums for
/// this lane's keys j0 and j0 + 8 (every lane of the quad holds them).
template <int N, typename LoadW, typename Store>
__device__ __forceinline__ void reduce_block_logits(const float (&acc)[N / 2], LoadW load_w, int hb, Store store) {
  partial_block_logits<N>(acc, load_w, hb, [&](int g, float p0, float p1) {
    p0 = __fadd_rn(p0, __shfl_xor_sync(0xffffffffu, p0, 1));
    p1 = __fadd_rn(p1, __shfl_xor_sync(0xffffffffu, p1, 1));
    p0 = __fadd_rn(p0, __shfl_xor_sync(0xffffffffu, p0, 2));
    p1 = __fadd_rn(p1, __shfl_xor_sync(0xffffffffu, p1, 2));
    store(g, p0, p1);
  });
}

/// The epilogue of one 64-key block (reduce_block_logits), then the key scale and the row's mask.
/// Lane (warp, lane) owns keys j0 and j0 + 8; q_first: the warpgroup's first local row;
/// bad_page: the block's page could not be read (NaN logits).
template <int N, typename LoadW>
__device__ __forceinline__ void store_block_logits(const float (&acc)[N / 2], LoadW load_w, int hb, int q_first,
                                                   const LogitsKernelParams& p, const CtaRows& c,
                                                   const int32_t* row_lo, const int32_t* row_hi, int64_t j0,
                                                   float s0, float s1, bool bad_page, int quad) {
  const int64_t j1 = j0 + 8;
  reduce_block_logits<N>(acc, load_w, hb, [&](int g, float p0, float p1) {
    const int ql = q_first + g;
    if ((ql & 3) == quad && ql < c.rows_valid) {
      const int32_t lo = row_lo[ql], hi = row_hi[ql];
      float* out = p.logits + (c.row0 + ql) * p.ld;
      if (j0 < p.ncols) {
        out[j0] = (j0 >= lo && j0 < hi) ? (bad_page ? NAN : __fadd_rn(__fmul_rn(p0, s0), 0.0f)) : -INFINITY;
      }
      if (j1 < p.ncols) {
        out[j1] = (j1 >= lo && j1 < hi) ? (bad_page ? NAN : __fadd_rn(__fmul_rn(p1, s1), 0.0f)) : -INFINITY;
      }
    }
  });
}

// HT: heads known at compile time (0: read p.h at run time); the prefill instantiations fix it so
// the epilogue's per-query grouping and tree are unrolled without run-time branches.
template <Elem E, int N, int NWG, int D, int HT>
__global__ void __launch_bounds__(NWG * 128, 1) logits_kernel(const LogitsKernelParams p) {
  using L = LogitsSmem<E, N, NWG, D>;
  constexpr int kThreads = NWG * 128;
  constexpr int RB = D * kElemBytes<E>;  // bytes of one q or k row
  constexpr int kStages = L::kStages;
  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t* q_s = smem;
  float* w_s = reinterpret_cast<float*>(smem + L::kOffW);
  uint8_t* k_s = smem + L::kOffK;
  float* sc_s = reinterpret_cast<float*>(smem + L::kOffS);
  int32_t* bad_s = reinterpret_cast<int32_t*>(smem + L::kOffBad);
  int32_t* row_lo = reinterpret_cast<int32_t*>(smem + L::kOffRows);
  int32_t* pid_s = reinterpret_cast<int32_t*>(smem + L::kOffPid);
  int32_t* row_hi = row_lo + L::kRows;

  const int tid = threadIdx.x;
  const int h = HT ? HT : p.h;
  const int qpw = N / h;          // queries per warpgroup
  const int rows = NWG * qpw;     // queries per CTA
  const CtaRows cr = cta_rows(p, rows, p.paged);
  fill_row_ranges<kThreads>(p, cr, rows, p.paged, tid, row_lo, row_hi);
  load_q_and_w<RB, N, NWG, kThreads>(p, h, cr, tid, q_s, w_s);
  if (p.paged) load_page_ids<kThreads>(p, cr.seq, tid, pid_s);
  cp_async_commit();
  cp_async_wait<0>();  // each warpgroup reads Q chunks that other warpgroups' threads loaded
  fence_proxy_async();
  __syncthreads();
  const ActiveBlocks ab = active_blocks<kThreads>(p, cr, rows, row_lo, row_hi, tid);
  const int64_t c_lo = ab.c_lo, blo = ab.blo;
  const int64_t nblk = ab.bhi - ab.blo;

  // Each warpgroup runs its own load -> wgmma -> epilogue pipeline over all active blocks (for
  // its own queries), synchronized only by a named barrier of its 128 threads, so one
  // warpgroup's epilogue overlaps the other's tensor-core work.
  const int wg = tid / 128;
  const int wtid = tid % 128;
  const int warp = wtid / 32;
  const int lane = tid % 32;
  const int quad = lane & 3;
  const int hb = h / 8;
  uint8_t* k_wg = k_s + wg * kStages * L::kKBytes;
  float* sc_wg = sc_s + wg * kStages * kBlockKeys;
  int32_t* bad_wg = bad_s + wg * kStages;

  auto load_block = [&](int64_t b, int stage) {
    uint8_t* kd = k_wg + stage * L::kKBytes;
    float* sd = sc_wg + stage * kBlockKeys;
    const uint8_t* base;
    const float* sbase;
    int valid_rows;
    if (!p.paged) {
      base = p.k + b * kBlockKeys * RB;
      sbase = p.k_scale + b * kBlockKeys;
      valid_rows = static_cast<int>(min64(kBlockKeys, p.nk - b * kBlockKeys));
    } else {
      const int32_t pid = pid_s[b - c_lo];
      const bool ok = pid >= 0 && pid < p.num_pages;
      base = ok ? p.cache + static_cast<int64_t>(pid) * p.page_bytes : p.cache;
      sbase = reinterpret_cast<const float*>(base + kBlockKeys * RB);
      valid_rows = ok ? kBlockKeys : 0;
      if (wtid == 0) bad_wg[stage] = ok ? 0 : 1;
    }
#pragma unroll
    for (int c = wtid; c < kBlockKeys * (RB / 16); c += 128) {
      int row, kc;
      tile_chunk(c, RB, &row, &kc);
      const bool ok = row < valid_rows;
      cp_async_16(kd + core_offset(row, kc, RB), ok ? base + row * RB + kc * 16 : base, ok ? 16 : 0);
    }
    if (wtid < kBlockKeys) {
      const bool ok = wtid < valid_rows;
      cp_async_4(sd + wtid, ok ? sbase + wtid : sbase, ok ? 4 : 0);
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nblk) load_block(blo + s, s);
    cp_async_commit();
  }

  const uint32_t q_addr = smem_u32(q_s + wg * N * RB);
  float acc[N / 2];

  for (int64_t it = 0; it < nblk; ++it) {
    const int stage = static_cast<int>(it % kStages);
    cp_async_wait<kStages - 2>();
    fence_proxy_async();
    named_barrier_sync(1 + wg, 128);
    {
      const int64_t nb = it + kStages - 1;
      if (nb < nblk) load_block(blo + nb, static_cast<int>(nb % kStages));
      cp_async_commit();
    }
    const uint32_t k_addr = smem_u32(k_wg + stage * L::kKBytes);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < RB / 32; ++s) {  // k-steps of 32 bytes: 2 core matrices along K
      const uint64_t da = make_desc(k_addr + s * 256, 128, 8 * RB);
      const uint64_t db = make_desc(q_addr + s * 256, 128, 8 * RB);
      wgmma_step<E, N>(acc, da, db, s > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(acc);

    const int64_t b = blo + it;
    const bool bad_page = p.paged && bad_wg[stage] != 0;
    const int r0 = warp * 16 + (lane >> 2);
    const float s0 = sc_wg[stage * kBlockKeys + r0], s1 = sc_wg[stage * kBlockKeys + r0 + 8];
    const float* w_wg = w_s + wg * N + quad * 2;
    store_block_logits<N>(
        acc, [&](int j8) { return *reinterpret_cast<const float2*>(w_wg + j8 * 8); }, hb, wg * qpw, p, cr, row_lo,
        row_hi, b * kBlockKeys + r0, s0, s1, bad_page, quad);
  }
  cp_async_wait<0>();
}

template <Elem E, int N, int NWG, int D, int HT>
Status launch_logits(const LogitsKernelParams& kp, dim3 grid, cudaStream_t stream) {
  using L = LogitsSmem<E, N, NWG, D>;
  static_assert(L::kTotal <= kMaxSmem, "logits kernel shared memory");
  auto kernel = logits_kernel<E, N, NWG, D, HT>;
  INDEXLAB_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal));
  kernel<<<grid, NWG * 128, L::kTotal, stream>>>(kp);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

template <Elem E, int N, int NWG>
Status launch_logits_d(const LogitsKernelParams& kp, int d, dim3 grid, cudaStream_t stream) {
  if (d == 64) return launch_logits<E, N, NWG, 64, 0>(kp, grid, stream);
  return launch_logits<E, N, NWG, 128, 0>(kp, grid, stream);
}


// ---- prefill, warp-specialized: one key pipeline shared by four math warpgroups ---------------
//
// Same arithmetic as logits_kernel (same wgmma chain per (key, query-head), same epilogue order),
// so the logits are bit-identical; only the schedule differs. A producer warpgroup streams 64-key
// blocks into a ring of L::kStages stages (8 for fp8 at d = 128) with full/empty mbarriers; four
// math warpgroups, each owning N = 128 (query, head) columns, consume every block, so a key block
// is loaded once per CTA and no math thread issues loads. (With a single producer warp the math
// warps spent a quarter of their time waiting for keys: ncu source counters.)
// Two forms of the producer (template Tma):
// - Tma (fp8 with 16-byte aligned k and k_scale, the default): one thread issues a block's two
//   copies, a [64, d] box of the key rows written d-byte swizzled (the layout
//   make_desc_swizzled describes, as in paged_tma_kernel) and a 64-float box of its scales; the
//   full barrier completes on their bytes (rows past nk read as zero). The other 127 threads
//   leave at once.
// - cp.async (bf16, unaligned fp8, INDEXLAB_LOGITS=ws1): the warpgroup's 128 threads copy the
//   block in 16-byte pieces into the core-matrix layout. In ncu (H200, 8K causal) their address
//   arithmetic was ~41 issue slots a math warp's block, in a kernel bound by its issue rate.
// The default for prefill; INDEXLAB_LOGITS=v1 selects logits_kernel (use_ws_prefill). fp8 at h >= 32
// with the TMA producer runs logits_wse_kernel (below) instead, unless INDEXLAB_LOGITS=wsnoepi.

__device__ __forceinline__ float2 ld_shared_f2(uint32_t addr) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(addr));
  return v;
}
constexpr int kWsMathWarpgroups = 4;
constexpr int kWsN = 128;           // (query, head) columns per math warpgroup
constexpr int kWsThreads = kWsMathWarpgroups * 128 + 128;  // + one producer warpgroup
// Register split (setmaxnreg): the CTA launches at 65536 / 640 -> 96 registers a thread; the
// producer warpgroup gives back 128 x (96 - 32) and the math warpgroups take 512 x (112 - 96)
// from the CTA's pool. setmaxnreg.inc waits until the pool holds what it asks for, so the two
// must balance (an earlier 112 / 40 split hung the kernel).
constexpr int kWsMathRegs = 112;
constexpr int kWsProducerRegs = 32;
constexpr int kWsLaunchRegs = (65536 / kWsThreads) / 8 * 8;
static_assert(kWsMathWarpgroups * 128 * (kWsMathRegs - kWsLaunchRegs) <=
                  128 * (kWsLaunchRegs - kWsProducerRegs),
              "setmaxnreg: the math warpgroups would wait forever for registers");
constexpr int kWsInFlight = 4;  // cp.async groups the producer keeps in flight (at most S - 1)

template <int RB, int S>
struct WsSmemS {
  static constexpr int kStages = S;
  static constexpr int kQBytes = kWsMathWarpgroups * kWsN * RB;
  static constexpr int kWBytes = kWsMathWarpgroups * kWsN * 4;
  static constexpr int kKBytes = kBlockKeys * RB;
  static constexpr int kRows = kWsMathWarpgroups * kWsN / 8;
  static constexpr int kOffW = kQBytes;
  static constexpr int kOffK = kOffW + kWBytes;
  static constexpr int kOffS = kOffK + S * kKBytes;
  static constexpr int kOffBar = kOffS + S * kBlockKeys * 4;  // full[S], empty[S]
  static constexpr int kOffRows = kOffBar + 2 * S * 8;
  static constexpr int kUsed = kOffRows + 2 * kRows * 4;
  static constexpr int kTotal = kUsed + 1024;  // the base is rounded up to 1024 bytes (TMA swizzle)
  static_assert(kOffK % 1024 == 0 && kKBytes % 1024 == 0, "swizzled key stages start on 1024 bytes");
};
template <int RB>
constexpr int pick_ws_stages() {
  return WsSmemS<RB, 8>::kTotal <= kMaxSmem   ? 8
         : WsSmemS<RB, 6>::kTotal <= kMaxSmem ? 6
         : WsSmemS<RB, 4>::kTotal <= kMaxSmem ? 4
                                              : 3;
}
template <Elem E, int D>
using WsSmem = WsSmemS<D * kElemBytes<E>, pick_ws_stages<D * kElemBytes<E>>()>;

/// One thread of a producer warpgroup: streams the key blocks [blo, blo + nblk) of 64 rows into
/// an S-stage ring, each stage a [64, d] box of the key rows (d-byte swizzled, kKBytes) and a box
/// of their 64 scales, its full barrier completing on their bytes; a stage is refilled once its
/// empty barrier completes. I: the block counter's type (each kernel keeps its own).
template <int S, int kKBytes, typename I>
__device__ __forceinline__ void tma_produce_key_blocks(uint8_t* k_s, float* sc_s, uint64_t* full, uint64_t* empty,
                                                       const CUtensorMap* kmap, const CUtensorMap* smap, int64_t blo,
                                                       I nblk) {
  constexpr uint32_t kTx = kKBytes + kBlockKeys * 4;
  int stage = 0;
  uint32_t phase = 0;  // parity of the empty barrier's phase to wait for
  for (I it = 0; it < nblk; ++it) {
    if (it >= S) mbar_wait(&empty[stage], phase);
    const int row = static_cast<int>((blo + it) * kBlockKeys);  // < nk < 2^31 - 128
    mbar_arrive_expect_tx(&full[stage], kTx);
    tma_load_2d(k_s + stage * kKBytes, kmap, 0, row, &full[stage]);
    tma_load_1d(sc_s + stage * kBlockKeys, smap, row, &full[stage]);
    if (++stage == S) {
      stage = 0;
      if (it >= S) phase ^= 1u;
    }
  }
}

template <Elem E, int D, int HT, bool Tma>
__global__ void __launch_bounds__(kWsThreads, 1)
    logits_ws_kernel(const LogitsKernelParams p, const __grid_constant__ CUtensorMap kmap,
                     const __grid_constant__ CUtensorMap smap) {
  using L = WsSmem<E, D>;
  constexpr int N = kWsN;
  constexpr int NWG = kWsMathWarpgroups;
  constexpr int RB = D * kElemBytes<E>;
  constexpr int S = L::kStages;
  static_assert(!Tma || E == Elem::kE4m3, "the TMA producer writes rows of at most 128 bytes (fp8)");
  // The producer waits for a stage to be released before it arrives on the block kInFlight
  // behind; kInFlight >= S would wait on a release that needs that very arrival (bf16 at
  // d = 128 has S = 4).
  constexpr int kInFlight = kWsInFlight < S ? kWsInFlight : S - 1;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_align_1024(smem_raw);
  uint8_t* q_s = smem;
  float* w_s = reinterpret_cast<float*>(smem + L::kOffW);
  uint8_t* k_s = smem + L::kOffK;
  float* sc_s = reinterpret_cast<float*>(smem + L::kOffS);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kOffBar);
  uint64_t* empty = full + S;
  int32_t* row_lo = reinterpret_cast<int32_t*>(smem + L::kOffRows);
  int32_t* row_hi = row_lo + L::kRows;

  const int tid = threadIdx.x;
  const int h = HT ? HT : p.h;
  const int qpw = N / h;
  const int rows = NWG * qpw;
  const CtaRows cr = cta_rows(p, rows, false);
  fill_row_ranges<kWsThreads>(p, cr, rows, false, tid, row_lo, row_hi);
  load_q_and_w<RB, N, NWG, kWsThreads>(p, h, cr, tid, q_s, w_s);
  if (tid == 0) {
    for (int s = 0; s < S; ++s) {
      // Tma: the producer's arrive (with the block's bytes as its tx count); cp.async: every
      // producer thread arrives once its copies landed.
      mbar_init(&full[s], Tma ? 1 : 128);
      mbar_init(&empty[s], NWG * 4);  // lane 0 of every math warp
    }
    if (Tma) asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  const ActiveBlocks ab = active_blocks<kWsThreads>(p, cr, rows, row_lo, row_hi, tid);
  const int64_t blo = ab.blo;
  const int64_t nblk = ab.bhi - ab.blo;
  const int lane = tid % 32;

  if (tid >= NWG * 128) {  // producer warpgroup
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kWsProducerRegs));
    const int pt = tid - NWG * 128;
    if constexpr (Tma) {  // one thread issues every block's two copies
      if (pt == 0) tma_produce_key_blocks<S, L::kKBytes>(k_s, sc_s, full, empty, &kmap, &smap, blo, nblk);
    } else {  // the warpgroup's 128 threads copy 16-byte pieces
      for (int64_t it = 0; it < nblk + kInFlight; ++it) {
        if (it < nblk) {
          const int stage = static_cast<int>(it % S);
          if (it >= S) mbar_wait(&empty[stage], static_cast<uint32_t>((it / S - 1) & 1));
          const int64_t b = blo + it;
          uint8_t* kd = k_s + stage * L::kKBytes;
          float* sd = sc_s + stage * kBlockKeys;
          const uint8_t* base = p.k + b * kBlockKeys * RB;
          const float* sbase = p.k_scale + b * kBlockKeys;
          const int valid_rows = static_cast<int>(min64(kBlockKeys, p.nk - b * kBlockKeys));
#pragma unroll 1  // few registers here (setmaxnreg.dec)
          for (int c = pt; c < kBlockKeys * (RB / 16); c += 128) {
            int row, kc;
            tile_chunk(c, RB, &row, &kc);
            const bool ok = row < valid_rows;
            cp_async_16(kd + core_offset(row, kc, RB), ok ? base + row * RB + kc * 16 : base, ok ? 16 : 0);
          }
          if (pt < kBlockKeys) {
            const bool ok = pt < valid_rows;
            cp_async_4(sd + pt, ok ? sbase + pt : sbase, ok ? 4 : 0);
          }
        }
        cp_async_commit();
        if (it >= kInFlight) {
          cp_async_wait<kInFlight>();
          fence_proxy_async();
          mbar_arrive(&full[(it - kInFlight) % S]);
        }
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kWsMathRegs));
  const int wg = tid / 128;
  const int wtid = tid % 128;
  const int warp = wtid / 32;
  const int quad = lane & 3;
  const int hb = h / 8;
  const uint32_t q_addr = smem_u32(q_s + wg * N * RB);
  float acc[N / 2];
  const int r0 = warp * 16 + (lane >> 2);
  const uint32_t w_wg = smem_u32(w_s + wg * N + quad * 2);
  // Loop invariants out of the block loop. ncu (H200, 8K causal) counted ~490 instructions a
  // math warp and 64-key block against ~200 of arithmetic, with the issue slots 68% busy: the
  // stores' 64-bit row and column arithmetic and bounds took ~55 a query, the descriptors ~70.
  // Descriptors: the address field is (address >> 4), and every stage and k-step offset is a
  // multiple of 16 bytes inside the 227 KB window, so adding offset >> 4 to a base descriptor
  // is the descriptor of the offset address.
  const uint64_t dq = make_desc(q_addr, 128, 8 * RB);
  // Key stages: d-byte swizzled (Tma: a k-step of 32 bytes adds 32 to the address) or the
  // core-matrix layout (a k-step is 256 bytes further).
  const uint64_t dk = Tma ? make_desc_swizzled(smem_u32(k_s), RB) : make_desc(smem_u32(k_s), 128, 8 * RB);
  constexpr int kKStep = Tma ? 2 : 16;  // descriptor units (16 bytes) a k-step
  const int q_first = wg * qpw;
  float* const out_wg = p.logits + (cr.row0 + q_first) * p.ld;
  const int64_t ld = p.ld;
  const int ncols = static_cast<int>(p.ncols);  // < 2^31 - 128 (launch_mqa_logits_impl)
  uint32_t smask = 0;  // bit g: this lane writes query g of the warpgroup (qpw <= 16)
  for (int g = 0; g < qpw; ++g) {
    const int ql = q_first + g;
    if ((ql & 3) == quad && ql < cr.rows_valid) smask |= 1u << g;
  }
  int j0 = static_cast<int>(blo) * kBlockKeys + r0;
  int stage = 0;
  uint32_t phase = 0;
  const int nblk32 = static_cast<int>(nblk);

  for (int it = 0; it < nblk32; ++it) {
    mbar_wait(&full[stage], phase);
    const uint64_t dks = dk + static_cast<uint64_t>((stage * L::kKBytes) >> 4);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < RB / 32; ++s) wgmma_step<E, N>(acc, dks + s * kKStep, dq + s * 16, s > 0 ? 1 : 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(acc);
    const float s0 = sc_s[stage * kBlockKeys + r0], s1 = sc_s[stage * kBlockKeys + r0 + 8];
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[stage]);

    // w is re-read from shared memory each block (8 floats a step): held in registers it spills.
    // The store is store_block_logits's, term for term (bad_page is always false here).
    const int j1 = j0 + 8;
    auto store = [&](int g, float p0, float p1) {
      if ((smask >> g) & 1u) {
        const int32_t lo = row_lo[q_first + g], hi = row_hi[q_first + g];
        float* out = out_wg + g * ld;
        if (j0 < ncols) out[j0] = (j0 >= lo && j0 < hi) ? __fadd_rn(__fmul_rn(p0, s0), 0.0f) : -INFINITY;
        if (j1 < ncols) out[j1] = (j1 >= lo && j1 < hi) ? __fadd_rn(__fmul_rn(p1, s1), 0.0f) : -INFINITY;
      }
    };
    reduce_block_logits<N>(acc, [&](int j8) { return ld_shared_f2(w_wg + j8 * 32); }, hb, store);
    j0 += kBlockKeys;
    if (++stage == S) {
      stage = 0;
      phase ^= 1u;
    }
  }
}

// ---- prefill, warp-specialized with an epilogue warpgroup (fp8 by TMA, h >= 32) -------------
//
// logits_ws_kernel's math warps spend ~350 issue slots a 64-key block and warp, ~150 of them on
// the quad shuffles, the row masks and scattered 4-byte stores (cuda/NOTES.md, ninth and tenth
// sessions). Here the math warpgroups stop at each lane's partial p_l (partial_block_logits) and
// write them to a shared-memory ring, with the block's key scales; a sixth, epilogue warpgroup
// finishes each (key, query): total = (p_0 + p_1) + (p_2 + p_3) (the two shuffle rounds' sum,
// term for term), times the key scale, + 0, the row's mask, and a store in which a warp writes
// 32 consecutive keys of one row. Each math warpgroup also splits its N = 128 columns into two
// m64n64 wgmma chains committed separately: it reduces the first half while the tensor cores run
// the second. Same arithmetic as logits_ws_kernel, so the same bits; the tests compare the two
// (INDEXLAB_LOGITS=wsnoepi selects logits_ws_kernel). Threads: [0, 512) math, [512, 640) producer
// (one thread issues the TMA copies), [640, 768) epilogue. Queries a CTA: Q = 512 / h (16, 8 or
// 4). h = 128: a query spans both halves, whose tree tops are added (the tree's stride-8 level:
// u_0 + u_8) before the partial is written.
// Measured on an H200: only 2-3% faster than logits_ws_kernel (32K causal logits 10.9 against
// 11.2 ms): the issue slots were not what bound it. With parts left out (twelfth session) the
// 32K logits took 8.93 ms without the math warps' epilogue arithmetic, 4.46 ms with no math at
// all and 10.4 ms without the prologue's -inf fill (which clean_logits = false now skips); ncu
// at 8K put shared memory 76% busy, most of it the m64n64 chains' operand reads, and the issue
// slots 58%. See cuda/NOTES.md (eleventh and twelfth sessions).
constexpr int kWseEpiStages = 2;
constexpr int kWseThreads = kWsMathWarpgroups * 128 + 256;
constexpr int kWseLaunchRegs = (65536 / kWseThreads) / 8 * 8;  // 80
constexpr int kWseMathRegs = 104;
constexpr int kWseSideRegs = 32;  // producer and epilogue warpgroups
static_assert(kWsMathWarpgroups * 128 * (kWseMathRegs - kWseLaunchRegs) <=
                  256 * (kWseLaunchRegs - kWseSideRegs),
              "setmaxnreg: the math warpgroups would wait forever for registers");

template <int D, int HT>
struct WseSmem {
  using W = WsSmem<Elem::kE4m3, D>;
  static constexpr int kQ = kWsMathWarpgroups * kWsN / HT;  // queries a CTA
  // Floats a key row of the partial ring: (query, lane) pairs, +4 so that a warp's partial writes
  // (8 key rows x 4 lanes) fall in 32 distinct banks and the epilogue's 16-byte reads of 32
  // consecutive rows in distinct 16-byte bank groups.
  static constexpr int kStride = 4 * kQ + 4;
  static constexpr int kEpiFloats = kBlockKeys * kStride;
  static constexpr int kOffEpi = (W::kUsed + 15) & ~15;
  static constexpr int kOffEpiScale = kOffEpi + kWseEpiStages * kEpiFloats * 4;  // [E][64] key scales
  static constexpr int kOffEpiBar = kOffEpiScale + kWseEpiStages * kBlockKeys * 4;  // full[E], empty[E]
  static constexpr int kUsed = kOffEpiBar + 2 * kWseEpiStages * 8;
  static constexpr int kTotal = kUsed + 1024;
};

__device__ __forceinline__ float4 ld_shared_f4(uint32_t addr) {
  float4 v;
  asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(addr));
  return v;
}

template <int D, int HT>
__global__ void __launch_bounds__(kWseThreads, 1)
    logits_wse_kernel(const LogitsKernelParams p, const __grid_constant__ CUtensorMap kmap,
                      const __grid_constant__ CUtensorMap smap) {
  using L = WsSmem<Elem::kE4m3, D>;
  using LE = WseSmem<D, HT>;
  constexpr int N = kWsN;
  constexpr int NWG = kWsMathWarpgroups;
  constexpr int RB = D;
  constexpr int S = L::kStages;
  constexpr int E = kWseEpiStages;
  constexpr int qpw = N / HT;  // queries a math warpgroup (HT <= 128)
  constexpr int Q = LE::kQ;
  static_assert(HT >= 32 && HT <= 128, "the partial ring holds at most 16 queries");
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_align_1024(smem_raw);
  uint8_t* q_s = smem;
  float* w_s = reinterpret_cast<float*>(smem + L::kOffW);
  uint8_t* k_s = smem + L::kOffK;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kOffBar);
  uint64_t* empty = full + S;
  int32_t* row_lo = reinterpret_cast<int32_t*>(smem + L::kOffRows);
  int32_t* row_hi = row_lo + L::kRows;
  float* epi_s = reinterpret_cast<float*>(smem + LE::kOffEpi);
  float* epi_sc = reinterpret_cast<float*>(smem + LE::kOffEpiScale);
  uint64_t* epi_full = reinterpret_cast<uint64_t*>(smem + LE::kOffEpiBar);
  uint64_t* epi_empty = epi_full + E;

  const int tid = threadIdx.x;
  const CtaRows cr = cta_rows(p, Q, false);
  fill_row_ranges<kWseThreads>(p, cr, Q, false, tid, row_lo, row_hi);
  load_q_and_w<RB, N, NWG, kWseThreads>(p, HT, cr, tid, q_s, w_s);
  if (tid == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(&full[s], 1);         // the producer's arrive, with the block's bytes as its tx count
      mbar_init(&empty[s], NWG * 4);  // lane 0 of every math warp
    }
    for (int e = 0; e < E; ++e) {
      mbar_init(&epi_full[e], NWG * 128);  // every math thread, after its partial writes
      mbar_init(&epi_empty[e], 128);       // every epilogue thread, after its reads
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  const ActiveBlocks ab = active_blocks<kWseThreads>(p, cr, Q, row_lo, row_hi, tid);
  const int64_t blo = ab.blo;
  const int nblk = static_cast<int>(ab.bhi - ab.blo);
  const int lane = tid % 32;

  if (tid >= NWG * 128 + 128) {  // epilogue warpgroup: thread et owns key row et % 64 of every block
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kWseSideRegs));
    const int et = tid - (NWG * 128 + 128);
    const int r = et & 63;
    const int qbase = (et >> 6) * (Q / 2);  // its half of the CTA's queries
    const int ncols = static_cast<int>(p.ncols);
    const int64_t ld = p.ld;
    float* const out = p.logits + cr.row0 * ld;
    const uint32_t row_addr = smem_u32(epi_s + r * LE::kStride + qbase * 4);
    int j = static_cast<int>(blo) * kBlockKeys + r;
    for (int it = 0; it < nblk; ++it) {
      const int es = it % E;
      mbar_wait(&epi_full[es], static_cast<uint32_t>((it / E) & 1));
      const float sj = epi_sc[es * kBlockKeys + r];
#pragma unroll 4  // fully unrolled, h = 32's 8 queries spilled at this warpgroup's 32 registers
      for (int i = 0; i < Q / 2; ++i) {
        const int qc = qbase + i;
        const float4 v = ld_shared_f4(row_addr + (es * LE::kEpiFloats + i * 4) * 4);
        if (qc < cr.rows_valid && j < ncols) {
          const float total = __fadd_rn(__fadd_rn(v.x, v.y), __fadd_rn(v.z, v.w));
          out[qc * ld + j] = (j >= row_lo[qc] && j < row_hi[qc]) ? __fadd_rn(__fmul_rn(total, sj), 0.0f) : -INFINITY;
        }
      }
      mbar_arrive(&epi_empty[es]);
      j += kBlockKeys;
    }
    return;
  }

  if (tid >= NWG * 128) {  // producer warpgroup: one thread issues every block's two copies
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kWseSideRegs));
    if (tid == NWG * 128)
      tma_produce_key_blocks<S, L::kKBytes>(k_s, reinterpret_cast<float*>(smem + L::kOffS), full, empty, &kmap, &smap,
                                            blo, nblk);
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kWseMathRegs));
  const int wg = tid / 128;
  const int warp = (tid % 128) / 32;
  const int quad = lane & 3;
  constexpr int hb = HT / 8;
  constexpr int hbh = hb < 8 ? hb : 8;  // the tree levels inside one 64-column half
  const uint64_t dq = make_desc(smem_u32(q_s + wg * N * RB), 128, 8 * RB);
  constexpr uint64_t kHalfB = (64 * RB) >> 4;  // descriptor units: the second 64 B rows
  const uint64_t dk = make_desc_swizzled(smem_u32(k_s), RB);
  const int r0 = warp * 16 + (lane >> 2);
  const uint32_t w_wg = smem_u32(w_s + wg * N + quad * 2);
  // This lane's partial slots: key rows r0 and r0 + 8, lane quad of each query.
  float* const part0 = epi_s + r0 * LE::kStride + quad;
  float* const part1 = part0 + 8 * LE::kStride;
  float accA[32], accB[32];
  int stage = 0;
  uint32_t phase = 0;
  for (int it = 0; it < nblk; ++it) {
    const int es = it % E;
    mbar_wait(&full[stage], phase);
    const uint64_t dks = dk + static_cast<uint64_t>((stage * L::kKBytes) >> 4);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < RB / 32; ++s) wgmma_step<Elem::kE4m3, 64>(accA, dks + s * 2, dq + s * 16, s > 0 ? 1 : 0);
    wgmma_commit();
#pragma unroll
    for (int s = 0; s < RB / 32; ++s)
      wgmma_step<Elem::kE4m3, 64>(accB, dks + s * 2, dq + kHalfB + s * 16, s > 0 ? 1 : 0);
    wgmma_commit();
    if (it >= E) mbar_wait(&epi_empty[es], static_cast<uint32_t>((it / E - 1) & 1));
    if (tid < 32) {  // the block's key scales, for the epilogue warpgroup (the stage is still held)
      const float* sc = reinterpret_cast<const float*>(smem + L::kOffS) + stage * kBlockKeys;
      epi_sc[es * kBlockKeys + lane] = sc[lane];
      epi_sc[es * kBlockKeys + 32 + lane] = sc[32 + lane];
    }
    float* const e0 = part0 + es * LE::kEpiFloats;
    float* const e1 = part1 + es * LE::kEpiFloats;
    wgmma_wait<1>();
    fence_acc(accA);
    float keep0 = 0.0f, keep1 = 0.0f;  // h = 128: the first half's tree top
    partial_block_logits<64>(accA, [&](int j8) { return ld_shared_f2(w_wg + j8 * 32); }, hbh,
                             [&](int g, float p0, float p1) {
                               if constexpr (HT == 128) {
                                 keep0 = p0;
                                 keep1 = p1;
                               } else {
                                 const int qc = wg * qpw + g;
                                 e0[qc * 4] = p0;
                                 e1[qc * 4] = p1;
                               }
                             });
    wgmma_wait<0>();
    fence_acc(accB);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[stage]);
    partial_block_logits<64>(accB, [&](int j8) { return ld_shared_f2(w_wg + (8 + j8) * 32); }, hbh,
                             [&](int g, float p0, float p1) {
                               int qc;
                               if constexpr (HT == 128) {
                                 p0 = __fadd_rn(keep0, p0);
                                 p1 = __fadd_rn(keep1, p1);
                                 qc = wg;
                               } else {
                                 qc = wg * qpw + 64 / HT + g;
                               }
                               e0[qc * 4] = p0;
                               e1[qc * 4] = p1;
                             });
    mbar_arrive(&epi_full[es]);
    if (++stage == S) {
      stage = 0;
      phase ^= 1u;
    }
  }
}

/// The ws kernel's producer form: TMA for fp8 keys and scales on 16-byte boundaries (a tensor
/// map's base must be), unless INDEXLAB_LOGITS=ws1 asks for the cp.async form (differential tests,
/// side-by-side benchmarks). Read at every launch so a test can switch it.
bool use_ws_tma(const LogitsKernelParams& kp) {
  const char* e = std::getenv("INDEXLAB_LOGITS");
  if (e != nullptr && std::strcmp(e, "ws1") == 0) return false;
  return (reinterpret_cast<uintptr_t>(kp.k) & 15) == 0 && (reinterpret_cast<uintptr_t>(kp.k_scale) & 15) == 0;
}

/// The TMA form at h >= 32 runs logits_wse_kernel (the epilogue warpgroup) unless
/// INDEXLAB_LOGITS=wsnoepi asks for logits_ws_kernel (differential tests, side-by-side benchmarks).
bool use_ws_epilogue() {
  const char* e = std::getenv("INDEXLAB_LOGITS");
  return !(e != nullptr && std::strcmp(e, "wsnoepi") == 0);
}

template <Elem E, int D, int HT>
Status launch_logits_ws(const LogitsKernelParams& kp, dim3 grid, cudaStream_t stream) {
  using L = WsSmem<E, D>;
  static_assert(L::kTotal <= kMaxSmem, "warp-specialized logits kernel shared memory");
  if constexpr (E == Elem::kE4m3) {
    if (use_ws_tma(kp)) {
      // The maps of the last keys this thread launched on (a prefill loop over row chunks, or
      // HISA's and the benchmarks' repeated calls, reuse them; encoding is a driver call).
      struct Maps {
        const uint8_t* k = nullptr;
        const float* k_scale = nullptr;
        int64_t nk = -1;
        int d = -1;
        CUtensorMap kmap, smap;
      };
      thread_local Maps last;
      if (last.k != kp.k || last.k_scale != kp.k_scale || last.nk != kp.nk || last.d != D) {
        last.k = nullptr;
        INDEXLAB_RETURN_IF_ERROR(encode_rows_map(kp.k, kp.nk, D, &last.kmap));
        INDEXLAB_RETURN_IF_ERROR(encode_vec_map(kp.k_scale, kp.nk, kBlockKeys, &last.smap));
        last.k = kp.k;
        last.k_scale = kp.k_scale;
        last.nk = kp.nk;
        last.d = D;
      }
      if constexpr (HT >= 32) {
        if (use_ws_epilogue()) {
          using LE = WseSmem<D, HT>;
          static_assert(LE::kTotal <= kMaxSmem, "logits_wse_kernel shared memory");
          auto kernel = logits_wse_kernel<D, HT>;
          INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, LE::kTotal));
          kernel<<<grid, kWseThreads, LE::kTotal, stream>>>(kp, last.kmap, last.smap);
          INDEXLAB_CUDA_CHECK(cudaGetLastError());
          return Status::Ok();
        }
      }
      auto kernel = logits_ws_kernel<E, D, HT, true>;
      INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal));
      kernel<<<grid, kWsThreads, L::kTotal, stream>>>(kp, last.kmap, last.smap);
      INDEXLAB_CUDA_CHECK(cudaGetLastError());
      return Status::Ok();
    }
  }
  auto kernel = logits_ws_kernel<E, D, HT, false>;
  INDEXLAB_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal));
  const CUtensorMap unused{};
  kernel<<<grid, kWsThreads, L::kTotal, stream>>>(kp, unused, unused);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

// ---- paged decode, TMA: a producer warp streams whole pages --------------------------------------
//
// Same arithmetic as logits_kernel (the same wgmma chain per (key, query-head) and the same
// epilogue order), so the logits are bit-identical; only the loads differ. One thread of a
// producer warp loads each 64-key page with one TMA: the page's key rows as a [64, RB] box,
// written 128-byte (d = 128) or 64-byte (d = 64) swizzled, which wgmma reads through a swizzled
// descriptor, plus one bulk copy of the page's 64 scales, into a ring of S stages (full / empty
// mbarriers, the full one completing on the bytes), both with an L2 evict-first policy: the pages
// are read once, and the logits the top-k reads next stay in L2 (H200, 64 x 64K with top-k:
// 0.188-0.189 against 0.190-0.193 ms without; INDEXLAB_DECODE_HINT=0 reads without it). One math
// warpgroup consumes the ring and never issues loads. fp8 with next_n * h <= 64; N = 8 wgmma
// columns when next_n * h = 8 (MISA decode's 8 routed heads), else 64. The default for those
// shapes; INDEXLAB_DECODE=v1 selects logits_kernel. Its prologue and epilogue are the shared
// pieces above, as in logits_kernel.

/// A configuration of paged_tma_kernel: D (key bytes a row), N (wgmma columns: next_n * h fits),
/// a ring of S stages. (Two math warpgroups taking turns on the ring, 2x6 and 2x8, ran on an H200
/// in the fifth session and were not faster than one on 4 stages; a pipelined consumer, the next
/// page's wgmma during this page's epilogue on two accumulators, ran in the sixth and was slower,
/// 0.204 against 0.178 ms; both removed, cuda/NOTES.md.)
template <int D, int N, int S>
struct TmaCfg {
  static constexpr int kD = D, kN = N, kStages = S;
  static constexpr int kThreads = 128 + 32;        // one math warpgroup + one producer warp
  static constexpr int kRows = N / 8;              // rows of a CTA: N / h with h >= 8
  static constexpr int RB = D;                     // e4m3: one byte an element
  static constexpr int kKBytes = kBlockKeys * RB;  // 8 KB (d = 128) or 4 KB: 1024-byte multiples
  static constexpr int kOffK = 0;
  static constexpr int kOffS = kOffK + S * kKBytes;
  static constexpr int kOffQ = kOffS + S * kBlockKeys * 4;
  static constexpr int kOffW = kOffQ + N * RB;
  static constexpr int kOffBar = kOffW + N * 4;  // full[S], empty[S]
  static constexpr int kOffBad = kOffBar + 2 * S * 8;
  static constexpr int kOffRows = kOffBad + S * 4;
  static constexpr int kOffPid = kOffRows + 2 * kRows * 4;
  static constexpr int kUsed = kOffPid + kMaxPagedBlocksPerCta * 4;
  static constexpr int kTotal = kUsed + 1024;  // the base is rounded up to 1024 bytes in the kernel
};

template <class C>
__global__ void __launch_bounds__(C::kThreads, 1)
    paged_tma_kernel(const LogitsKernelParams p, const __grid_constant__ CUtensorMap tmap) {
  constexpr int RB = C::RB;
  constexpr int N = C::kN;
  constexpr int S = C::kStages;
  constexpr int kThreads = C::kThreads;
  using L = C;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_align_1024(smem_raw);
  uint8_t* k_s = smem + L::kOffK;
  float* sc_s = reinterpret_cast<float*>(smem + L::kOffS);
  uint8_t* q_s = smem + L::kOffQ;
  float* w_s = reinterpret_cast<float*>(smem + L::kOffW);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kOffBar);
  uint64_t* empty = full + S;
  int32_t* bad_s = reinterpret_cast<int32_t*>(smem + L::kOffBad);
  int32_t* row_lo = reinterpret_cast<int32_t*>(smem + L::kOffRows);
  int32_t* row_hi = row_lo + L::kRows;
  int32_t* pid_s = reinterpret_cast<int32_t*>(smem + L::kOffPid);

  const int tid = threadIdx.x;
  const int h = p.h;
  const int rows = N / h;  // queries of this CTA (qpw of logits_kernel)
  const CtaRows cr = cta_rows(p, rows, true);
  fill_row_ranges<kThreads>(p, cr, rows, true, tid, row_lo, row_hi);
  load_q_and_w<RB, N, 1, kThreads>(p, h, cr, tid, q_s, w_s);
  load_page_ids<kThreads>(p, cr.seq, tid, pid_s);
  if (tid == 0) {
    for (int st = 0; st < S; ++st) {
      mbar_init(&full[st], 1);     // the producer's arrive (with the page's bytes as its tx count)
      mbar_init(&empty[st], 128);  // every math thread, after its last read of the stage
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();
  // Every CTA of the grid has started: the top-k launched after this kernel (launch_pdl) may
  // take the SMs this grid leaves; it waits for this grid's end before it reads a logit.
  pdl_launch_dependents();

  const ActiveBlocks ab = active_blocks<kThreads>(p, cr, rows, row_lo, row_hi, tid);
  const int64_t c_lo = ab.c_lo, blo = ab.blo;
  const int64_t nblk = ab.bhi - ab.blo;

  if (tid >= 128) {  // producer warp: one thread issues every page's two copies
    if (tid == 128) {
      const uint64_t pol = l2_evict_first_policy();
      for (int64_t it = 0; it < nblk; ++it) {
        const int stage = static_cast<int>(it % S);
        if (it >= S) mbar_wait_or_trap(&empty[stage], static_cast<uint32_t>((it / S - 1) & 1));
        const int32_t pid = pid_s[blo + it - c_lo];
        const bool ok = pid >= 0 && pid < p.num_pages;
        bad_s[stage] = ok ? 0 : 1;  // released to the math warps by the arrive below
        if (ok) {
          mbar_arrive_expect_tx(&full[stage], static_cast<uint32_t>(L::kKBytes + kBlockKeys * 4));
          const uint8_t* sc_src = p.cache + static_cast<int64_t>(pid) * p.page_bytes + kBlockKeys * RB;
          if (p.evict_first_keys) {
            tma_load_3d_hint(k_s + stage * L::kKBytes, &tmap, 0, 0, pid, &full[stage], pol);
            bulk_load_hint(sc_s + stage * kBlockKeys, sc_src, kBlockKeys * 4, &full[stage], pol);
          } else {
            tma_load_3d(k_s + stage * L::kKBytes, &tmap, 0, 0, pid, &full[stage]);
            bulk_load(sc_s + stage * kBlockKeys, sc_src, kBlockKeys * 4, &full[stage]);
          }
        } else {
          mbar_arrive(&full[stage]);  // nothing to read: the block's logits are NaN
        }
      }
    }
    return;
  }

  const int warp = tid / 32;
  const int lane = tid % 32;
  const int quad = lane & 3;
  const int hb = h / 8;
  const uint32_t q_addr = smem_u32(q_s);
  const int r0 = warp * 16 + (lane >> 2);
  float acc[N / 2];
  for (int64_t it = 0; it < nblk; ++it) {
    const int stage = static_cast<int>(it % S);
    mbar_wait_or_trap(&full[stage], static_cast<uint32_t>((it / S) & 1));
    const uint32_t k_addr = smem_u32(k_s + stage * L::kKBytes);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < RB / 32; ++s) {  // k-steps of 32 bytes
      const uint64_t da = make_desc_swizzled(k_addr + s * 32, RB);
      const uint64_t db = make_desc(q_addr + s * 256, 128, 8 * RB);
      wgmma_step<Elem::kE4m3, N>(acc, da, db, s > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(acc);
    const bool bad_page = bad_s[stage] != 0;
    const float s0 = sc_s[stage * kBlockKeys + r0], s1 = sc_s[stage * kBlockKeys + r0 + 8];
    // Every thread releases the stage itself: one arrival a warp after __syncwarp is also ordered,
    // but compute-sanitizer's racecheck does not see through it (66 reported hazards on an H200).
    mbar_arrive(&empty[stage]);
    store_block_logits<N>(
        acc, [&](int j8) { return *reinterpret_cast<const float2*>(w_s + j8 * 8 + quad * 2); }, hb, 0, p, cr,
        row_lo, row_hi, (blo + it) * kBlockKeys + r0, s0, s1, bad_page, quad);
  }
}

// fp8 paged decode runs on paged_tma_kernel where it applies (next_n * h <= 64, a 16-byte aligned
// cache). INDEXLAB_DECODE=v1 selects logits_kernel, the same bits with cp.async loads, kept for
// differential tests and side-by-side benchmarks. Read at every launch so a test can switch it.
bool use_tma_decode() {
  const char* e = std::getenv("INDEXLAB_DECODE");
  return e == nullptr || std::strcmp(e, "v1") != 0;
}

namespace {
/// cuTensorMapEncodeTiled, fetched from the driver once (the runtime links no driver library).
Status encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, const void* base,
                    const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                    CUtensorMapSwizzle swizzle) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (!encode) return error("cuTensorMapEncodeTiled is not available from the driver");
  const cuuint32_t elem[3] = {1, 1, 1};
  const CUresult r = encode(map, type, rank, const_cast<void*>(base), dims, strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return error("cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(r), ")");
  return Status::Ok();
}
CUtensorMapSwizzle row_swizzle(int d) { return d == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B; }
}  // namespace

Status encode_page_map(const uint8_t* cache, int64_t num_pages, int d, int64_t page_bytes, CUtensorMap* map) {
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(d), 64, static_cast<cuuint64_t>(num_pages)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(d), static_cast<cuuint64_t>(page_bytes)};
  const cuuint32_t box[3] = {static_cast<cuuint32_t>(d), 64, 1};
  return encode_tiled(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, cache, dims, strides, box, row_swizzle(d));
}

Status encode_rows_map(const uint8_t* keys, int64_t nk, int d, CUtensorMap* map) {
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(d), static_cast<cuuint64_t>(nk)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(d)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(d), 64};
  return encode_tiled(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, keys, dims, strides, box, row_swizzle(d));
}

Status encode_vec_map(const float* v, int64_t n, int box_elems, CUtensorMap* map) {
  const cuuint64_t dims[1] = {static_cast<cuuint64_t>(n)};
  const cuuint64_t strides[1] = {4};  // unused at rank 1 (rank - 1 strides)
  const cuuint32_t box[1] = {static_cast<cuuint32_t>(box_elems)};
  return encode_tiled(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 1, v, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE);
}

int num_sms();
int64_t blocks_per_chunk(int64_t n_blocks, int64_t chunks);

// ctas_rows: the grid's x (row groups); launch_paged_tma_cfg picks its chunks (y).
template <class C>
Status launch_paged_tma_cfg(LogitsKernelParams kp, int64_t ctas_rows, cudaStream_t stream) {
  static_assert(C::kTotal <= kMaxSmem, "paged TMA kernel shared memory");
  // The last map this thread encoded is reused while the cache it describes stays the same (a
  // decode loop launches on one cache step after step; encoding costs a driver call).
  struct Cached {
    const uint8_t* cache = nullptr;
    int64_t num_pages = -1, page_bytes = -1;
    int d = -1;
    CUtensorMap map;
  };
  thread_local Cached last;
  if (last.cache != kp.cache || last.num_pages != kp.num_pages || last.page_bytes != kp.page_bytes ||
      last.d != C::kD) {
    last.cache = nullptr;
    INDEXLAB_RETURN_IF_ERROR(encode_page_map(kp.cache, kp.num_pages, C::kD, kp.page_bytes, &last.map));
    last.cache = kp.cache;
    last.num_pages = kp.num_pages;
    last.page_bytes = kp.page_bytes;
    last.d = C::kD;
  }
  const CUtensorMap& map = last.map;
  auto kernel = paged_tma_kernel<C>;
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kTotal));
  // One wave: as many CTAs as the SMs hold at once (floor(slots / rows) chunks a sequence), so no
  // tail wave runs on a few SMs. On an H200, 64 x 64K decode logits took 0.168 ms, against
  // 0.176 with the chunks sized for 16 CTAs an SM and 0.172 / 0.174 at two / three waves. The
  // CTAs an SM are a property of the instantiation (on the one device num_sms() describes), so
  // they are asked for once, not at every decode step.
  struct Occupancy {
    cudaError_t err;
    int per_sm;
  };
  static const Occupancy occ = [] {
    Occupancy o{cudaSuccess, 0};
    o.err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o.per_sm, paged_tma_kernel<C>, C::kThreads, C::kTotal);
    return o;
  }();
  INDEXLAB_CUDA_CHECK(occ.err);
  const int64_t slots = static_cast<int64_t>(max64(occ.per_sm, 1)) * num_sms();
  kp.blocks_per_cta = min64(blocks_per_chunk(kp.n_blocks, slots / ctas_rows), kMaxPagedBlocksPerCta);
  const int64_t chunks = (kp.n_blocks + kp.blocks_per_cta - 1) / kp.blocks_per_cta;
  if (chunks > 65535) return error("max_pages = ", kp.n_blocks, " is too large");
  const dim3 grid(static_cast<unsigned>(ctas_rows), static_cast<unsigned>(chunks));
  // INDEXLAB_DECODE_HINT=0 reads the pages without the evict-first policy (side-by-side runs).
  const char* hint = std::getenv("INDEXLAB_DECODE_HINT");
  kp.evict_first_keys = !(hint != nullptr && std::strcmp(hint, "0") == 0);
  kernel<<<grid, C::kThreads, C::kTotal, stream>>>(kp, map);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

// The rings that ran on an H200 (cuda/NOTES.md, fifth and sixth sessions): at d = 128, N = 64, a
// 4-stage ring (about 45 KB, 5 CTAs an SM) was the fastest of 3, 4, 6, 8 and 10 stages and of two
// math warpgroups on 6 or 8 (64 x 64K decode logits, one wave: 0.168 ms, 3 stages 0.171; sized
// for 16 CTAs an SM: 4 stages 0.176-0.178, 3 0.179-0.181, 6 0.206, 8 0.235); d = 64 and N = 8
// keep the 6-stage ring they were tested with.
template <int D>
Status launch_paged_tma(const LogitsKernelParams& kp, int cols, int64_t ctas_rows, cudaStream_t stream) {
  if (cols <= 8) return launch_paged_tma_cfg<TmaCfg<D, 8, 6>>(kp, ctas_rows, stream);
  if constexpr (D == 128) return launch_paged_tma_cfg<TmaCfg<D, 64, 4>>(kp, ctas_rows, stream);
  return launch_paged_tma_cfg<TmaCfg<D, 64, 6>>(kp, ctas_rows, stream);
}

// Prefill logits run on logits_ws_kernel (the default since it passed the GPU tests and the
// sanitizers on an H200; 1.25-1.35x logits_kernel). INDEXLAB_LOGITS=v1 selects logits_kernel, the
// same bits on another schedule, kept for differential tests and side-by-side benchmarks. Read at
// every launch so a test can switch it.
bool use_ws_prefill() {
  const char* e = std::getenv("INDEXLAB_LOGITS");
  return e == nullptr || std::strcmp(e, "v1") != 0;
}

template <Elem E, int D>
Status launch_prefill_h(const LogitsKernelParams& kp, dim3 grid, cudaStream_t stream) {
  if (use_ws_prefill()) {
    switch (kp.h) {
      case 8: return launch_logits_ws<E, D, 8>(kp, grid, stream);
      case 16: return launch_logits_ws<E, D, 16>(kp, grid, stream);
      case 32: return launch_logits_ws<E, D, 32>(kp, grid, stream);
      case 64: return launch_logits_ws<E, D, 64>(kp, grid, stream);
      default: return launch_logits_ws<E, D, 128>(kp, grid, stream);
    }
  }
  switch (kp.h) {
    case 8: return launch_logits<E, 256, 2, D, 0>(kp, grid, stream);  // HT = 8 would spill
    case 16: return launch_logits<E, 256, 2, D, 16>(kp, grid, stream);
    case 32: return launch_logits<E, 256, 2, D, 32>(kp, grid, stream);
    case 64: return launch_logits<E, 256, 2, D, 64>(kp, grid, stream);
    default: return launch_logits<E, 256, 2, D, 128>(kp, grid, stream);
  }
}

int num_sms() {
  static int n = [] {
    int dev = 0, v = 132;
    if (cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
      return v;
    return 132;
  }();
  return n;
}

// Key blocks per CTA when n_blocks are split into about `chunks` chunks: at least 16 (the Q tile
// and the pipeline's start are paid per CTA), at most all of them.
int64_t blocks_per_chunk(int64_t n_blocks, int64_t chunks) {
  int64_t bpc = (n_blocks + max64(chunks, 1) - 1) / max64(chunks, 1);
  bpc = max64(bpc, 16);
  return min64(bpc, max64(n_blocks, 1));
}

// Key blocks per CTA: enough chunks that about `waves` CTAs per SM exist (few, large ones keep
// the Q tile reuse; many small ones avoid a lone tail wave in decode).
int64_t choose_blocks_per_cta(int64_t ctas_rows, int64_t n_blocks, int64_t waves) {
  const int64_t target = waves * num_sms();
  return blocks_per_chunk(n_blocks, (target + ctas_rows - 1) / ctas_rows);
}

// ---- wgmma probes: one m64n8k32 e4m3 or m64n8k16 bf16 instruction ---------------------------

// a: [64 rows, 32 bytes], b: [8 rows, 32 bytes]: one instruction's K (32 e4m3 codes or 16 bf16,
// little-endian) per row; c, d: [64, 8] fp32 row-major.
template <Elem E>
__global__ void probe_kernel(const uint8_t* a, const uint8_t* b, const float* c, float* d, int scale_d) {
  __shared__ __align__(256) uint8_t a_s[64 * 32];
  __shared__ __align__(256) uint8_t b_s[8 * 32];
  const int tid = threadIdx.x;
  for (int i = tid; i < 64 * 32; i += 128) {
    const int row = i / 32, kb = i % 32;
    a_s[core_offset(row, kb / 16, 32) + kb % 16] = a[i];
  }
  for (int i = tid; i < 8 * 32; i += 128) {
    const int row = i / 32, kb = i % 32;
    b_s[core_offset(row, kb / 16, 32) + kb % 16] = b[i];
  }
  fence_proxy_async();
  __syncthreads();
  const int warp = tid / 32, lane = tid % 32;
  const int r0 = warp * 16 + lane / 4, col = (lane % 4) * 2;
  float acc[4] = {c[r0 * 8 + col], c[r0 * 8 + col + 1], c[(r0 + 8) * 8 + col],
                  c[(r0 + 8) * 8 + col + 1]};
  wgmma_fence();
  const uint64_t da = make_desc(smem_u32(a_s), 128, 256), db = make_desc(smem_u32(b_s), 128, 256);
  if constexpr (E == Elem::kBf16) {
    wgmma_m64n8k16_bf16(acc, da, db, scale_d);
  } else {
    wgmma_m64n8k32_e4m3(acc, da, db, scale_d);
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_acc(acc);
  d[r0 * 8 + col] = acc[0];
  d[r0 * 8 + col + 1] = acc[1];
  d[(r0 + 8) * 8 + col] = acc[2];
  d[(r0 + 8) * 8 + col + 1] = acc[3];
}

// ---- ceiling: back-to-back m64n256k32 e4m3 / m64n256k16 bf16 from shared memory -------------

template <Elem E>
__global__ void __launch_bounds__(256, 1) wgmma_peak_kernel(int iters, float* sink) {
  extern __shared__ __align__(1024) uint8_t smem[];
  const int tid = threadIdx.x;
  // Non-zero, finite codes (never time on zeros).
  if constexpr (E == Elem::kBf16) {
    uint16_t* s16 = reinterpret_cast<uint16_t*>(smem);
    for (int i = tid; i < (64 + 256) * 64; i += 256) {
      uint32_t x = i * 2654435761u + 12345u;
      const uint16_t e = static_cast<uint16_t>(120 + ((x >> 13) % 15));  // 2^-7 .. 2^7
      s16[i] = static_cast<uint16_t>(((x >> 7) & 1) << 15 | e << 7 | ((x >> 20) & 0x7F));
    }
  } else {
    for (int i = tid; i < (64 + 256) * 128; i += 256) {
      uint32_t x = i * 2654435761u + 12345u;
      uint8_t v = static_cast<uint8_t>((x >> 13) & 0x6F) | 0x08;
      smem[i] = v ^ ((x >> 7) & 0x80);
    }
  }
  fence_proxy_async();
  __syncthreads();
  const int wg = tid / 128;
  const uint32_t a = smem_u32(smem + wg * 0);  // both warpgroups read the same A tile
  const uint32_t b = smem_u32(smem + 64 * 128);
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.0f;
  for (int it = 0; it < iters; ++it) {
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; ++s)
      wgmma_step<E, 256>(acc, make_desc(a + s * 256, 128, 1024), make_desc(b + s * 256, 128, 1024), 1);
    wgmma_commit();
    wgmma_wait<0>();
  }
  fence_acc(acc);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 128; ++i) s += acc[i];
  if (s == 1.2345f) sink[tid] = s;  // keep the work observable
}

// ---- launchers shared by both element types --------------------------------------------------

template <Elem E, typename P>
Status launch_mqa_logits_impl(const P& p, const char* what) {
  INDEXLAB_RETURN_IF_ERROR(can_implement(p.h, p.d, 1));
  if (p.nq < 0 || p.nk < 0) return error("nq and nk must be >= 0");
  if (p.ld < p.nk) return error("ld = ", p.ld, " is smaller than nk = ", p.nk);
  // (the prefill kernels index columns with 32-bit integers)
  if (p.nk > INT32_MAX - 2 * kBlockKeys) return error("nk = ", p.nk, " is too large (at most 2^31 - 129)");
  if (p.nq == 0 || p.nk == 0) return Status::Ok();
  if (!p.q || !p.k || !p.k_scale || !p.w || !p.ks || !p.ke || !p.logits)
    return error(what, ": a device pointer is null");
  // Query and key rows are copied in 16-byte pieces (cp.async, TMA).
  if (reinterpret_cast<uintptr_t>(p.q) % 16 != 0) return error(what, ": q must be 16-byte aligned");
  if (reinterpret_cast<uintptr_t>(p.k) % 16 != 0) return error(what, ": k must be 16-byte aligned");
  LogitsKernelParams kp{};
  kp.q = reinterpret_cast<const uint8_t*>(p.q);
  kp.w = p.w;
  kp.logits = p.logits;
  kp.ld = p.ld;
  kp.nq = p.nq;
  kp.ncols = p.nk;
  kp.n_blocks = (p.nk + kBlockKeys - 1) / kBlockKeys;
  kp.h = p.h;
  kp.paged = false;
  kp.k = reinterpret_cast<const uint8_t*>(p.k);
  kp.k_scale = p.k_scale;
  kp.ks = p.ks;
  kp.ke = p.ke;
  kp.nk = p.nk;
  kp.skip_fill = !p.clean_logits;
  const int rows = 2 * 256 / p.h;
  const int64_t tiles = (p.nq + rows - 1) / rows;
  if (tiles > INT32_MAX) return error("nq = ", p.nq, " is too large");
  kp.blocks_per_cta = choose_blocks_per_cta(tiles, kp.n_blocks, 4);
  const int64_t chunks = (kp.n_blocks + kp.blocks_per_cta - 1) / kp.blocks_per_cta;
  if (chunks > 65535) return error("nk = ", p.nk, " is too large");
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  cudaStream_t st = static_cast<cudaStream_t>(p.stream);
  return p.d == 64 ? launch_prefill_h<E, 64>(kp, grid, st) : launch_prefill_h<E, 128>(kp, grid, st);
}

template <Elem E, typename P>
Status launch_paged_logits_impl(const P& p, const char* what) {
  INDEXLAB_RETURN_IF_ERROR(can_implement(p.h, p.d, 1));
  if (p.next_n < 1) return error("next_n = ", p.next_n, " must be >= 1");
  if (p.batch < 0 || p.max_pages < 0 || p.num_pages < 0) return error("negative paged sizes");
  if (p.ld < p.max_pages * kBlockKeys)
    return error("ld = ", p.ld, " is smaller than max_pages * 64 = ", p.max_pages * kBlockKeys);
  if (p.batch == 0 || p.max_pages == 0) return Status::Ok();
  if (!p.q || !p.w || !p.cache || !p.block_table || !p.context_lens || !p.logits)
    return error(what, ": a device pointer is null");
  LogitsKernelParams kp{};
  kp.q = reinterpret_cast<const uint8_t*>(p.q);
  kp.w = p.w;
  kp.logits = p.logits;
  kp.ld = p.ld;
  kp.nq = p.batch * p.next_n;
  kp.ncols = p.max_pages * kBlockKeys;
  kp.n_blocks = p.max_pages;
  kp.h = p.h;
  kp.paged = true;
  kp.cache = p.cache;
  kp.block_table = p.block_table;
  kp.context_lens = p.context_lens;
  kp.max_pages = p.max_pages;
  kp.num_pages = p.num_pages;
  kp.page_bytes = static_cast<int64_t>(kBlockKeys) * (static_cast<int64_t>(p.d) * kElemBytes<E> + 4);
  kp.next_n = p.next_n;
  const int cols = p.next_n * p.h;
  int n, nwg;
  if (cols <= 64) {
    n = 64, nwg = 1;
  } else if (cols <= 128) {
    n = 128, nwg = 1;
  } else if (cols <= 256) {
    n = 256, nwg = 1;
  } else {
    n = 256, nwg = 2;
  }
  const int rows = nwg * n / p.h;
  kp.groups_per_seq = (p.next_n + rows - 1) / rows;
  const int64_t ctas_rows = p.batch * kp.groups_per_seq;
  if (ctas_rows > INT32_MAX) return error("batch = ", p.batch, " is too large");
  cudaStream_t st = static_cast<cudaStream_t>(p.stream);
  if constexpr (E == Elem::kE4m3) {  // the TMA kernel sizes its own chunks
    if (n == 64 && use_tma_decode() && kp.num_pages > 0 && reinterpret_cast<uintptr_t>(p.cache) % 16 == 0)
      return p.d == 64 ? launch_paged_tma<64>(kp, cols, ctas_rows, st)
                       : launch_paged_tma<128>(kp, cols, ctas_rows, st);
  }
  kp.blocks_per_cta = std::min<int64_t>(choose_blocks_per_cta(ctas_rows, kp.n_blocks, 16),
                                        kMaxPagedBlocksPerCta);
  const int64_t chunks = (kp.n_blocks + kp.blocks_per_cta - 1) / kp.blocks_per_cta;
  if (chunks > 65535) return error("max_pages = ", p.max_pages, " is too large");
  const dim3 grid(static_cast<unsigned>(ctas_rows), static_cast<unsigned>(chunks));
  if (n == 64) return launch_logits_d<E, 64, 1>(kp, p.d, grid, st);
  if (n == 128) return launch_logits_d<E, 128, 1>(kp, p.d, grid, st);
  if (nwg == 1) return launch_logits_d<E, 256, 1>(kp, p.d, grid, st);
  return launch_logits_d<E, 256, 2>(kp, p.d, grid, st);
}

}  // namespace detail

using namespace detail;

Status launch_mqa_logits_fp8(const LogitsParams& p) {
  return launch_mqa_logits_impl<Elem::kE4m3>(p, "LogitsParams");
}

Status launch_paged_logits_fp8(const PagedLogitsParams& p) {
  return launch_paged_logits_impl<Elem::kE4m3>(p, "PagedLogitsParams");
}

Status launch_mqa_logits_bf16(const LogitsBf16Params& p) {
  return launch_mqa_logits_impl<Elem::kBf16>(p, "LogitsBf16Params");
}

Status launch_paged_logits_bf16(const PagedLogitsBf16Params& p) {
  return launch_paged_logits_impl<Elem::kBf16>(p, "PagedLogitsBf16Params");
}

namespace detail {
// One probe instruction on host data (bytes: a [64 * 32], b [8 * 32]); bf16 picks m64n8k16 bf16.
Status run_probe_elem(bool bf16, const uint8_t* a, const uint8_t* b, const float* c, float* d,
                      int scale_d) {
  uint8_t *da = nullptr, *db = nullptr;
  float *dc = nullptr, *dd = nullptr;
  Status st;
  auto body = [&]() -> Status {
    INDEXLAB_CUDA_CHECK(cudaMalloc(&da, 64 * 32));
    INDEXLAB_CUDA_CHECK(cudaMalloc(&db, 8 * 32));
    INDEXLAB_CUDA_CHECK(cudaMalloc(&dc, 64 * 8 * 4));
    INDEXLAB_CUDA_CHECK(cudaMalloc(&dd, 64 * 8 * 4));
    INDEXLAB_CUDA_CHECK(cudaMemcpy(da, a, 64 * 32, cudaMemcpyHostToDevice));
    INDEXLAB_CUDA_CHECK(cudaMemcpy(db, b, 8 * 32, cudaMemcpyHostToDevice));
    INDEXLAB_CUDA_CHECK(cudaMemcpy(dc, c, 64 * 8 * 4, cudaMemcpyHostToDevice));
    INDEXLAB_CUDA_CHECK(cudaMemset(dd, 0xFF, 64 * 8 * 4));
    if (bf16) {
      probe_kernel<Elem::kBf16><<<1, 128>>>(da, db, dc, dd, scale_d);
    } else {
      probe_kernel<Elem::kE4m3><<<1, 128>>>(da, db, dc, dd, scale_d);
    }
    INDEXLAB_CUDA_CHECK(cudaGetLastError());
    INDEXLAB_CUDA_CHECK(cudaMemcpy(d, dd, 64 * 8 * 4, cudaMemcpyDeviceToHost));
    return Status::Ok();
  };
  st = body();
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  cudaFree(dd);
  return st;
}

Status run_probe(const uint8_t* a, const uint8_t* b, const float* c, float* d, int scale_d) {
  return run_probe_elem(false, a, b, c, d, scale_d);
}

Status launch_wgmma_peak_elem(bool bf16, int iters, float* sink, int ctas, cudaStream_t stream) {
  const int smem = (64 + 256) * 128;
  if (bf16) {
    INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(wgmma_peak_kernel<Elem::kBf16>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    wgmma_peak_kernel<Elem::kBf16><<<ctas, 256, smem, stream>>>(iters, sink);
  } else {
    INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(wgmma_peak_kernel<Elem::kE4m3>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    wgmma_peak_kernel<Elem::kE4m3><<<ctas, 256, smem, stream>>>(iters, sink);
  }
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

Status launch_wgmma_peak(int iters, float* sink, int ctas, cudaStream_t stream) {
  return launch_wgmma_peak_elem(false, iters, sink, ctas, stream);
}
}  // namespace detail

}  // namespace indexlab::cuda
