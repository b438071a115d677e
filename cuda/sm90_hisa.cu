/// HISA (SPEC 4) on sm90: block pooling with re-quantization, block scores on the fp8 logits
/// kernels, canonical block selection on the GPU, candidate-gather rescoring, top-K, index remap;
/// flat (prefill / ragged) and paged decode with an incremental pooled cache; benchmark fixture.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "cuda/api.h"
#include "cuda/bench_staged.cuh"
#include "cuda/pooled_cache.h"
#include "cuda/sm90_common.cuh"
#include "cuda/sm90_host.cuh"
#include "cuda/sparse.h"
#include "cuda/sparse_detail.h"

namespace indexlab::cuda {
namespace detail {
namespace {

constexpr int kSelWarps = 8;

// ---- Block selection -------------------------------------------------------------------------
// One warp per query row. Blocks i = 0 .. nb-1 have scores J[row, jcol + i] (unused when
// nb <= m: every block is kept). Kept: first and last, plus the top `take` of the pool (blocks
// 1 .. nb-2, or all blocks with plus_ends) in canonical rank (score descending, lower block
// first, NaN last), found as the take-th largest unique 64-bit composite
// (ordered score << 32 | ~block) by an 8-bit radix select. Writes the kept blocks' tiles (64 keys
// starting at key0 + i B + 64 t, those meeting [lo, hi)) in ascending key order, -1 after.
struct SelectParams {
  const float* J;            // [rows, ldj]
  int64_t ldj;
  const int32_t* nb;         // [rows] eligible blocks
  const int32_t* jcol;       // [rows] column of block 0's score
  const int32_t* key0;       // [rows] first key of block 0
  const int32_t* lo;         // [rows] visible keys [lo, hi)
  const int32_t* hi;
  int32_t* tile_start;       // [rows, max_tiles]
  int64_t max_tiles, rows;
  int block, m;
  bool plus_ends, bf16;
};

__device__ __forceinline__ uint32_t ordered_score(float f, bool bf16) {
  if (f != f) return 0u;  // NaN below everything (-inf maps to 0x007FFFFF)
  uint32_t u = __float_as_uint(f);
  if (bf16) u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  if ((u & 0x7FFFFFFFu) == 0) return 0x80000000u;  // +-0 tie
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(kSelWarps * 32) select_kernel(const SelectParams p) {
  __shared__ uint32_t hist_all[kSelWarps][256];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kSelWarps + warp;
  if (row >= p.rows) return;
  uint32_t* hist = hist_all[warp];
  const int64_t nb = max(0, p.nb[row]);
  const int32_t lo = p.lo[row], hi = p.hi[row];
  const int64_t key0 = p.key0[row];
  const float* Jr = p.J ? p.J + row * p.ldj + p.jcol[row] : nullptr;
  const bool all = nb <= p.m;
  const int64_t p0 = p.plus_ends ? 0 : 1, p1 = p.plus_ends ? nb : nb - 1;
  const int64_t take = p.plus_ends ? p.m : p.m - 2;
  auto comp = [&](int64_t i) -> uint64_t {
    return (static_cast<uint64_t>(ordered_score(Jr[i], p.bf16)) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
  };
  // mode: 0 keep all of the pool, 1 keep none, 2 keep composite >= thr
  int mode = 0;
  uint64_t thr = 0;
  if (!all && p1 - p0 > take) {
    if (take <= 0) {
      mode = 1;
    } else {
      mode = 2;
      uint64_t prefix = 0, mask = 0;
      uint32_t need = static_cast<uint32_t>(take);
      for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = lane; b < 256; b += 32) hist[b] = 0;
        __syncwarp();
        for (int64_t i = p0 + lane; i < p1; i += 32) {
          const uint64_t c = comp(i);
          if ((c & mask) == prefix) atomicAdd(&hist[(c >> shift) & 255], 1u);
        }
        __syncwarp();
        uint32_t s = 0;
#pragma unroll
        for (int b = 0; b < 8; ++b) s += hist[lane * 8 + b];
        uint32_t x = s;  // suffix sum over lanes >= lane
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const uint32_t y = __shfl_down_sync(0xffffffffu, x, o);
          if (lane + o < 32) x += y;
        }
        const uint32_t above = x - s;
        int dsel = -1;
        uint32_t nneed = 0, whole = 0;
        if (above < need && need <= x) {
          uint32_t cum = above;
          for (int b = 7; b >= 0; --b) {
            const uint32_t hv = hist[lane * 8 + b];
            if (cum + hv >= need) {
              dsel = lane * 8 + b;
              nneed = need - cum;
              whole = hv == nneed;
              break;
            }
            cum += hv;
          }
        }
        const uint32_t who = __ballot_sync(0xffffffffu, dsel >= 0);
        const int src = __ffs(who) - 1;
        dsel = __shfl_sync(0xffffffffu, dsel, src);
        need = __shfl_sync(0xffffffffu, nneed, src);
        whole = __shfl_sync(0xffffffffu, whole, src);
        prefix |= static_cast<uint64_t>(dsel) << shift;
        mask |= uint64_t{0xFF} << shift;
        __syncwarp();
        // Every element with this prefix is taken: the threshold is the prefix itself (lower
        // bits zero), and no later digit changes the kept set.
        if (whole) break;
      }
      thr = prefix;
    }
  }
  // Tiles of the kept blocks, ascending.
  const int tpb = p.block / 64;
  int32_t* out = p.tile_start + row * p.max_tiles;
  int64_t pos = 0;
  for (int64_t b0 = 0; b0 < nb; b0 += 32) {
    const int64_t i = b0 + lane;
    bool keep = false;
    if (i < nb) {
      if (all || i == 0 || i == nb - 1) {
        keep = true;
      } else if (i >= p0 && i < p1) {
        keep = mode == 0 || (mode == 2 && comp(i) >= thr);
      }
    }
    int cnt = 0;
    const int64_t bk = key0 + i * p.block;
    if (keep)
      for (int t = 0; t < tpb; ++t) {
        const int64_t s = bk + 64 * t;
        if (s < hi && s + 64 > lo) ++cnt;
      }
    int incl = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    int64_t w = pos + incl - cnt;
    if (keep)
      for (int t = 0; t < tpb; ++t) {
        const int64_t s = bk + 64 * t;
        if (s < hi && s + 64 > lo && w < p.max_tiles) out[w++] = static_cast<int32_t>(s);
      }
    pos += __shfl_sync(0xffffffffu, incl, 31);
  }
  for (int64_t t = pos + lane; t < p.max_tiles; t += 32) out[t] = -1;
}

Status launch_select(const SelectParams& p, cudaStream_t st) {
  if (p.rows == 0) return Status::Ok();
  const int64_t blocks = (p.rows + kSelWarps - 1) / kSelWarps;
  select_kernel<<<static_cast<unsigned>(blocks), kSelWarps * 32, 0, st>>>(p);
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  return Status::Ok();
}

// Tile starts of the paged block-score gather: row r scores its nb pooled blocks at
// [seq * bps, seq * bps + nb) of the pooled cache, 64 to a tile.
__global__ void pooled_tiles_kernel(const int32_t* nb, int64_t rows, int next_n, int64_t bps,
                                    int32_t* tiles, int32_t* lo, int32_t* hi, int64_t max_tiles) {
  const int64_t r = blockIdx.x;
  if (r >= rows) return;
  const int64_t base = (r / next_n) * bps;
  const int32_t n = nb[r];
  for (int64_t t = threadIdx.x; t < max_tiles; t += blockDim.x)
    tiles[r * max_tiles + t] = 64 * t < n ? static_cast<int32_t>(base + 64 * t) : -1;
  if (threadIdx.x == 0) {
    lo[r] = static_cast<int32_t>(base);
    hi[r] = static_cast<int32_t>(base + n);
  }
}

int64_t kept_max(const ref::Options& opt, int64_t max_nb) {
  return std::min<int64_t>(max_nb, opt.hisa_m + (opt.hisa_topm_plus_ends ? 2 : 0));
}

// ---- Flat plan -------------------------------------------------------------------------------

struct FlatPlan {
  int64_t nq = 0, nk = 0, npooled = 0, max_nb = 0, max_tiles = 0;
  bool need_scores = false;
  std::vector<int32_t> nb, jcol, key0, pks, pke;  // [nq]
  std::vector<int32_t> pool_begin, pool_end;      // [npooled]
};

Status build_flat_plan(const ref::Shape& s, const std::vector<int32_t>& ks, const std::vector<int32_t>& ke,
                       const std::vector<int32_t>& seq_end, const std::vector<int32_t>& origin,
                       const ref::Options& opt, FlatPlan* out) {
  FlatPlan pl;
  const int64_t nq = s.nq, B = opt.hisa_block;
  pl.nq = nq;
  pl.nk = s.nk;
  pl.nb.assign(nq, 0);
  pl.jcol.assign(nq, 0);
  pl.key0.assign(nq, 0);
  pl.pks.assign(nq, 0);
  pl.pke.assign(nq, 0);
  std::vector<int64_t> first(nq, 0), grp(nq, -1);
  std::map<std::pair<int64_t, int64_t>, int64_t> gid;
  std::vector<std::pair<int64_t, int64_t>> gkey;
  std::vector<int64_t> gfirst, glast;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t a = ks[i], b = ke[i];
    if (a >= b) continue;
    const int64_t end = seq_end.empty() ? s.nk : seq_end[i];
    int64_t f, l, base;
    if (opt.align == ref::BlockAlign::kSequence) {
      base = a;
      f = 0;
      l = (b - a + B - 1) / B - 1;
    } else {
      base = origin.empty() ? 0 : origin[i];
      f = (a - base) / B;
      l = (b - base + B - 1) / B - 1;
    }
    if (l < f) continue;
    const auto key = std::make_pair(base, end);
    auto it = gid.find(key);
    int64_t g;
    if (it == gid.end()) {
      g = static_cast<int64_t>(gkey.size());
      gid.emplace(key, g);
      gkey.push_back(key);
      gfirst.push_back(f);
      glast.push_back(l);
    } else {
      g = it->second;
      gfirst[g] = std::min(gfirst[g], f);
      glast[g] = std::max(glast[g], l);
    }
    grp[i] = g;
    first[i] = f;
    pl.nb[i] = static_cast<int32_t>(l - f + 1);
    pl.key0[i] = static_cast<int32_t>(base + f * B);
    pl.max_nb = std::max<int64_t>(pl.max_nb, l - f + 1);
    if (l - f + 1 > opt.hisa_m) pl.need_scores = true;
  }
  std::vector<int64_t> gstart(gkey.size(), 0);
  int64_t np = 0;
  for (size_t g = 0; g < gkey.size(); ++g) {
    gstart[g] = np;
    np += glast[g] - gfirst[g] + 1;
  }
  if (np > INT32_MAX) return error("HISA: ", np, " pooled blocks is too many");
  pl.npooled = np;
  if (pl.need_scores) {
    pl.pool_begin.resize(np);
    pl.pool_end.resize(np);
    for (size_t g = 0; g < gkey.size(); ++g) {
      const int64_t base = gkey[g].first, end = gkey[g].second;
      for (int64_t b = gfirst[g]; b <= glast[g]; ++b) {
        const int64_t t = gstart[g] + b - gfirst[g];
        pl.pool_begin[t] = static_cast<int32_t>(base + b * B);
        pl.pool_end[t] = static_cast<int32_t>(std::min(base + (b + 1) * B, end));
      }
    }
  }
  for (int64_t i = 0; i < nq; ++i) {
    if (grp[i] < 0) continue;
    const int64_t g = grp[i];
    // J rows from the logits kernel are indexed by pooled block: block 0 of row i is column pks.
    pl.pks[i] = static_cast<int32_t>(gstart[g] + first[i] - gfirst[g]);
    pl.pke[i] = pl.pks[i] + pl.nb[i];
    pl.jcol[i] = pl.pks[i];
  }
  pl.max_tiles = kept_max(opt, pl.max_nb) * (B / 64);
  *out = std::move(pl);
  return Status::Ok();
}

/// Device state of one flat HISA run (plan arrays, pooled keys, chunk workspaces).
struct FlatRunner {
  FlatPlan plan;
  ref::Options opt;
  int h = 0, d = 0, K = 0;
  int64_t chunk = 1;
  // inputs (device, not owned)
  const uint8_t* q = nullptr;
  const float* w = nullptr;
  const uint8_t* k = nullptr;
  const float* k_scale = nullptr;
  const int32_t* ks = nullptr;
  const int32_t* ke = nullptr;
  DeviceArray<int32_t> nb, jcol, key0, pks, pke, pb, pe, tiles;
  DeviceArray<uint8_t> pcodes;
  DeviceArray<float> pscale, J, cl;

  Status setup() {
    INDEXLAB_RETURN_IF_ERROR(nb.upload(plan.nb));
    INDEXLAB_RETURN_IF_ERROR(jcol.upload(plan.jcol));
    INDEXLAB_RETURN_IF_ERROR(key0.upload(plan.key0));
    INDEXLAB_RETURN_IF_ERROR(pks.upload(plan.pks));
    INDEXLAB_RETURN_IF_ERROR(pke.upload(plan.pke));
    const int64_t cols = plan.max_tiles * 64;
    const int64_t jc = plan.need_scores ? plan.npooled : 0;
    // Rows per chunk: candidate logits plus block scores within 2^29 floats.
    chunk = std::max<int64_t>(1, std::min<int64_t>(plan.nq, (int64_t{1} << 29) / std::max<int64_t>(1, cols + jc)));
    if (plan.need_scores) {
      INDEXLAB_RETURN_IF_ERROR(pb.upload(plan.pool_begin));
      INDEXLAB_RETURN_IF_ERROR(pe.upload(plan.pool_end));
      INDEXLAB_RETURN_IF_ERROR(pcodes.alloc(static_cast<size_t>(plan.npooled) * d));
      INDEXLAB_RETURN_IF_ERROR(pscale.alloc(static_cast<size_t>(plan.npooled)));
      INDEXLAB_RETURN_IF_ERROR(J.alloc(static_cast<size_t>(chunk * plan.npooled)));
    }
    INDEXLAB_RETURN_IF_ERROR(tiles.alloc(static_cast<size_t>(chunk * std::max<int64_t>(1, plan.max_tiles))));
    INDEXLAB_RETURN_IF_ERROR(cl.alloc(static_cast<size_t>(chunk * std::max<int64_t>(1, cols))));
    return Status::Ok();
  }

  /// index/score: device [nq, K]. dense (optional, host [nq, nk]): candidate logits scattered.
  Status run(int32_t* index, float* score, StageTimer* tm, std::vector<float>* dense) {
    auto mark = [&](const char* name) -> Status { return tm ? tm->mark(name) : Status::Ok(); };
    const int64_t nq = plan.nq, cols = plan.max_tiles * 64;
    if (plan.need_scores) {
      PoolParams pp;
      pp.k = k;
      pp.k_scale = k_scale;
      pp.nk = plan.nk;
      pp.begin = pb.get();
      pp.end = pe.get();
      pp.nblocks = plan.npooled;
      pp.d = d;
      pp.pooled_codes = pcodes.get();
      pp.pooled_scale = pscale.get();
      INDEXLAB_RETURN_IF_ERROR(launch_pool_fp8(pp));
      INDEXLAB_RETURN_IF_ERROR(mark("pool"));
    }
    std::vector<float> hl;
    std::vector<int32_t> ht;
    for (int64_t r0 = 0; r0 < nq; r0 += chunk) {
      const int64_t rn = std::min(chunk, nq - r0);
      if (plan.need_scores) {
        LogitsParams lp;
        lp.q = q + r0 * h * d;
        lp.k = pcodes.get();
        lp.k_scale = pscale.get();
        lp.w = w + r0 * h;
        lp.ks = pks.get() + r0;
        lp.ke = pke.get() + r0;
        lp.logits = J.get();
        lp.nq = rn;
        lp.nk = plan.npooled;
        lp.ld = plan.npooled;
        lp.h = h;
        lp.d = d;
        INDEXLAB_RETURN_IF_ERROR(launch_mqa_logits_fp8(lp));
        INDEXLAB_RETURN_IF_ERROR(mark("block_scores"));
      }
      SelectParams sp{};
      sp.J = plan.need_scores ? J.get() : nullptr;
      sp.ldj = plan.npooled;
      sp.nb = nb.get() + r0;
      sp.jcol = jcol.get() + r0;
      sp.key0 = key0.get() + r0;
      sp.lo = ks + r0;
      sp.hi = ke + r0;
      sp.tile_start = tiles.get();
      sp.max_tiles = plan.max_tiles;
      sp.rows = rn;
      sp.block = opt.hisa_block;
      sp.m = opt.hisa_m;
      sp.plus_ends = opt.hisa_topm_plus_ends;
      sp.bf16 = opt.hisa_bf16_block_scores;
      if (plan.max_tiles > 0) INDEXLAB_RETURN_IF_ERROR(launch_select(sp, nullptr));
      INDEXLAB_RETURN_IF_ERROR(mark("select"));
      GatherLogitsParams gp;
      gp.q = q + r0 * h * d;
      gp.w = w + r0 * h;
      gp.k = k;
      gp.k_scale = k_scale;
      gp.nk = plan.nk;
      gp.lo = ks + r0;
      gp.hi = ke + r0;
      gp.tile_start = tiles.get();
      gp.max_tiles = plan.max_tiles;
      gp.logits = cl.get();
      gp.ld = std::max<int64_t>(cols, 1);
      gp.nq = rn;
      gp.h = h;
      gp.d = d;
      if (cols > 0) INDEXLAB_RETURN_IF_ERROR(launch_gather_logits_fp8(gp));
      INDEXLAB_RETURN_IF_ERROR(mark("rescore"));
      if (cols > 0) {
        TopkParams tp;
        tp.logits = cl.get();
        tp.index = index + r0 * K;
        tp.score = score + r0 * K;
        tp.rows = rn;
        tp.cols = cols;
        tp.ld = cols;
        tp.k = K;
        tp.absolute = true;
        INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
        RemapParams rp;
        rp.index = index + r0 * K;
        rp.rows = rn;
        rp.k = K;
        rp.tile_start = tiles.get();
        rp.max_tiles = plan.max_tiles;
        rp.base = opt.index_base == ref::IndexBase::kAbsolute ? nullptr : ks + r0;
        INDEXLAB_RETURN_IF_ERROR(launch_remap_indices(rp));
      } else {
        INDEXLAB_CUDA_CHECK(cudaMemset(index + r0 * K, 0xFF, static_cast<size_t>(rn) * K * 4));
        std::vector<float> ninf(static_cast<size_t>(rn) * K, -INFINITY);
        INDEXLAB_CUDA_CHECK(cudaMemcpy(score + r0 * K, ninf.data(), ninf.size() * 4, cudaMemcpyHostToDevice));
      }
      INDEXLAB_RETURN_IF_ERROR(mark("topk"));
      if (dense && cols > 0) {
        INDEXLAB_RETURN_IF_ERROR(sync_check());
        hl.resize(static_cast<size_t>(rn * cols));
        ht.resize(static_cast<size_t>(rn * plan.max_tiles));
        INDEXLAB_RETURN_IF_ERROR(cl.download(hl.data(), hl.size()));
        INDEXLAB_RETURN_IF_ERROR(tiles.download(ht.data(), ht.size()));
        for (int64_t r = 0; r < rn; ++r)
          for (int64_t t = 0; t < plan.max_tiles; ++t) {
            const int32_t s = ht[r * plan.max_tiles + t];
            if (s < 0) continue;
            for (int c = 0; c < 64; ++c) {
              const float v = hl[r * cols + t * 64 + c];
              const int64_t key = static_cast<int64_t>(s) + c;
              if (v == -INFINITY || key >= plan.nk) continue;
              (*dense)[(r0 + r) * plan.nk + key] = v;
            }
          }
      }
    }
    return Status::Ok();
  }
};

// ---- Paged decode ----------------------------------------------------------------------------

/// Device state of one paged HISA decode run over a pooled cache.
struct PagedRunner {
  ref::Options opt;
  int h = 0, d = 0, K = 0, next_n = 1;
  int64_t batch = 0, rows = 0, max_pages = 0, num_pages = 0, max_nb = 0, max_tiles = 0, jt = 0;
  int64_t chunk = 1;
  bool need_scores = false;
  const uint8_t* q = nullptr;
  const float* w = nullptr;
  const uint8_t* cache = nullptr;
  const int32_t* bt = nullptr;
  const PagedPooledCache* pooled = nullptr;
  std::vector<int32_t> hi_h, nb_h;
  DeviceArray<int32_t> nb, zero, hi, jlo, jhi, jtiles, tiles;
  DeviceArray<float> J, cl;

  Status setup(const std::vector<int32_t>& ctx) {
    const int64_t B = opt.hisa_block;
    rows = batch * next_n;
    hi_h.assign(rows, 0);
    nb_h.assign(rows, 0);
    max_nb = 0;
    need_scores = false;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t c = std::min<int64_t>(ctx[r / next_n], max_pages * 64);
      const int64_t v = std::max<int64_t>(0, std::min<int64_t>(c, c - next_n + (r % next_n) + 1));
      hi_h[r] = static_cast<int32_t>(v);
      nb_h[r] = static_cast<int32_t>((v + B - 1) / B);
      max_nb = std::max<int64_t>(max_nb, nb_h[r]);
      if (nb_h[r] > opt.hisa_m) need_scores = true;
    }
    max_tiles = kept_max(opt, max_nb) * (B / 64);
    jt = (pooled->blocks_per_seq() + 63) / 64;
    const int64_t cols = max_tiles * 64;
    chunk = std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t{1} << 29) / std::max<int64_t>(1, cols + jt * 64)));
    chunk = std::max<int64_t>(1, chunk / next_n) * next_n;  // whole sequences
    INDEXLAB_RETURN_IF_ERROR(nb.upload(nb_h));
    INDEXLAB_RETURN_IF_ERROR(hi.upload(hi_h));
    INDEXLAB_RETURN_IF_ERROR(zero.upload(std::vector<int32_t>(static_cast<size_t>(rows), 0)));
    if (need_scores) {
      INDEXLAB_RETURN_IF_ERROR(jlo.alloc(static_cast<size_t>(rows)));
      INDEXLAB_RETURN_IF_ERROR(jhi.alloc(static_cast<size_t>(rows)));
      INDEXLAB_RETURN_IF_ERROR(jtiles.alloc(static_cast<size_t>(rows * jt)));
      INDEXLAB_RETURN_IF_ERROR(J.alloc(static_cast<size_t>(chunk * jt * 64)));
      pooled_tiles_kernel<<<static_cast<unsigned>(rows), 128>>>(nb.get(), rows, next_n, pooled->blocks_per_seq(),
                                                               jtiles.get(), jlo.get(), jhi.get(), jt);
      INDEXLAB_CUDA_CHECK(cudaGetLastError());
    }
    INDEXLAB_RETURN_IF_ERROR(tiles.alloc(static_cast<size_t>(chunk * std::max<int64_t>(1, max_tiles))));
    INDEXLAB_RETURN_IF_ERROR(cl.alloc(static_cast<size_t>(chunk * std::max<int64_t>(1, cols))));
    return Status::Ok();
  }

  Status run(int32_t* index, float* score, StageTimer* tm, std::vector<float>* dense) {
    auto mark = [&](const char* name) -> Status { return tm ? tm->mark(name) : Status::Ok(); };
    const int64_t cols = max_tiles * 64, lcols = max_pages * 64;
    std::vector<float> hl;
    std::vector<int32_t> ht;
    // Chunks hold whole sequences so the block table offset stays per sequence.
    const int64_t cseq = std::max<int64_t>(1, chunk / next_n);
    for (int64_t b0 = 0; b0 < batch; b0 += cseq) {
      const int64_t bn = std::min(cseq, batch - b0);
      const int64_t r0 = b0 * next_n, rn = bn * next_n;
      if (need_scores) {
        GatherLogitsParams gp;
        gp.q = q + r0 * h * d;
        gp.w = w + r0 * h;
        gp.k = pooled->codes();
        gp.k_scale = pooled->scales();
        gp.nk = batch * pooled->blocks_per_seq();
        gp.lo = jlo.get() + r0;
        gp.hi = jhi.get() + r0;
        gp.tile_start = jtiles.get() + r0 * jt;
        gp.max_tiles = jt;
        gp.logits = J.get();
        gp.ld = jt * 64;
        gp.nq = rn;
        gp.h = h;
        gp.d = d;
        INDEXLAB_RETURN_IF_ERROR(launch_gather_logits_fp8(gp));
        INDEXLAB_RETURN_IF_ERROR(mark("block_scores"));
      }
      SelectParams sp{};
      sp.J = need_scores ? J.get() : nullptr;
      sp.ldj = jt * 64;
      sp.nb = nb.get() + r0;
      sp.jcol = zero.get() + r0;
      sp.key0 = zero.get() + r0;
      sp.lo = zero.get() + r0;
      sp.hi = hi.get() + r0;
      sp.tile_start = tiles.get();
      sp.max_tiles = max_tiles;
      sp.rows = rn;
      sp.block = opt.hisa_block;
      sp.m = opt.hisa_m;
      sp.plus_ends = opt.hisa_topm_plus_ends;
      sp.bf16 = opt.hisa_bf16_block_scores;
      if (max_tiles > 0) INDEXLAB_RETURN_IF_ERROR(launch_select(sp, nullptr));
      INDEXLAB_RETURN_IF_ERROR(mark("select"));
      if (cols > 0) {
        GatherLogitsParams gp;
        gp.q = q + r0 * h * d;
        gp.w = w + r0 * h;
        gp.cache = cache;
        gp.block_table = bt + b0 * max_pages;
        gp.max_pages = max_pages;
        gp.num_pages = num_pages;
        gp.next_n = next_n;
        gp.lo = zero.get() + r0;
        gp.hi = hi.get() + r0;
        gp.tile_start = tiles.get();
        gp.max_tiles = max_tiles;
        gp.logits = cl.get();
        gp.ld = cols;
        gp.nq = rn;
        gp.h = h;
        gp.d = d;
        INDEXLAB_RETURN_IF_ERROR(launch_gather_logits_fp8(gp));
      }
      INDEXLAB_RETURN_IF_ERROR(mark("rescore"));
      if (cols > 0) {
        TopkParams tp;
        tp.logits = cl.get();
        tp.index = index + r0 * K;
        tp.score = score + r0 * K;
        tp.rows = rn;
        tp.cols = cols;
        tp.ld = cols;
        tp.k = K;
        tp.absolute = true;
        INDEXLAB_RETURN_IF_ERROR(launch_topk(tp));
        RemapParams rp;
        rp.index = index + r0 * K;
        rp.rows = rn;
        rp.k = K;
        rp.tile_start = tiles.get();
        rp.max_tiles = max_tiles;
        if (opt.index_base == ref::IndexBase::kAbsolute) {
          rp.block_table = bt + b0 * max_pages;
          rp.max_pages = max_pages;
          rp.next_n = next_n;
        }
        INDEXLAB_RETURN_IF_ERROR(launch_remap_indices(rp));
      } else {
        INDEXLAB_CUDA_CHECK(cudaMemset(index + r0 * K, 0xFF, static_cast<size_t>(rn) * K * 4));
        std::vector<float> ninf(static_cast<size_t>(rn) * K, -INFINITY);
        INDEXLAB_CUDA_CHECK(cudaMemcpy(score + r0 * K, ninf.data(), ninf.size() * 4, cudaMemcpyHostToDevice));
      }
      INDEXLAB_RETURN_IF_ERROR(mark("topk"));
      if (dense && cols > 0) {
        INDEXLAB_RETURN_IF_ERROR(sync_check());
        hl.resize(static_cast<size_t>(rn * cols));
        ht.resize(static_cast<size_t>(rn * max_tiles));
        INDEXLAB_RETURN_IF_ERROR(cl.download(hl.data(), hl.size()));
        INDEXLAB_RETURN_IF_ERROR(tiles.download(ht.data(), ht.size()));
        for (int64_t r = 0; r < rn; ++r)
          for (int64_t t = 0; t < max_tiles; ++t) {
            const int32_t s = ht[r * max_tiles + t];
            if (s < 0) continue;
            for (int c = 0; c < 64; ++c) {
              const float v = hl[r * cols + t * 64 + c];
              const int64_t key = static_cast<int64_t>(s) + c;
              if (v == -INFINITY || key >= lcols) continue;
              (*dense)[(r0 + r) * lcols + key] = v;
            }
          }
      }
    }
    return Status::Ok();
  }
};

void init_result(int64_t nq, int K, int64_t lcols, bool want, ref::Result* out) {
  out->nq = nq;
  out->k = K;
  out->index.assign(static_cast<size_t>(nq) * K, -1);
  out->score.assign(static_cast<size_t>(nq) * K, -INFINITY);
  out->bound.clear();
  out->ambiguous.clear();
  out->active_heads.clear();
  out->logits_cols = want ? lcols : 0;
  out->logits.clear();
  if (want) out->logits.assign(static_cast<size_t>(nq * lcols), -INFINITY);
}

}  // namespace
}  // namespace detail

// ---- Host entry points ---------------------------------------------------------------------------

Status hisa_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out) {
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(can_implement_sparse(ref::Path::kHisa, in, opt));
  INDEXLAB_RETURN_IF_ERROR(detail::need_device());
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int h = in.shape.h, d = in.shape.d, K = in.shape.k;
  if (nk > INT32_MAX / 2) return error("nk = ", nk, " is too large for the sm90 HISA kernels");
  detail::FlatRunner fr;
  INDEXLAB_RETURN_IF_ERROR(detail::build_flat_plan(in.shape, in.ks, in.ke, in.seq_end, in.block_origin, opt, &fr.plan));
  fr.opt = opt;
  fr.h = h;
  fr.d = d;
  fr.K = K;
  std::vector<float> scale = in.k_scale;
  if (scale.empty()) scale.assign(static_cast<size_t>(nk), 1.0f);
  detail::DeviceArray<uint8_t> dq, dk;
  detail::DeviceArray<float> dsc, dw, dscore;
  detail::DeviceArray<int32_t> dks, dke, didx;
  INDEXLAB_RETURN_IF_ERROR(dq.upload(detail::to_e4m3(in.q)));
  INDEXLAB_RETURN_IF_ERROR(dk.upload(detail::to_e4m3(in.k)));
  INDEXLAB_RETURN_IF_ERROR(dsc.upload(scale));
  INDEXLAB_RETURN_IF_ERROR(dw.upload(in.w));
  INDEXLAB_RETURN_IF_ERROR(dks.upload(in.ks));
  INDEXLAB_RETURN_IF_ERROR(dke.upload(in.ke));
  INDEXLAB_RETURN_IF_ERROR(didx.alloc(static_cast<size_t>(nq) * K));
  INDEXLAB_RETURN_IF_ERROR(dscore.alloc(static_cast<size_t>(nq) * K));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(didx, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(dscore, 0xFF));
  fr.q = dq.get();
  fr.w = dw.get();
  fr.k = dk.get();
  fr.k_scale = dsc.get();
  fr.ks = dks.get();
  fr.ke = dke.get();
  INDEXLAB_RETURN_IF_ERROR(fr.setup());
  detail::init_result(nq, K, nk, opt.want_logits, out);
  INDEXLAB_RETURN_IF_ERROR(fr.run(didx.get(), dscore.get(), nullptr, opt.want_logits ? &out->logits : nullptr));
  INDEXLAB_RETURN_IF_ERROR(detail::sync_check());
  INDEXLAB_RETURN_IF_ERROR(didx.download(out->index.data(), out->index.size()));
  return dscore.download(out->score.data(), out->score.size());
}

Status hisa_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out) {
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(can_implement_sparse(ref::Path::kHisa, in, opt));
  INDEXLAB_RETURN_IF_ERROR(detail::need_device());
  const int h = in.h, d = in.d, K = in.k;
  const int64_t rows = in.rows(), lcols = in.max_pages * 64;
  if (in.max_pages * 64 > INT32_MAX / 2) return error("max_pages = ", in.max_pages, " is too large");
  for (int64_t b = 0; b < in.batch; ++b)
    if (in.context_lens[b] > lcols)
      return error("context_lens[", b, "] = ", in.context_lens[b], " exceeds max_pages * 64 = ", lcols);
  PagedPooledCache pc;
  INDEXLAB_RETURN_IF_ERROR(pc.reset(in.batch, in.max_pages, opt.hisa_block, d));
  detail::DeviceArray<uint8_t> dq, dcache;
  detail::DeviceArray<float> dw, dscore;
  detail::DeviceArray<int32_t> dbt, didx;
  INDEXLAB_RETURN_IF_ERROR(dq.upload(detail::to_e4m3(in.q)));
  INDEXLAB_RETURN_IF_ERROR(dw.upload(in.w));
  INDEXLAB_RETURN_IF_ERROR(dcache.upload(in.cache));
  INDEXLAB_RETURN_IF_ERROR(dbt.upload(in.block_table));
  INDEXLAB_RETURN_IF_ERROR(didx.alloc(static_cast<size_t>(rows) * K));
  INDEXLAB_RETURN_IF_ERROR(dscore.alloc(static_cast<size_t>(rows) * K));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(didx, 0x7F));
  INDEXLAB_RETURN_IF_ERROR(detail::poison(dscore, 0xFF));
  INDEXLAB_RETURN_IF_ERROR(pc.update(dcache.get(), dbt.get(), in.num_pages, in.context_lens, nullptr));
  detail::PagedRunner pr;
  pr.opt = opt;
  pr.h = h;
  pr.d = d;
  pr.K = K;
  pr.next_n = in.next_n;
  pr.batch = in.batch;
  pr.max_pages = in.max_pages;
  pr.num_pages = in.num_pages;
  pr.q = dq.get();
  pr.w = dw.get();
  pr.cache = dcache.get();
  pr.bt = dbt.get();
  pr.pooled = &pc;
  INDEXLAB_RETURN_IF_ERROR(pr.setup(in.context_lens));
  detail::init_result(rows, K, lcols, opt.want_logits, out);
  INDEXLAB_RETURN_IF_ERROR(pr.run(didx.get(), dscore.get(), nullptr, opt.want_logits ? &out->logits : nullptr));
  INDEXLAB_RETURN_IF_ERROR(detail::sync_check());
  INDEXLAB_RETURN_IF_ERROR(didx.download(out->index.data(), out->index.size()));
  return dscore.download(out->score.data(), out->score.size());
}

// ---- Benchmark fixture -------------------------------------------------------------------------

namespace detail {
namespace {

class HisaFlatWorkload : public Workload {
 public:
  DeviceArray<uint8_t> q, k;
  DeviceArray<float> sc, w, score;
  DeviceArray<int32_t> ks, ke, index;
  FlatRunner fr;
  StageTimer timer;
  Status run(float* ms) override {
    INDEXLAB_RETURN_IF_ERROR(timer.begin());
    INDEXLAB_RETURN_IF_ERROR(fr.run(index.get(), score.get(), &timer, nullptr));
    return timer.finish(ms, &stages);
  }
};

class HisaPagedWorkload : public Workload {
 public:
  DeviceArray<uint8_t> q, cache;
  DeviceArray<float> w, score;
  DeviceArray<int32_t> bt, index;
  std::vector<int32_t> ctx, ctx_prev;
  PagedPooledCache pc;
  PagedRunner pr;
  StageTimer timer;
  Status run(float* ms) override {
    // One decode step: every sequence grows by one token, pooled into its last block (the
    // shrink before the timer only resets the lengths and re-pools one block each).
    INDEXLAB_RETURN_IF_ERROR(pc.update(cache.get(), bt.get(), pr.num_pages, ctx_prev, nullptr));
    INDEXLAB_RETURN_IF_ERROR(timer.begin());
    INDEXLAB_RETURN_IF_ERROR(pc.update(cache.get(), bt.get(), pr.num_pages, ctx, nullptr));
    INDEXLAB_RETURN_IF_ERROR(timer.mark("pool"));
    INDEXLAB_RETURN_IF_ERROR(pr.run(index.get(), score.get(), &timer, nullptr));
    return timer.finish(ms, &stages);
  }
};

}  // namespace

Status make_hisa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out) {
  if (!out) return error("out is null");
  INDEXLAB_RETURN_IF_ERROR(need_device());
  const ref::Options& opt = spec.opt;
  if (opt.hisa_block % 64 != 0 || opt.hisa_block < 64)
    return error("hisa_block = ", opt.hisa_block, " is not supported by the sm90 HISA kernels (need a multiple of 64)");
  if (opt.hisa_m < 2) return error("hisa_m = ", opt.hisa_m, " must be >= 2");
  SyntheticFp8 s;
  INDEXLAB_RETURN_IF_ERROR(make_synthetic_fp8(spec, &s));
  const int h = spec.h, d = spec.d, K = spec.k;
  const int64_t kept = static_cast<int64_t>(opt.hisa_m) + (opt.hisa_topm_plus_ends ? 2 : 0);
  if (spec.batch == 0) {
    auto wl = std::make_unique<HisaFlatWorkload>();
    ref::Shape shape{s.rows, spec.sk, h, d, K};
    INDEXLAB_RETURN_IF_ERROR(build_flat_plan(shape, s.ks, s.ke, {}, {}, opt, &wl->fr.plan));
    INDEXLAB_RETURN_IF_ERROR(wl->q.upload(s.q));
    INDEXLAB_RETURN_IF_ERROR(wl->k.upload(s.k));
    INDEXLAB_RETURN_IF_ERROR(wl->sc.upload(s.k_scale));
    INDEXLAB_RETURN_IF_ERROR(wl->w.upload(s.w));
    INDEXLAB_RETURN_IF_ERROR(wl->ks.upload(s.ks));
    INDEXLAB_RETURN_IF_ERROR(wl->ke.upload(s.ke));
    INDEXLAB_RETURN_IF_ERROR(wl->index.alloc(static_cast<size_t>(s.rows) * K));
    INDEXLAB_RETURN_IF_ERROR(wl->score.alloc(static_cast<size_t>(s.rows) * K));
    FlatRunner& fr = wl->fr;
    fr.opt = opt;
    fr.h = h;
    fr.d = d;
    fr.K = K;
    fr.q = wl->q.get();
    fr.w = wl->w.get();
    fr.k = wl->k.get();
    fr.k_scale = wl->sc.get();
    fr.ks = wl->ks.get();
    fr.ke = wl->ke.get();
    INDEXLAB_RETURN_IF_ERROR(fr.setup());
    // Useful work: block scores over the eligible blocks of rows with nb > m, plus the
    // candidates (visible keys of at most `kept` blocks).
    double cand = 0, blocks = 0;
    for (int64_t i = 0; i < s.rows; ++i) {
      const int64_t v = s.ke[i] - s.ks[i];
      const int64_t nb = fr.plan.nb[i];
      if (nb > opt.hisa_m) blocks += nb;
      cand += std::min<int64_t>(v, kept * opt.hisa_block);
    }
    wl->flops = (cand + blocks) * 2.0 * h * d;
    wl->bytes = static_cast<double>(s.rows) * (h * d + 4.0 * h + 8.0 * K) +
                static_cast<double>(spec.sk) * (d + 4) + static_cast<double>(fr.plan.npooled) * (d + 4);
    *out = std::move(wl);
    return Status::Ok();
  }
  auto wl = std::make_unique<HisaPagedWorkload>();
  INDEXLAB_RETURN_IF_ERROR(wl->q.upload(s.q));
  INDEXLAB_RETURN_IF_ERROR(wl->w.upload(s.w));
  INDEXLAB_RETURN_IF_ERROR(wl->cache.upload(s.cache));
  INDEXLAB_RETURN_IF_ERROR(wl->bt.upload(s.block_table));
  INDEXLAB_RETURN_IF_ERROR(wl->index.alloc(static_cast<size_t>(s.rows) * K));
  INDEXLAB_RETURN_IF_ERROR(wl->score.alloc(static_cast<size_t>(s.rows) * K));
  wl->ctx = s.context_lens;
  wl->ctx_prev = s.context_lens;
  for (auto& c : wl->ctx_prev) c = std::max(0, c - 1);
  INDEXLAB_RETURN_IF_ERROR(wl->pc.reset(spec.batch, s.max_pages, opt.hisa_block, d));
  INDEXLAB_RETURN_IF_ERROR(wl->pc.update(wl->cache.get(), wl->bt.get(), s.num_pages, wl->ctx, nullptr));
  PagedRunner& pr = wl->pr;
  pr.opt = opt;
  pr.h = h;
  pr.d = d;
  pr.K = K;
  pr.next_n = spec.next_n;
  pr.batch = spec.batch;
  pr.max_pages = s.max_pages;
  pr.num_pages = s.num_pages;
  pr.q = wl->q.get();
  pr.w = wl->w.get();
  pr.cache = wl->cache.get();
  pr.bt = wl->bt.get();
  pr.pooled = &wl->pc;
  INDEXLAB_RETURN_IF_ERROR(pr.setup(wl->ctx));
  INDEXLAB_RETURN_IF_ERROR(sync_check());
  double cand = 0, blocks = 0;
  for (int64_t r = 0; r < s.rows; ++r) {
    if (pr.nb_h[r] > opt.hisa_m) blocks += pr.nb_h[r];
    cand += std::min<int64_t>(pr.hi_h[r], kept * opt.hisa_block);
  }
  wl->flops = (cand + blocks) * 2.0 * h * d;
  wl->bytes = cand * (d + 4.0) + blocks * (d + 4.0) + static_cast<double>(s.rows) * (h * d + 4.0 * h + 8.0 * K);
  *out = std::move(wl);
  return Status::Ok();
}

}  // namespace detail
}  // namespace indexlab::cuda
