/// Deterministic radix top-k over rows of fp32 logits: canonical order, -1 padding, NaN never chosen.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda/api.h"
#include "cuda/sm90_common.cuh"
#include "cuda/sm90_tma.cuh"

namespace indexlab::cuda {
namespace detail {
int num_sms();  // sm90_logits.cu

constexpr int kTopkThreads = 1024;

// float_key of a float that takes part in the selection (not NaN, not -inf): no test for those.
__device__ __forceinline__ uint32_t selectable_key(float x) {
  uint32_t u = __float_as_uint(x);
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// Order-preserving key of a float: larger float -> larger key. NaN and -inf map to 0 (never
// selected); -0 is folded onto +0 so equal scores tie and fall back to the index order.
__device__ __forceinline__ uint32_t float_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return f != f || u == 0xFF800000u ? 0u : selectable_key(f);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  const uint32_t u = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
  return __uint_as_float(u);
}
// The smallest shift sh with (range >> sh) < 2^bits (digits of a key range over 2^bits bins).
__device__ __forceinline__ int range_shift(uint64_t range, int bits) {
  return (range >> bits) == 0 ? 0 : (64 - __clzll(static_cast<long long>(range))) - bits;
}

// The selection works on a unique 64-bit composite per column: key << 32 | ~index, so that ties
// on the score resolve to the lower index. A radix select (8 bits a pass, re-reading the row from
// global memory, so no candidate buffer can overflow) finds the prefix P of the K-th largest
// composite; exactly K columns have (composite & M) >= P and are gathered, then sorted.
/// Block-wide bitonic sort of buf[0, n) in descending order (n a power of two); every thread of
/// the block calls it, nthreads of them stride over the pairs.
__device__ void bitonic_sort_desc(uint64_t* buf, int n, int tid, int nthreads) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < n / 2; i += nthreads) {
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
}

// Writes winner t of a row: composite c -> index (relative, absolute, or paged absolute) and score.
__device__ __forceinline__ void write_one(const TopkParams& p, int64_t row, int64_t lo, int32_t* out_i,
                                          float* out_s, int t, uint64_t c) {
  const int64_t rel = 0xFFFFFFFFu - static_cast<uint32_t>(c & 0xFFFFFFFFu);
  int32_t idx;
  if (!p.absolute) {
    idx = static_cast<int32_t>(rel);
  } else if (!p.block_table) {
    idx = static_cast<int32_t>(lo + rel);
  } else {
    const int64_t j = lo + rel;
    const int64_t seq = row / p.next_n;
    idx = p.block_table[seq * p.max_pages + j / 64] * 64 + static_cast<int32_t>(j % 64);
  }
  out_i[t] = idx;
  if (out_s) out_s[t] = key_float(static_cast<uint32_t>(c >> 32));
}

// Row r's column range [lo, hi): ks / ke (0 / cols when absent) clamped to [0, cols].
__device__ __forceinline__ void row_range(const TopkParams& p, int64_t r, int64_t* lo, int64_t* hi) {
  int64_t l = p.ks ? p.ks[r] : 0, h = p.ke ? p.ke[r] : p.cols;
  l = max64(0, min64(l, p.cols));
  *lo = l;
  *hi = max64(l, min64(h, p.cols));
}

__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const TopkParams p, int kpow2) {
  extern __shared__ __align__(16) uint64_t buf[];  // [kpow2]
  __shared__ uint32_t hist[256];
  __shared__ uint32_t s_count;
  __shared__ uint64_t s_prefix, s_mask;
  __shared__ uint32_t s_needed;
  __shared__ int s_done;

  const int tid = threadIdx.x;
  const int64_t row = blockIdx.x;
  int64_t lo, hi;
  row_range(p, row, &lo, &hi);
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
  bitonic_sort_desc(buf, kpow2, tid, kTopkThreads);
  const uint32_t total = min(s_count, static_cast<uint32_t>(k));
  int32_t* out_i = p.index + row * k;
  float* out_s = p.score ? p.score + row * k : nullptr;
  for (int t = tid; t < k; t += kTopkThreads) {
    if (static_cast<uint32_t>(t) < total) {
      write_one(p, row, lo, out_i, out_s, t, buf[t]);
    } else {
      out_i[t] = -1;
      if (out_s) out_s[t] = -INFINITY;
    }
  }
}


// Block-wide (NT threads): thread t looks at row b0 + t G (when below rows); the rows of length
// in (nmin, nmax] are listed in s_list by their t, ascending; *cnt gets how many. Returns the
// thread's own row range. The kernels that stride over rows (G CTAs or clusters) take their rows
// NT at a time this way, so a row of another length class costs one load of ks / ke.
struct RowRange {
  int64_t lo, hi;
};
template <int NT>
__device__ __forceinline__ RowRange list_rows(const TopkParams& p, int64_t b0, int64_t G, int64_t nmin, int64_t nmax,
                                              uint32_t* s_wc, uint32_t* s_list, uint32_t* cnt) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t r = b0 + static_cast<int64_t>(tid) * G;
  RowRange rr{0, 0};
  bool mine = false;
  if (r < p.rows) {
    row_range(p, r, &rr.lo, &rr.hi);
    mine = rr.hi - rr.lo > nmin && rr.hi - rr.lo <= nmax;
  }
  const uint32_t m = __ballot_sync(0xffffffffu, mine);
  if (lane == 0) s_wc[warp] = static_cast<uint32_t>(__popc(m));
  __syncthreads();
  uint32_t before = 0, total = 0;
#pragma unroll
  for (int w = 0; w < NT / 32; ++w) {
    before += w < warp ? s_wc[w] : 0u;
    total += s_wc[w];
  }
  if (mine) s_list[before + static_cast<uint32_t>(__popc(m & ((1u << lane) - 1u)))] = static_cast<uint32_t>(tid);
  __syncthreads();
  *cnt = total;
  return rr;
}

// Calls row_fn(row, lo, hi, first) for each row of this unit (a CTA, or a cluster: unit u of G
// takes rows u, u + G, ...) whose length lies in (nmin, nmax], in ascending order; first: the
// unit's first row. With G = rows every thread reads its one row's range itself; otherwise the
// rows are listed NT at a time (list_rows) and each range handed over through s_rlo / s_rhi
// behind a barrier. row_fn must run the same barriers in every thread, at least one of them
// after it starts (the next row's hand-over may then overwrite s_rlo / s_rhi).
template <int NT, class RowFn>
__device__ __forceinline__ void for_rows(const TopkParams& p, int64_t unit, int64_t G, int64_t nmin, int64_t nmax,
                                         uint32_t* s_wc, uint32_t* s_list, int64_t* s_rlo, int64_t* s_rhi,
                                         RowFn&& row_fn) {
  const bool one = G == p.rows;
  bool first = true;
  for (int64_t b0 = unit; b0 < p.rows; b0 += G * NT) {
    uint32_t cnt = 0;
    RowRange rr{0, 0};
    if (one) {
      row_range(p, unit, &rr.lo, &rr.hi);
      cnt = rr.hi - rr.lo > nmin && rr.hi - rr.lo <= nmax ? 1u : 0u;
    } else {
      rr = list_rows<NT>(p, b0, G, nmin, nmax, s_wc, s_list, &cnt);
    }
    for (uint32_t j = 0; j < cnt; ++j) {
      int64_t row = unit, lo = rr.lo, hi = rr.hi;
      if (!one) {
        const uint32_t t = s_list[j];
        if (threadIdx.x == t) {
          *s_rlo = rr.lo;
          *s_rhi = rr.hi;
        }
        __syncthreads();
        row = b0 + static_cast<int64_t>(t) * G;
        lo = *s_rlo;
        hi = *s_rhi;
      }
      row_fn(row, lo, hi, first);
      first = false;
    }
  }
}

// ---- Cluster top-k (default path): two CTAs per row ------------------------------------------
// Pass 0 reads the row once (16-byte loads, each CTA of the cluster one half) and builds a
// histogram of the top 12 bits of the composite in each CTA; the two histograms are summed
// through distributed shared memory (every CTA sums the same numbers, so every CTA finds the same
// threshold). Pass 0 also keeps, in a per-CTA spec buffer, every column whose first digit reaches
// an estimate taken from a sample (see the loop below). When the candidates at or above the
// threshold digit fit the leader's buffer (kCand), they are gathered into the leader's shared
// memory from the spec buffers (or, when the estimate missed or a spec buffer overflowed, by one
// more read of the row, mostly from L2); otherwise further 12-bit passes (over the spec buffers,
// or re-reading the row: the overflow path, nothing is ever dropped) run until they fit or the
// threshold is exact. The leader finishes the radix select on its buffer, then sorts the K
// winners by bucketing on the key range and ranking inside each bucket (bitonic sort when a
// bucket is large, e.g. many equal scores). Composites are unique, so the output is the same set
// and order on every run whatever order the atomics took.
constexpr int kClusterCtas = 2;
constexpr int kCT = 1024;       // threads per CTA
constexpr int kBinBits = 12;
constexpr int kBins = 1 << kBinBits;  // 12-bit digits
constexpr int kCand = 12288;    // leader's candidate buffer, in composites (>= kMaxTopK)
constexpr uint32_t kMaxBucket = 128;
constexpr int kSpec = 8192;     // per-CTA buffer of the first pass's speculative candidates
constexpr size_t kClusterSmemMax = size_t{2} * kBins * 4 + size_t{kCand + (kSpec > kMaxTopK ? kSpec : kMaxTopK)} * 8;
static_assert(kCand >= kMaxTopK, "the candidate buffer doubles as sort scratch");
static_assert(kCT == 32 * 32 && kBins == 4 * kCT, "helpers assume 32 warps, 4 bins per thread");

struct ClusterState {
  uint64_t prefix, mask;  // digits fixed so far; the group is (c & mask) == prefix
  uint32_t need;          // how many of the group still to take
  uint32_t bin, above, inbin, total;
  uint32_t cnt_ge;        // columns with (c & mask) >= prefix
  uint32_t count, count2; // leader: gathered candidates, compacted winners
  uint32_t kmin, kmax, maxb;
  uint32_t spec_b, spec_count;  // first-digit estimate of this CTA, columns kept in its spec buffer
  int done;
};

__device__ __forceinline__ int digit_shift(int pi) { return pi < 5 ? 52 - 12 * pi : 0; }
__device__ __forceinline__ uint32_t digit_mask(int pi) { return pi < 5 ? 0xFFFu : 0xFu; }
__device__ __forceinline__ uint64_t compose(uint32_t key, int64_t i) {
  return (static_cast<uint64_t>(key) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
}

// Block-wide: thread t holds bins [4t, 4t+4) in local[]. Finds the bin holding the need-th largest
// (counting from the top bin down): st->bin/above/inbin (when need <= total) and st->total.
__device__ __forceinline__ void block_threshold(const uint32_t (&local)[4], uint32_t need,
                                                uint32_t* s_warp, ClusterState* st) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const uint32_t sum = local[0] + local[1] + local[2] + local[3];
  uint32_t incl = sum;  // suffix over lanes >= lane
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t v = __shfl_down_sync(0xffffffffu, incl, o);
    if (lane + o < 32) incl += v;
  }
  if (lane == 0) s_warp[warp] = incl;
  __syncthreads();
  const uint32_t w = s_warp[lane];
  uint32_t wincl = w;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t v = __shfl_down_sync(0xffffffffu, wincl, o);
    if (lane + o < 32) wincl += v;
  }
  const uint32_t after = __shfl_sync(0xffffffffu, wincl - w, warp);  // warps above this one
  const uint32_t total = __shfl_sync(0xffffffffu, wincl, 0);
  incl += after;
  const uint32_t above = incl - sum;
  if (tid == 0) st->total = total;
  if (above < need && need <= incl) {
    uint32_t a = above;
#pragma unroll
    for (int j = 3; j >= 0; --j) {
      if (a + local[j] >= need) {
        st->bin = static_cast<uint32_t>(4 * tid + j);
        st->above = a;
        st->inbin = local[j];
        break;
      }
      a += local[j];
    }
  }
  __syncthreads();
}

// Thread 0, after block_threshold: fixes digit pi of the threshold.
__device__ __forceinline__ void advance_threshold(ClusterState* st, int pi, uint32_t k) {
  const uint32_t rest = st->need - st->above;
  st->prefix |= static_cast<uint64_t>(st->bin) << digit_shift(pi);
  st->mask |= static_cast<uint64_t>(digit_mask(pi)) << digit_shift(pi);
  st->cnt_ge = (k - st->need) + st->above + st->inbin;
  st->need = rest;
  st->done = st->inbin == rest;
}

// Block-wide exclusive prefix sum (ascending thread order) of one value per thread.
__device__ __forceinline__ uint32_t block_excl_scan(uint32_t v, uint32_t* s_warp) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (lane == 31) s_warp[warp] = incl;
  __syncthreads();
  const uint32_t w = s_warp[lane];
  uint32_t wincl = w;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t t = __shfl_up_sync(0xffffffffu, wincl, o);
    if (lane >= o) wincl += t;
  }
  const uint32_t before = __shfl_sync(0xffffffffu, wincl - w, warp);
  __syncthreads();
  return before + incl - v;
}

// Walks blocks [qb, qe) of 4 floats (aligned space: element i of the row sits at position
// i + mis from base, base 16-byte aligned). Every thread of the block makes the same number of
// calls f(v, i) (so f may use warp collectives); v is NaN for positions outside the row or the
// share, and f must ignore those (float_key gives 0).
template <int U>
__device__ __forceinline__ void load_blocks(const float* base, int mis, int64_t n, int64_t q0, int64_t qe,
                                            float4 (&v)[U]) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t q = q0 + u * kCT + tid;
    v[u] = make_float4(NAN, NAN, NAN, NAN);
    if (q < qe) {
      const int64_t p0 = 4 * q;
      if (p0 >= mis && p0 + 4 <= mis + n) {
        v[u] = __ldg(reinterpret_cast<const float4*>(base + p0));
      } else {
        float t[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t pos = p0 + e;
          t[e] = (pos >= mis && pos < mis + n) ? base[pos] : NAN;
        }
        v[u] = make_float4(t[0], t[1], t[2], t[3]);
      }
    }
  }
}

// Walks blocks [qb, qe) of 4 floats (aligned space: element i of the row sits at position
// i + mis from base, base 16-byte aligned). Every thread of the block makes the same number of
// calls f(v, i) (so f may use warp collectives); v is NaN for positions outside the row or the
// share, and f must ignore those (float_key gives 0). U 16-byte loads per thread per step; with
// Pf the next step's loads are issued before this step's elements are processed.
template <int U, bool Pf, class F>
__device__ __forceinline__ void scan_share(const float* base, int mis, int64_t n, int64_t qb, int64_t qe,
                                           F&& f) {
  const int tid = threadIdx.x;
  constexpr int64_t kStep = static_cast<int64_t>(kCT) * U;
  float4 v[U];
  if (Pf && qb < qe) load_blocks<U>(base, mis, n, qb, qe, v);
  for (int64_t q0 = qb; q0 < qe; q0 += kStep) {
    float4 w[U];
    if (Pf) {
      if (q0 + kStep < qe) load_blocks<U>(base, mis, n, q0 + kStep, qe, w);
    } else {
      load_blocks<U>(base, mis, n, q0, qe, v);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t i0 = 4 * (q0 + u * kCT + tid) - mis;
      f(v[u].x, i0);
      f(v[u].y, i0 + 1);
      f(v[u].z, i0 + 2);
      f(v[u].w, i0 + 3);
    }
    if (Pf) {
#pragma unroll
      for (int u = 0; u < U; ++u) v[u] = w[u];
    }
  }
}


template <int U, bool Pf, bool Loop>
__global__ void __cluster_dims__(kClusterCtas, 1, 1) __launch_bounds__(kCT, 1)
    topk_cluster_kernel(const TopkParams p, int kpow2, bool spec, int nskip) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  extern __shared__ __align__(16) uint64_t smem[];
  uint32_t* hist = reinterpret_cast<uint32_t*>(smem);  // [2][kBins]
  uint64_t* cand = smem + kBins;                        // [kCand] (leader)
  uint64_t* sbuf = cand + kCand;                        // [max(kSpec, kpow2)]
  __shared__ ClusterState st;
  __shared__ uint32_t s_warp[32];

  __shared__ uint32_t s_wc[32], s_list[kCT];
  __shared__ int64_t s_rlo, s_rhi;  // the row's range, from the thread that listed it

  const int tid = threadIdx.x, lane = tid & 31;
  const unsigned rank = cluster.block_rank();
  // One row, both CTAs of the cluster.
  auto do_row = [&](const int64_t row, const int64_t lo, const int64_t hi, bool) {
    const int64_t n = hi - lo;
    const float* x = p.logits + row * p.ld + lo;
    const uint32_t k = static_cast<uint32_t>(p.k);
    const int mis = static_cast<int>((reinterpret_cast<uintptr_t>(x) >> 2) & 3);
    const float* base = x - mis;
    const int64_t nblk = (n + mis + 3) >> 2;
    const int64_t per = (nblk + kClusterCtas - 1) / kClusterCtas;
    const int64_t qb = min64(nblk, static_cast<int64_t>(rank) * per), qe = min64(nblk, qb + per);

    if (tid == 0) {
      st.prefix = 0;
      st.mask = 0;
      st.need = k;
      st.cnt_ge = 0;
      st.count = 0;
      st.count2 = 0;
      st.kmin = 0xFFFFFFFFu;
      st.kmax = 0;
      st.maxb = 0;
      st.spec_b = 0;
      st.spec_count = 0;
      st.done = 0;
    }
    // Phase 1, whole cluster: radix passes over the row until the candidates fit the buffer.
    // With spec, the first pass also keeps in this CTA's spec buffer every column whose first digit
    // reaches an estimate taken from a sample (the share's first 4096 columns); when every CTA's
    // estimate is at or below the real threshold digit and no spec buffer overflowed, later passes
    // and the gather read the spec buffers instead of the row (spec_ok; otherwise the row again).
    uint64_t* specbuf = sbuf;  // [kSpec] per CTA until the gather; the leader's sbuf afterwards
    bool spec_ok = false;
    // f(c, valid) over the columns of this CTA: the row (scan_share) or, when spec_ok, its spec buffer.
    auto over_cols = [&](auto&& g) {
      if (spec_ok) {
        const uint32_t cnt = st.spec_count;
        for (uint32_t b0 = tid - lane; b0 < cnt; b0 += kCT) {
          const uint32_t i = b0 + lane;
          const uint64_t c = i < cnt ? specbuf[i] : 0;
          g(c, i < cnt);
        }
      } else {
        scan_share<U, Pf>(base, mis, n, qb, qe, [&](float v, int64_t i) {
          const uint32_t key = float_key(v);
          g(compose(key, i), key != 0u);
        });
      }
    };
    // Warp-aggregated append of c (where take) to buf[*count] (buf may be a peer's).
    auto push = [&](uint64_t c, bool take, uint64_t* buf, uint32_t* count, uint32_t cap) {
      const unsigned bal = __ballot_sync(0xffffffffu, take);
      if (bal) {
        const int first = __ffs(bal) - 1;
        uint32_t pos0 = 0;
        if (lane == first) pos0 = atomicAdd(count, static_cast<uint32_t>(__popc(bal)));
        pos0 = __shfl_sync(0xffffffffu, pos0, first);
        const uint32_t pos = pos0 + __popc(bal & ((1u << lane) - 1u));
        if (take && pos < cap) buf[pos] = c;
      }
    };
    bool spec_on = spec;
    int pi = 0;
    for (int it = 0;; ++pi, ++it) {
      uint32_t* h = hist + (it & 1) * kBins;  // double-buffered: a peer may still read the other
      const bool sample = pi == 0 && spec_on;
      for (int b = tid; b < kBins; b += kCT) h[b] = 0;
      if (sample)
        for (int b = tid; b < kBins; b += kCT) hist[kBins + b] = 0;
      __syncthreads();
      const uint64_t prefix = st.prefix, mask = st.mask;
      const int sh = digit_shift(pi);
      const uint32_t dm = digit_mask(pi);
      if (!sample) {
        over_cols([&](uint64_t c, bool valid) {
          if (valid && (c & mask) == prefix) atomicAdd(&h[static_cast<uint32_t>(c >> sh) & dm], 1u);
        });
      } else {
        // Sample: one 16-byte block per thread, counted in the pass histogram and in hs.
        uint32_t* hs = hist + kBins;  // pass 1's buffer, unused until then
        const int64_t qs = min64(qe, qb + kCT);
        scan_share<1, false>(base, mis, n, qb, qs, [&](float v, int64_t) {
          const uint32_t key = float_key(v);
          if (key == 0u) return;
          atomicAdd(&h[key >> 20], 1u);
          atomicAdd(&hs[key >> 20], 1u);
        });
        __syncthreads();
        // Estimate: the highest digit with at least 2K/C * (sample / share) sample columns above.
        const int64_t spos = 4 * (qs - qb), cpos = 4 * (qe - qb);
        const uint32_t want = cpos > 0 ? static_cast<uint32_t>(max64(1, (2 * static_cast<int64_t>(k) * spos +
                                                                           kClusterCtas * cpos - 1) /
                                                                              (kClusterCtas * cpos)))
                                       : 1u;
        uint32_t local[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) local[j] = hs[4 * tid + j];
        block_threshold(local, want, s_warp, &st);
        if (tid == 0) st.spec_b = st.total >= want ? st.bin : 0u;
        __syncthreads();
        const uint32_t sb = st.spec_b;
        scan_share<1, false>(base, mis, n, qb, qs, [&](float v, int64_t i) {
          const uint32_t key = float_key(v);
          push(compose(key, i), key != 0u && (key >> 20) >= sb, specbuf, &st.spec_count, kSpec);
        });
        // The rest of the share: digits >= sb are counted in their bins (and kept); the others
        // only in bin 0, sparing the shared-memory atomics on the crowded low bins. The merged
        // histogram is then exact at and above the largest sb of the cluster; a threshold below
        // that redoes the first pass with full counts.
        // Most columns are below the estimate, so the common case is a key, one compare and a
        // register count; the few high columns append themselves with one shared atomic each (no
        // warp vote per column; the buffer's order does not matter, the sort below is by composite).
        uint32_t below = 0;
        const uint32_t kb = max(sb << 20, 1u);
        scan_share<U, Pf>(base, mis, n, qs, qe, [&](float v, int64_t i) {
          const uint32_t key = float_key(v);
          if (key >= kb) {
            atomicAdd(&h[key >> 20], 1u);
            const uint32_t pos = atomicAdd(&st.spec_count, 1u);
            if (pos < static_cast<uint32_t>(kSpec)) specbuf[pos] = compose(key, i);
          } else {
            below += key != 0u ? 1u : 0u;
          }
        });
        below = __reduce_add_sync(0xffffffffu, below);
        if (lane == 0 && below) atomicAdd(&h[0], below);
      }
      cluster.sync();
      uint32_t local[4] = {0u, 0u, 0u, 0u};
#pragma unroll
      for (int r = 0; r < kClusterCtas; ++r) {
        const uint4 t = *reinterpret_cast<const uint4*>(cluster.map_shared_rank(h, r) + 4 * tid);
        local[0] += t.x;
        local[1] += t.y;
        local[2] += t.z;
        local[3] += t.w;
      }
      uint32_t max_sb = 0;  // spec_b and spec_count of every CTA are final since cluster.sync
      if (sample) {
#pragma unroll
        for (int r = 0; r < kClusterCtas; ++r) max_sb = max(max_sb, cluster.map_shared_rank(&st, r)->spec_b);
      }
      block_threshold(local, st.need, s_warp, &st);
      const bool all = pi == 0 && st.total <= k;  // (the total is exact even with lumped counts)
      const bool redo = sample && !all && st.bin < max_sb;
      if (tid == 0) {
        if (all) {  // at most K valid columns: take them all
          st.done = 1;
          st.cnt_ge = st.total;
        } else if (!redo) {
          advance_threshold(&st, pi, k);
        }
      }
      __syncthreads();
      if (sample) {
        if (redo) {  // the threshold digit fell below an estimate: count the row again, in full
          spec_on = false;
          pi = -1;
          continue;
        }
        // Every CTA reaches the same verdict from the same numbers.
        const uint32_t need_b = st.mask == 0 ? 0u : static_cast<uint32_t>(st.prefix >> 52);
        bool ok = true;
#pragma unroll
        for (int r = 0; r < kClusterCtas; ++r) {
          const ClusterState* ps = cluster.map_shared_rank(&st, r);
          ok = ok && ps->spec_count <= static_cast<uint32_t>(kSpec) && ps->spec_b <= need_b;
        }
        spec_ok = ok;
      }
      if (st.done || st.cnt_ge <= static_cast<uint32_t>(kCand) || pi >= 5) break;
    }
    const bool exact = st.done != 0;
    {
      // Gather every column with (c & mask) >= prefix into the leader's buffer (cnt_ge of them).
      const uint64_t prefix = st.prefix, mask = st.mask;
      uint64_t* rcand = cluster.map_shared_rank(cand, 0);
      uint32_t* rcount = cluster.map_shared_rank(&st.count, 0);
      over_cols([&](uint64_t c, bool valid) { push(c, valid && (c & mask) >= prefix, rcand, rcount, kCand); });
    }
    cluster.sync();  // the leader's buffer is complete; nobody touches a peer's memory after this
    if (rank != 0) return;

    // Phase 2, leader: finish the radix select on the buffer.
    const uint32_t m = min(st.count, static_cast<uint32_t>(kCand));
    while (!st.done && pi < 5) {
      ++pi;
      uint32_t* h = hist;
      for (int b = tid; b < kBins; b += kCT) h[b] = 0;
      __syncthreads();
      const uint64_t prefix = st.prefix, mask = st.mask;
      const int sh = digit_shift(pi);
      const uint32_t dm = digit_mask(pi);
      for (uint32_t i = tid; i < m; i += kCT) {
        const uint64_t c = cand[i];
        if ((c & mask) == prefix) atomicAdd(&h[static_cast<uint32_t>(c >> sh) & dm], 1u);
      }
      __syncthreads();
      uint32_t local[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) local[j] = h[4 * tid + j];
      block_threshold(local, st.need, s_warp, &st);
      if (tid == 0) advance_threshold(&st, pi, k);
      __syncthreads();
    }
    uint64_t* A = cand;
    uint64_t* B = sbuf;
    uint32_t tot = m;
    if (!exact) {
      // Compact exactly K winners into sbuf (warp-uniform loop for the aggregated atomic).
      const uint64_t prefix = st.prefix, mask = st.mask;
      for (uint32_t b0 = tid - lane; b0 < m; b0 += kCT) {
        const uint32_t i = b0 + lane;
        const uint64_t c = i < m ? cand[i] : 0;
        const bool take = i < m && (c & mask) >= prefix;
        const unsigned b = __ballot_sync(0xffffffffu, take);
        if (b) {
          const int first = __ffs(b) - 1;
          uint32_t pos0 = 0;
          if (lane == first) pos0 = atomicAdd(&st.count2, static_cast<uint32_t>(__popc(b)));
          pos0 = __shfl_sync(0xffffffffu, pos0, first);
          const uint32_t pos = pos0 + __popc(b & ((1u << lane) - 1u));
          if (take && pos < static_cast<uint32_t>(kpow2)) sbuf[pos] = c;
        }
      }
      __syncthreads();
      A = sbuf;
      B = cand;
      tot = min(st.count2, k);
    }
    tot = min(tot, k);
    int32_t* out_i = p.index + row * p.k;
    float* out_s = p.score ? p.score + row * p.k : nullptr;
    for (uint32_t t = tot + tid; t < k; t += kCT) {  // padding
      out_i[t] = -1;
      if (out_s) out_s[t] = -INFINITY;
    }
    if (tot == 0) return;

    // Sort the tot winners in A (descending composite) and write them.
    uint32_t* cnt = hist;           // per bucket: count, then insertion cursor
    uint32_t* start = hist + kBins; // per bucket: first output slot
    {
      uint32_t kmn = 0xFFFFFFFFu, kmx = 0u;
      for (uint32_t i = tid; i < tot; i += kCT) {
        const uint32_t key = static_cast<uint32_t>(A[i] >> 32);
        kmn = min(kmn, key);
        kmx = max(kmx, key);
      }
      kmn = __reduce_min_sync(0xffffffffu, kmn);
      kmx = __reduce_max_sync(0xffffffffu, kmx);
      if (lane == 0) {
        atomicMin(&st.kmin, kmn);
        atomicMax(&st.kmax, kmx);
      }
      for (int b = tid; b < kBins; b += kCT) cnt[b] = 0;
    }
    __syncthreads();
    const uint32_t kmin = st.kmin;
    const uint32_t range = st.kmax - kmin;
    const int bs = range_shift(range, kBinBits);
    auto bucket = [&](uint64_t c) {
      return static_cast<uint32_t>(kBins - 1) - ((static_cast<uint32_t>(c >> 32) - kmin) >> bs);
    };
    for (uint32_t i = tid; i < tot; i += kCT) atomicAdd(&cnt[bucket(A[i])], 1u);
    __syncthreads();
    {
      uint32_t c4[4], sum = 0, mx = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        c4[j] = cnt[4 * tid + j];
        sum += c4[j];
        mx = max(mx, c4[j]);
      }
      uint32_t s = block_excl_scan(sum, s_warp);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        start[4 * tid + j] = s;
        cnt[4 * tid + j] = s;  // becomes the insertion cursor
        s += c4[j];
      }
      mx = __reduce_max_sync(0xffffffffu, mx);
      if (lane == 0) atomicMax(&st.maxb, mx);
    }
    __syncthreads();
    if (st.maxb <= kMaxBucket) {
      for (uint32_t i = tid; i < tot; i += kCT) {
        const uint64_t c = A[i];
        B[atomicAdd(&cnt[bucket(c)], 1u)] = c;
      }
      __syncthreads();
      for (uint32_t i = tid; i < tot; i += kCT) {
        const uint64_t c = B[i];
        const uint32_t b = bucket(c);
        const uint32_t s = start[b], e = b + 1 < static_cast<uint32_t>(kBins) ? start[b + 1] : tot;
        uint32_t r = 0;
#pragma unroll 1  // buckets hold ~0.5 winners: the unrolled form's remainder code cost more
        for (uint32_t j = s; j < e; ++j) r += B[j] > c;
        write_one(p, row, lo, out_i, out_s, static_cast<int>(s + r), c);
      }
    } else {
      // Large buckets (many equal or close scores): bitonic sort of kpow2 slots, descending.
      for (int i = tid; i < kpow2; i += kCT) B[i] = static_cast<uint32_t>(i) < tot ? A[i] : 0;
      __syncthreads();
      bitonic_sort_desc(B, kpow2, tid, kCT);
      for (uint32_t t = tid; t < tot; t += kCT) write_one(p, row, lo, out_i, out_s, static_cast<int>(t), B[t]);
    }
  };  // do_row

  // Rows: cluster c takes rows c, c + G, ... (G clusters; G = rows gives one row a cluster) and
  // does those longer than nskip columns (shorter ones belong to the short-row kernel's
  // launches, launch_topk). Both CTAs read the same ks / ke and so list the same rows. No cluster
  // barrier between rows: after a row's gather neither CTA touches the other's shared memory, and
  // the next row's first access to it follows that row's first cluster barrier, which the leader
  // reaches only once it has sorted and written this row. So the peer reads its share of the next
  // row while the leader sorts.
  // Loop = false: one row a cluster, straight (the loop's state cost MISA's 1024 x 64K rows 13%
  // in spills at 64 registers: 0.351 against 0.311 ms on an H200).
  pdl_wait();  // launched with launch_pdl: the logits kernel before it may still be finishing
  if constexpr (Loop) {
    for_rows<kCT>(p, blockIdx.x / kClusterCtas, gridDim.x / kClusterCtas, nskip, INT64_MAX, s_wc, s_list, &s_rlo,
                  &s_rhi, do_row);
  } else {
    const int64_t row = blockIdx.x / kClusterCtas;
    int64_t lo, hi;
    row_range(p, row, &lo, &hi);
    if (hi - lo > nskip) do_row(row, lo, hi, true);
  }
}


// ---- Short rows (up to 49152 columns): one CTA a row, the row's keys in shared memory ---------
// Several rows an SM (256 threads and ~53 KB a row at 8192 columns, K = 2048: 4 CTAs an SM on an
// H200); rows over 16384 columns on 1024 threads, one CTA an SM (launch_topk's length classes).
// The phases are described at topk_short_kernel.
constexpr int64_t kSmallMaxCols = 16384;
constexpr int kNBBits = 10;               // histogram bins a pass: 1024
constexpr int kNB = 1 << kNBBits;
constexpr uint32_t kGroupCap = kNB / 2;   // composites the histogram's space holds
constexpr uint32_t kShortMaxBucket = 32;  // a larger sort bucket: bitonic sort instead
// Buckets of the winners' sort: the winners' power of two, within [kNB, 4 kNB] (twice as many
// measured the same on an H200, cuda/NOTES.md, fourteenth session).
__host__ __device__ constexpr int short_sort_bins(int kpow2) {
  return kpow2 < kNB ? kNB : (kpow2 > 4 * kNB ? 4 * kNB : kpow2);
}
// The sort's bucket b lives at word b + b / 32 of its array: a thread's run of nsb / ST buckets
// then starts in a bank of its own (without the skew, 256 threads' runs of 16 fell on two banks,
// and the scan's reads and writes were 16-way bank conflicts).
__host__ __device__ constexpr int sort_slot(int b) { return b + (b >> 5); }
// Words of the key region: the row (ncap + the 4 slots around it), later the sorted winners
// (2 kpow2 words) and the sort's buckets; a multiple of 4.
__host__ __device__ constexpr int64_t short_key_words(int64_t ncap, int kpow2) {
  const int sort_words = 2 * kpow2 + sort_slot(short_sort_bins(kpow2));
  return ((ncap + 4 > sort_words ? ncap + 4 : sort_words) + 3) & ~int64_t{3};
}

// Block-wide (ST threads) exclusive prefix sum in ascending thread order; *total gets the sum.
template <int ST>
__device__ __forceinline__ uint32_t short_excl_scan(uint32_t v, uint32_t* s_warp, uint32_t* total) {
  constexpr int SW = ST / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (lane == 31) s_warp[warp] = incl;
  __syncthreads();
  uint32_t before = 0, tot = 0;
  if constexpr (SW > 8) {
    // The warps' totals, scanned across the lanes of every warp (lane w holds warp w's): one
    // shared load and a shuffle scan instead of every thread adding up all SW totals (at 8
    // warps the loop below was faster: 16384 x 8192 0.603 against 0.617 ms on an H200).
    const uint32_t x = lane < SW ? s_warp[lane] : 0u;
    uint32_t xs = x;
#pragma unroll
    for (int o = 1; o < SW; o <<= 1) {
      const uint32_t t = __shfl_up_sync(0xffffffffu, xs, o);
      if (lane >= o) xs += t;
    }
    before = __shfl_sync(0xffffffffu, xs - x, warp);
    tot = __shfl_sync(0xffffffffu, xs, SW - 1);
  } else {
#pragma unroll
    for (int w = 0; w < SW; ++w) {
      const uint32_t x = s_warp[w];
      before += w < warp ? x : 0u;
      tot += x;
    }
  }
  __syncthreads();
  *total = tot;
  return before + incl - v;
}

// The short-row kernel. Phases (one CTA a row, ST threads):
//  1. Load: one bulk copy (cp.async.bulk, the TMA engine) brings the row's 16-byte aligned body
//     into shared memory; the threads load the at most 3 + 3 columns before and after it. The row
//     stays as floats: the linear passes below read 16-byte quads (the slots around the row in
//     its first and last quad hold -inf) and take a float's key only when they keep it; the rare
//     refinement and tie passes take keys column by column. One pass reduces count, min and max.
//  2. Select: a first pass bins the values linearly over [min, max] (floor((x - min) * 1024 /
//     (max - min)): monotone in x, so every bin is a contiguous key range). That spreads scores
//     of any range evenly, where a digit of the key's top bits piles them onto a few bins and the
//     shared atomics serialize.
//     Fast path, when the bin holding the K-th largest has at most kGroupCap keys: one pass
//     appends the keys of the higher bins to the winners and gathers the bin's own keys; each of
//     those is ranked among them by composite (key, then lower index), and the top `need` join
//     the winners. Otherwise the bin (or, for rows whose range is not finite, the whole row) is
//     refined by range-adaptive key digits ((key - lo) >> sh over 1024 bins) down to one key T.
//  3. Collect (not on the fast path): keys above T, or at and above T when T's whole group is
//     taken, one shared atomic a warp and chunk; ties at T in ascending index order (a warp owns
//     a contiguous index range and ranks its ties in 32-column chunks; one block scan gives the
//     warps' bases).
//  4. Sort: bucket the winners by value (square-root spaced above the lowest winner), count,
//     scan, scatter, rank within the bucket; a bucket over kShortMaxBucket sends the row to a
//     bitonic sort. Write.
// Same output as the other kernels, bit for bit. On an H200, 16384 rows x 8192, K = 2048: 0.842
// ms, against 2.19 ms for the previous form (2048 key-digit bins from the first pass, a
// 256-thread load loop, one atomic a winner, a bitonic sort of every row's winners) in the same
// run (cuda/NOTES.md, eighth session).
__device__ __forceinline__ uint32_t lin_binf(float x, float xmin, float scale) {
  const float t = (x - xmin) * scale;
  return min(__float2uint_rz(t), static_cast<uint32_t>(kNB - 1));
}
// The same bin from a key (key_float(float_key(x)) is x, with -0 as +0: the same bin).
__device__ __forceinline__ uint32_t lin_bin(uint32_t key, float xmin, float scale) {
  return lin_binf(key_float(key), xmin, scale);
}
// A float that takes part in the selection (not NaN, not -inf: float_key(x) != 0).
__device__ __forceinline__ bool selectable(float x) { return x > -INFINITY; }
// The fast path's raw winner: a selectable float's bits << 32 | ~column (nc = ~column).
__device__ __forceinline__ uint64_t raw_entry(float x, uint32_t nc) {
  return static_cast<uint64_t>(__float_as_uint(x)) << 32 | nc;
}
// A raw entry as the composite compose(float_key(x), column) (the same ~column word).
__device__ __forceinline__ uint64_t raw_to_composite(uint64_t r) {
  return static_cast<uint64_t>(selectable_key(__uint_as_float(static_cast<uint32_t>(r >> 32)))) << 32 |
         static_cast<uint32_t>(r);
}

// At most 64 registers (1024 threads an SM): without the minimum, ptxas gave the 256-thread
// looping instance 48 registers and spills.
template <int ST, bool Loop>
__global__ void __launch_bounds__(ST, 1024 / ST) topk_short_kernel(const TopkParams p, int kpow2, int ncap, int nmin) {
  constexpr int SW = ST / 32;   // warps
  constexpr int NBT = kNB / ST;  // histogram bins a thread
  static_assert(NBT >= 1 && kNB % ST == 0, "kNB must be a multiple of the thread count");
  static_assert(SW <= 32, "short_excl_scan scans the warps' totals across one warp's lanes");
  extern __shared__ __align__(16) uint64_t smem[];
  uint64_t* win = smem;                                                    // [max(kpow2, 2)]
  uint32_t* keys_base = reinterpret_cast<uint32_t*>(smem + max(kpow2, 2));  // 16-byte aligned
  // [kNB], 8-byte aligned (the group buffer reuses it); the key region holds short_key_words
  // (the sorted winners and the sort's buckets reuse it).
  uint32_t* hist = keys_base + short_key_words(ncap, kpow2);
  __shared__ uint32_t s_warp[SW], s_min[SW], s_max[SW], s_wc[SW];
  __shared__ int64_t s_rlo, s_rhi;  // the row's range, from the thread that listed it
  __shared__ uint32_t s_bin, s_above, s_inbin, s_count, s_gmin, s_gmax, s_maxb, s_pack;
  __shared__ uint32_t s_list[ST];
  __shared__ __align__(8) uint64_t bar;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const uint32_t k = static_cast<uint32_t>(p.k);
  if (tid == 0) {
    mbar_init(&bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  uint32_t phase = 0;  // of bar: flips at every bulk load

  // One row: the four phases above.
  auto do_row = [&](const int64_t row, const int64_t lo, const int64_t hi, bool first) {
    // After a previous row, the bulk copy below (async proxy) overwrites shared memory these
    // threads wrote: each fences before the barrier that precedes it.
    if (!first) fence_proxy_async();
    if (tid == 0) {
      s_count = 0;
      s_pack = 0;
      s_gmin = 0xFFFFFFFFu;
      s_gmax = 0u;
      s_maxb = 0u;
    }
    __syncthreads();
    const int n = static_cast<int>(min64(hi - lo, ncap));
    const float* x = p.logits + row * p.ld + lo;

    // 1. Load: columns [0, head) and [head + body, n) by the threads, [head, head + body) by one
    // bulk copy to keys + head, which is 16-byte aligned.
    // The row stays as floats (the passes below read 16-byte quads of keys_base: column i is
    // element i + off; the at most 3 + 3 slots around the row in its first and last quad hold
    // -inf, which no pass selects). A key is float_key of its float (key_at).
    const int head = min(n, static_cast<int>(((16u - (reinterpret_cast<uintptr_t>(x) & 15u)) & 15u) >> 2));
    const int body = (n - head) & ~3;
    const int off = (4 - head) & 3;
    const int nq4 = (n + off + 3) >> 2;  // quads of keys_base the row touches
    uint32_t* keys = keys_base + off;
    const float4* kq = reinterpret_cast<const float4*>(keys_base);
    auto key_at = [&](int i) { return float_key(__uint_as_float(keys[i])); };
    auto each_value = [&](auto&& f) {  // every slot of the row's quads, this thread's share
      for (int q = tid; q < nq4; q += ST) {
        const float4 v = kq[q];
        f(v.x);
        f(v.y);
        f(v.z);
        f(v.w);
      }
    };
    if (tid == 0 && body > 0) {
      mbar_arrive_expect_tx(&bar, static_cast<uint32_t>(body) * 4u);
      bulk_load(keys + head, x + head, static_cast<uint32_t>(body) * 4u, &bar);
    }
    if (tid < head) keys[tid] = __float_as_uint(x[tid]);
    if (tid < n - head - body) keys[head + body + tid] = __float_as_uint(x[head + body + tid]);
    if (tid < off) keys_base[tid] = 0xFF800000u;
    if (tid < 4 * nq4 - n - off) keys_base[n + off + tid] = 0xFF800000u;
    if (body > 0) {
      mbar_wait(&bar, phase);
      phase ^= 1u;
    }
    __syncthreads();
    uint32_t valid = 0, kmin = 0xFFFFFFFFu, kmax = 0u;
    {
      float fmn = INFINITY, fmx = -INFINITY;
      each_value([&](float v) {
        if (selectable(v)) {
          ++valid;
          fmn = fminf(fmn, v);
          fmx = fmaxf(fmx, v);
        }
      });
      if (valid > 0) {  // float_key is monotone
        kmin = float_key(fmn);
        kmax = float_key(fmx);
      }
    }
    valid = __reduce_add_sync(0xffffffffu, valid);
    kmin = __reduce_min_sync(0xffffffffu, kmin);
    kmax = __reduce_max_sync(0xffffffffu, kmax);
    if (lane == 0) {
      s_warp[warp] = valid;
      s_min[warp] = kmin;
      s_max[warp] = kmax;
    }
    __syncthreads();
    uint32_t total = 0;
    if constexpr (SW > 8) {  // every warp reduces the SW warps' figures across its lanes
      total = __reduce_add_sync(0xffffffffu, lane < SW ? s_warp[lane] : 0u);
      kmin = __reduce_min_sync(0xffffffffu, lane < SW ? s_min[lane] : 0xFFFFFFFFu);
      kmax = __reduce_max_sync(0xffffffffu, lane < SW ? s_max[lane] : 0u);
    } else {
      kmin = 0xFFFFFFFFu;
      kmax = 0u;
#pragma unroll
      for (int w = 0; w < SW; ++w) {
        total += s_warp[w];
        kmin = min(kmin, s_min[w]);
        kmax = max(kmax, s_max[w]);
      }
    }
    __syncthreads();

    // The bin of the last histogram holding the need-th largest, counting from the top bin down:
    // sets s_bin, s_above (keys in higher bins), s_inbin.
    auto find_bin = [&](uint32_t need) {
      uint32_t c[NBT], sum = 0;
#pragma unroll
      for (int j = 0; j < NBT; ++j) {
        c[j] = hist[NBT * tid + j];
        sum += c[j];
      }
      uint32_t tot_bins = 0;
      const uint32_t excl = short_excl_scan<ST>(sum, s_warp, &tot_bins);
      uint32_t a = tot_bins - excl - sum;  // keys in the bins of higher threads
      if (a < need && need <= a + sum) {
#pragma unroll
        for (int j = NBT - 1; j >= 0; --j) {
          if (a + c[j] >= need) {
            s_bin = static_cast<uint32_t>(NBT * tid + j);
            s_above = a;
            s_inbin = c[j];
            break;
          }
          a += c[j];
        }
      }
      __syncthreads();
    };

    // 2. Selection rule: every valid key (total <= K), or every key >= thr (ties_all), or every key
    // > thr plus the `need` lowest-index keys equal to thr.
    // grouped: the linear pass's bin at the K-th largest held at most kGroupCap keys, and the
    // winners are already collected (the fast path; the rest of phases 2 and 3 is skipped).
    uint32_t thr = 1u, need = 0u, tot = 0u;
    bool ties_all = true, grouped = false;
    const uint32_t lt = (1u << lane) - 1u;
    if (total > k) {
      need = k;
      // The group holding the K-th largest is the keys in [g, gend); digit (key - g) >> sh.
      uint32_t g = kmin;
      uint64_t gend = static_cast<uint64_t>(kmax) + 1;
      bool done = false;
      const float xmin = key_float(kmin);
      const float range = key_float(kmax) - xmin;
      const float scale = static_cast<float>(kNB) / range;
      if (range > 0.0f && isfinite(range) && isfinite(scale)) {
        for (int b = tid; b < kNB; b += ST) hist[b] = 0;
        __syncthreads();
        each_value([&](float v) {
          if (selectable(v)) atomicAdd(&hist[lin_binf(v, xmin, scale)], 1u);
        });
        __syncthreads();
        find_bin(need);
        const uint32_t bin = s_bin, above = s_above, inbin = s_inbin;
        need -= above;
        if (inbin <= kGroupCap) {
          // Fast path: one pass appends the columns of the higher bins to the winners (exactly
          // `above` of them) and the bin's own columns to a group buffer in the histogram's
          // space; each group member's rank among them (composites are unique, so the rank is
          // its place in the canonical order) says whether it is one of the `need`.
          // Both buffers hold raw entries (the float's bits << 32 | ~index, raw_entry), made
          // composites by raw_to_composite where they are used densely (the group's rank loop,
          // the sort's first pass): an instruction in this pass runs for every lane's four
          // columns, taken or not. A warp step covers 32 quads; the takes of element j are
          // placed by their ballot (one shared atomic a step for the warp's takes); group members,
          // rare, by a shared atomic each.
          uint64_t* grp = reinterpret_cast<uint64_t*>(hist);
          for (int q = warp * 32 + lane; q - lane < nq4; q += ST) {
            const float4 v = q < nq4 ? kq[q] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
            const float e[4] = {v.x, v.y, v.z, v.w};
            uint32_t mt[4], ntake = 0;
            bool tk[4], anyg = false;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              // -inf, NaN and the padding give bin 0 (lin_binf), never above the bin
              const uint32_t lb = lin_binf(e[j], xmin, scale);
              tk[j] = lb > bin;
              anyg |= selectable(e[j]) && lb == bin;
              mt[j] = __ballot_sync(0xffffffffu, tk[j]);
              ntake += static_cast<uint32_t>(__popc(mt[j]));
            }
            const uint32_t i0 = 0xFFFFFFFFu - static_cast<uint32_t>(4 * q - off);  // ~column of element 0
            if (ntake != 0u) {  // warp-uniform
              uint32_t at = 0;
              if (lane == 0) at = atomicAdd(&s_count, ntake);
              at = __shfl_sync(0xffffffffu, at, 0);
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                if (tk[j]) win[at + static_cast<uint32_t>(__popc(mt[j] & lt))] = raw_entry(e[j], i0 - j);
                at += static_cast<uint32_t>(__popc(mt[j]));
              }
            }
            if (anyg) {
#pragma unroll
              for (int j = 0; j < 4; ++j)
                if (selectable(e[j]) && lin_binf(e[j], xmin, scale) == bin)
                  grp[atomicAdd(&s_pack, 1u)] = raw_entry(e[j], i0 - j);
            }
          }
          __syncthreads();
          for (uint32_t i = tid; i < inbin; i += ST) {
            const uint64_t c = raw_to_composite(grp[i]);
            uint32_t r = 0;
#pragma unroll 1
            for (uint32_t j = 0; j < inbin; ++j) r += raw_to_composite(grp[j]) > c ? 1u : 0u;
            if (r < need) {
              win[above + r] = grp[i];
              atomicMin(&s_gmin, static_cast<uint32_t>(c >> 32));
            }
          }
          tot = above + need;
          grouped = true;
          done = true;
          __syncthreads();  // the histogram's space is free again
          thr = s_gmin;     // the lowest winner's key: the sort's buckets start there
        }
      }
      if (!done && range > 0.0f && isfinite(range) && isfinite(scale)) {
        const uint32_t bin = s_bin;
        const bool whole = s_inbin == need;
        // The bin's key range.
        uint32_t gmn = 0xFFFFFFFFu, gmx = 0u;
        for (int i = tid; i < n; i += ST) {
          const uint32_t key = key_at(i);
          if (key != 0u && lin_bin(key, xmin, scale) == bin) {
            gmn = min(gmn, key);
            gmx = max(gmx, key);
          }
        }
        gmn = __reduce_min_sync(0xffffffffu, gmn);
        gmx = __reduce_max_sync(0xffffffffu, gmx);
        if (lane == 0) {
          atomicMin(&s_gmin, gmn);
          atomicMax(&s_gmax, gmx);
        }
        __syncthreads();
        g = s_gmin;
        gend = static_cast<uint64_t>(s_gmax) + 1;
        if (whole || s_gmin == s_gmax) {  // the whole bin is taken, or the bin is one key
          thr = g;
          ties_all = whole;
          done = true;
        }
      }
      if (!done) {
        int sh = range_shift(gend - 1 - g, kNBBits);
        for (;;) {
          for (int b = tid; b < kNB; b += ST) hist[b] = 0;
          __syncthreads();
          for (int i = tid; i < n; i += ST) {
            const uint32_t key = key_at(i);
            if (key != 0u && key >= g && key < gend) atomicAdd(&hist[(key - g) >> sh], 1u);
          }
          __syncthreads();
          find_bin(need);
          const uint32_t bin = s_bin, above = s_above, inbin = s_inbin;
          __syncthreads();
          need -= above;
          g += bin << sh;
          // (the last bin can reach past the group: keys there belong to higher linear bins)
          gend = min(gend, static_cast<uint64_t>(g) + (uint64_t{1} << sh));
          if (inbin == need) {  // the whole bin is taken: every key >= its lower end
            thr = g;
            ties_all = true;
            break;
          }
          if (sh == 0) {  // the bin is one key
            thr = g;
            ties_all = false;
            break;
          }
          sh = sh >= kNBBits ? sh - kNBBits : 0;
        }
      }
    }
    // 3. Collect: keys above thr (and at thr when ties_all), one shared atomic a warp and chunk.
    for (int base = warp * 32; base < n && !grouped; base += ST) {
      const int i = base + lane;
      const uint32_t key = i < n ? key_at(i) : 0u;
      const bool take = key != 0u && (key > thr || (ties_all && key == thr));
      const uint32_t m = __ballot_sync(0xffffffffu, take);
      if (m == 0u) continue;
      uint32_t pos = 0;
      if (lane == 0) pos = atomicAdd(&s_count, static_cast<uint32_t>(__popc(m)));
      pos = __shfl_sync(0xffffffffu, pos, 0) + static_cast<uint32_t>(__popc(m & lt));
      if (take) win[pos] = compose(key, i);
    }
    __syncthreads();
    if (!grouped) tot = min(s_count, k);
    if (!grouped && !ties_all) {
      // Warp w owns indices [w * span, (w + 1) * span) and walks them in 32-column chunks.
      const int span = (((n + SW - 1) / SW) + 31) & ~31;
      const int i0 = min(n, warp * span), i1 = min(n, i0 + span);
      uint32_t mine = 0;
      for (int i = i0 + lane; i - lane < i1; i += 32)
        mine += static_cast<uint32_t>(__popc(__ballot_sync(0xffffffffu, i < i1 && key_at(i) == thr)));
      uint32_t all_ties = 0;
      // short_excl_scan over threads: only lane 0 of each warp contributes the warp's count.
      uint32_t rank = short_excl_scan<ST>(lane == 0 ? mine : 0u, s_warp, &all_ties);
      rank = __shfl_sync(0xffffffffu, rank, 0);
      const uint32_t base = tot;
      for (int i = i0 + lane; i - lane < i1 && rank < need; i += 32) {
        const bool tie = i < i1 && key_at(i) == thr;
        const uint32_t m = __ballot_sync(0xffffffffu, tie);
        const uint32_t r = rank + static_cast<uint32_t>(__popc(m & lt));
        if (tie && r < need) win[base + r] = compose(thr, i);
        rank += static_cast<uint32_t>(__popc(m));
      }
      tot = min(base + min(need, all_ties), k);
    }
    int32_t* out_i = p.index + row * p.k;
    float* out_s = p.score ? p.score + row * p.k : nullptr;
    for (int t = static_cast<int>(tot) + tid; t < p.k; t += ST) {  // padding
      out_i[t] = -1;
      if (out_s) out_s[t] = -INFINITY;
    }
    if (tot == 0) return;
    // The tie pass above reads the row, which the sort's buckets below overwrite.
    if (!grouped && !ties_all) __syncthreads();
    // 4. Sort the winners: bucket them by value (bucket 0 the largest), count, scan, scatter into
    // the dead key buffer, and rank each within its bucket by comparing composites. The buckets
    // (short_sort_bins of them) are spaced by the square root of the winner's place in [lowest
    // winner, max], floor(sqrt((x - lo) / (max - lo)) * buckets), or by key digits where that
    // range is not finite. The square root spreads the winners next to the threshold, where a
    // selected tail is densest (for the top 2048 of 16384 normal scores, 1024 linear buckets hold
    // ~15 winners there by the tail's density, and each winner's rank loop walks its whole
    // bucket; uniform scores, densest at the top, keep ~2 a bucket). Both maps are monotone in
    // the key, so every bucket is a contiguous key range. A bucket over kShortMaxBucket (heavy
    // ties, a few distinct values) sends the row to a bitonic sort instead. The composites are
    // unique, so both give one order.
    uint64_t* sorted = reinterpret_cast<uint64_t*>(keys_base);
    uint32_t* sh = keys_base + 2 * kpow2;  // bucket b at sh[sort_slot(b)]: counts, then starts, then ends
    const int nsb = short_sort_bins(kpow2);
    const int nsb_bits = 31 - __clz(nsb);
    const uint32_t klo = total > k ? thr : kmin;
    const float flo = key_float(klo);
    const float frange = key_float(kmax) - flo;
    const float finv = 1.0f / frange;
    const float fnsb = static_cast<float>(nsb);
    const bool lin = frange > 0.0f && isfinite(frange) && isfinite(finv);
    const int bs = range_shift(kmax - klo, nsb_bits);
    auto bucket = [&](uint64_t c) {
      const uint32_t key = static_cast<uint32_t>(c >> 32);
      uint32_t b;
      if (lin) {
        const float t = __fsqrt_rn((key_float(key) - flo) * finv) * fnsb;
        b = min(__float2uint_rz(t), static_cast<uint32_t>(nsb - 1));
      } else {
        b = (key - klo) >> bs;
      }
      return static_cast<uint32_t>(nsb - 1) - b;
    };
    for (int b = tid; b < sort_slot(nsb); b += ST) sh[b] = 0;
    __syncthreads();
    for (uint32_t i = tid; i < tot; i += ST) {
      uint64_t c = win[i];
      if (grouped) {  // the fast path's raw entries become composites here
        c = raw_to_composite(c);
        win[i] = c;
      }
      atomicAdd(&sh[sort_slot(bucket(c))], 1u);
    }
    __syncthreads();
    {
      // Thread t owns buckets [t * nbt, (t + 1) * nbt).
      const int nbt = nsb / ST;
      uint32_t sum = 0, mx = 0;
#pragma unroll 4
      for (int j = 0; j < nbt; ++j) {
        const uint32_t c = sh[sort_slot(nbt * tid + j)];
        sum += c;
        mx = max(mx, c);
      }
      uint32_t all = 0;
      uint32_t st = short_excl_scan<ST>(sum, s_warp, &all);
#pragma unroll 4
      for (int j = 0; j < nbt; ++j) {  // becomes the bucket's insertion cursor, then its end
        const uint32_t c = sh[sort_slot(nbt * tid + j)];
        sh[sort_slot(nbt * tid + j)] = st;
        st += c;
      }
      mx = __reduce_max_sync(0xffffffffu, mx);
      if (lane == 0) atomicMax(&s_maxb, mx);
    }
    __syncthreads();
    if (s_maxb <= kShortMaxBucket) {
      for (uint32_t i = tid; i < tot; i += ST) {
        const uint64_t c = win[i];
        sorted[atomicAdd(&sh[sort_slot(bucket(c))], 1u)] = c;
      }
      __syncthreads();
      for (uint32_t i = tid; i < tot; i += ST) {
        const uint64_t c = sorted[i];
        const uint32_t b = bucket(c);
        const uint32_t s0 = b > 0 ? sh[sort_slot(b - 1)] : 0u, e = sh[sort_slot(b)];
        uint32_t r = 0;
#pragma unroll 1  // buckets hold ~2 winners: the unrolled form's remainder code cost more
        for (uint32_t j = s0; j < e; ++j) r += sorted[j] > c ? 1u : 0u;
        write_one(p, row, lo, out_i, out_s, static_cast<int>(s0 + r), c);
      }
    } else {
      for (int t = static_cast<int>(tot) + tid; t < kpow2; t += ST) win[t] = 0;
      __syncthreads();
      bitonic_sort_desc(win, kpow2, tid, ST);
      for (uint32_t t = tid; t < tot; t += ST) write_one(p, row, lo, out_i, out_s, static_cast<int>(t), win[t]);
    }
  };  // do_row

  // Rows: with Loop, this CTA takes rows blockIdx.x, blockIdx.x + G, ... (G = gridDim.x, one
  // wave) and does those whose length (ke - ks, clamped to [0, cols]) lies in (nmin, ncap]: the
  // launcher sends each length class to its own instance (cuda/NOTES.md, ninth session).
  // Without, one row a CTA, every row in the class.
  pdl_wait();  // launched with launch_pdl
  if constexpr (Loop) {
    for_rows<ST>(p, blockIdx.x, gridDim.x, nmin, ncap, s_wc, s_list, &s_rlo, &s_rhi, do_row);
  } else {  // one row a CTA (every row is in the class)
    int64_t lo, hi;
    row_range(p, blockIdx.x, &lo, &hi);
    do_row(blockIdx.x, lo, hi, true);
  }
}

}  // namespace detail

namespace {
template <int U, bool Pf, bool Loop>
Status launch_cluster(const TopkParams& p, int kpow2, bool spec, int nskip, size_t smem, unsigned grid,
                      cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(
      detail::topk_cluster_kernel<U, Pf, Loop>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(detail::kClusterSmemMax));
  INDEXLAB_CUDA_CHECK(attr);
  return detail::launch_pdl(detail::topk_cluster_kernel<U, Pf, Loop>, dim3(grid), dim3(detail::kCT), smem, stream,
                            p, kpow2, spec, nskip);
}

// The short-row kernel's dynamic shared memory: winners [max(kpow2, 2)] u64, keys
// [short_key_words] u32 (later the sorted winners and the sort's buckets), histogram [kNB] u32.
size_t short_smem(int kpow2, int64_t ncap) {
  return static_cast<size_t>(std::max(kpow2, 2)) * 8 +
         static_cast<size_t>(detail::short_key_words(ncap, kpow2)) * 4 +
         static_cast<size_t>(detail::kNB) * 4;
}
// Dynamic shared memory the short-row instances may ask for: 227 KB less room for the static
// part (at most ~5 KB, the row list of 1024 threads).
constexpr size_t kShortDynMax = 227 * 1024 - 6 * 1024;

// An occupancy figure of one kernel instance, asked once per shared-memory size (the callers
// keep a thread_local cache each) through query(&n).
template <class Query>
cudaError_t cached_occupancy(std::vector<std::pair<size_t, int>>* cache, size_t smem, Query&& query, int* n) {
  for (const auto& e : *cache)
    if (e.first == smem) {
      *n = e.second;
      return cudaSuccess;
    }
  const cudaError_t err = query(n);
  if (err == cudaSuccess) cache->emplace_back(smem, *n);
  return err;
}

// Launches topk_short_kernel<ST, Loop> for the rows of length in (nmin, ncap]: without Loop one
// CTA a row (every row is in the class), with Loop a grid of one wave that strides over the rows
// (a row of another class costs a load of ks / ke).
template <int ST, bool Loop>
Status launch_short_as(const TopkParams& p, int kpow2, int64_t nmin, int64_t ncap, cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(
      detail::topk_short_kernel<ST, Loop>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kShortDynMax));
  INDEXLAB_CUDA_CHECK(attr);
  const size_t smem = short_smem(kpow2, ncap);
  unsigned grid = static_cast<unsigned>(p.rows);
  if (Loop) {
    thread_local std::vector<std::pair<size_t, int>> occ;
    int per_sm = 0;
    INDEXLAB_CUDA_CHECK(cached_occupancy(&occ, smem, [&](int* n) {
      return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, detail::topk_short_kernel<ST, Loop>, ST, smem);
    }, &per_sm));
    if (per_sm < 1) return error("top-k: the short-row kernel does not fit an SM (", smem, " bytes)");
    grid = static_cast<unsigned>(std::min<int64_t>(p.rows, static_cast<int64_t>(per_sm) * detail::num_sms()));
  }
  return detail::launch_pdl(detail::topk_short_kernel<ST, Loop>, dim3(grid), dim3(ST), smem, stream, p, kpow2,
                            static_cast<int>(std::max<int64_t>(ncap, 1)), static_cast<int>(nmin));
}

template <int ST>
Status launch_short(const TopkParams& p, int kpow2, int64_t nmin, int64_t ncap, bool persistent,
                    cudaStream_t stream) {
  return persistent ? launch_short_as<ST, true>(p, kpow2, nmin, ncap, stream)
                    : launch_short_as<ST, false>(p, kpow2, nmin, ncap, stream);
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}
}  // namespace

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
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  // INDEXLAB_TOPK=legacy selects the one-CTA radix kernel, INDEXLAB_TOPK=cluster the cluster
  // kernel for every row and INDEXLAB_TOPK=short the short-row kernel for every row it can hold
  // (tests compare the paths). By default rows go to the short-row kernel when there are many.
  const char* path = std::getenv("INDEXLAB_TOPK");
  const bool legacy = (path && std::strcmp(path, "legacy") == 0) ||
                      p.rows > INT32_MAX / detail::kClusterCtas;
  // Few rows (at most two an SM, e.g. HISA's 64 decode rows of 8192 candidates) take the cluster
  // kernel even when short: one 256-thread CTA per row left most SMs idle and waited on its own
  // latencies (H200, HISA decode's 64 x 8192, K = 2048: 0.041 ms, 0.037 with 1024-thread CTAs,
  // against 0.021 ms for the cluster kernel).
  const bool want_short =
      (path && std::strcmp(path, "short") == 0) || (!path && p.rows > 2 * static_cast<int64_t>(detail::num_sms()));
  // Rows of at most `covered` columns are done by the short-row launches; the cluster kernel
  // skips them.
  int64_t covered = -1;
  if (!legacy && want_short) {
    // Length classes, each with its own instance and shared memory (a row's keys stay in shared
    // memory): (0, 8192] 256 threads, ~4 CTAs an SM; (8192, 16384] 256 threads, 2 an SM;
    // (16384, mid] 1024 threads, one an SM, mid = 49152 columns at K <= 2048 (less for larger
    // K; 512 threads were slower: 2048 x 32768 0.563 against 0.485 ms on an H200). Tests and
    // benchmarks lower the last class's cap with INDEXLAB_TOPK_MID_CAP (<= 16384: no such class,
    // those rows go to the cluster kernel).
    int64_t mid_cap = (static_cast<int64_t>(kShortDynMax) - std::max(kpow2, 2) * 8 - detail::kNB * 4) / 4 - 4;
    mid_cap = std::min<int64_t>(env_int("INDEXLAB_TOPK_MID_CAP", 49152), mid_cap & ~int64_t{63});
    struct Class {
      int64_t cap;
      int threads;
    };
    const Class classes[] = {{8192, 256}, {detail::kSmallMaxCols, 256}, {mid_cap, 1024}};
    // Without ks / ke every row has cols columns: one class, one CTA a row.
    const int64_t len_hi = p.cols;
    for (const Class& c : classes) {
      if (covered >= len_hi || c.cap <= covered || c.cap < p.min_len_hint) continue;
      const int64_t ncap = std::min(c.cap, std::max<int64_t>(len_hi, 1));
      const bool only = covered < 0 && ncap >= len_hi;     // every row is in this class
      if (!only && !p.ks && !p.ke && ncap < len_hi) continue;  // no row is in this class
      const bool persistent = !only;
      Status st;
      if (c.threads == 256) st = launch_short<256>(p, kpow2, covered, ncap, persistent, stream);
      else st = launch_short<1024>(p, kpow2, covered, ncap, persistent, stream);
      INDEXLAB_RETURN_IF_ERROR(st);
      covered = ncap;
    }
    if (covered >= len_hi) return Status::Ok();
  }
  if (!legacy) {
    // INDEXLAB_TOPK_SPEC=0 turns the speculative first-pass capture off (tests force the
    // re-read path with it; the result is the same, only slower).
    const char* sp = std::getenv("INDEXLAB_TOPK_SPEC");
    const bool spec = !(sp && std::strcmp(sp, "0") == 0);
    const size_t smem = size_t{2} * detail::kBins * 4 +
                        static_cast<size_t>(detail::kCand + std::max(detail::kSpec, kpow2)) * 8;
    // One cluster a row. When the short-row launches took some rows (covered >= 0) and there
    // are many rows, one wave of clusters striding over the rows instead (Loop), so that a row it
    // skips costs a load and not a cluster launch: a causal prefill chunk of 8192 rows of 64K
    // columns holds few long rows or none. With few rows the straight kernel is faster (the
    // loop's state spills at 64 registers, and one wave leaves the last rows' imbalance).
    int64_t clusters = p.rows;
    bool loop = false;
    // (INDEXLAB_TOPK_CLUSTER_LOOP=1 takes the loop whenever covered >= 0: tests run it on few rows.)
    const bool force_loop = env_int("INDEXLAB_TOPK_CLUSTER_LOOP", 0) != 0;
    if (covered >= 0 && (force_loop || p.rows > 32 * static_cast<int64_t>(detail::num_sms()))) {
      // Clusters the card holds at once (a cluster's CTAs share a GPC, so this can be less than
      // SMs / 2); asked once per shared-memory size.
      thread_local std::vector<std::pair<size_t, int>> occ;
      int resident = 0;
      INDEXLAB_CUDA_CHECK(cached_occupancy(&occ, smem, [&](int* n) {
        const cudaError_t attr = cudaFuncSetAttribute(detail::topk_cluster_kernel<4, false, true>,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      static_cast<int>(detail::kClusterSmemMax));
        if (attr != cudaSuccess) return attr;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(static_cast<unsigned>(detail::kClusterCtas * detail::num_sms()));
        cfg.blockDim = dim3(detail::kCT);
        cfg.dynamicSmemBytes = smem;
        return cudaOccupancyMaxActiveClusters(n, detail::topk_cluster_kernel<4, false, true>, &cfg);
      }, &resident));
      if (resident < 1) return error("top-k: no cluster of the cluster kernel fits the card");
      clusters = std::min<int64_t>(p.rows, resident);
      loop = true;
    }
    const unsigned grid = static_cast<unsigned>(clusters * detail::kClusterCtas);
    // 4 loads a step, no prefetch: measured fastest of the variants tried (cuda/NOTES.md).
    if (loop) return launch_cluster<4, false, true>(p, kpow2, spec, static_cast<int>(covered), smem, grid, stream);
    return launch_cluster<4, false, false>(p, kpow2, spec, static_cast<int>(covered), smem, grid, stream);
  }
  const size_t smem = static_cast<size_t>(kpow2) * 8;
  INDEXLAB_CUDA_CHECK(cudaFuncSetAttribute(detail::topk_kernel,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  detail::topk_kernel<<<static_cast<unsigned>(p.rows), detail::kTopkThreads, smem, stream>>>(p, kpow2);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

}  // namespace indexlab::cuda
