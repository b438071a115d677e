/// Host-only interface to indexlab's Hopper (sm_90a) HISA, MISA and MISA-dagger kernels (SPEC 4-6).
/// Like api.h it includes no CUDA header. The building blocks (pooling, candidate-gather logits,
/// index remapping, routing) are exposed on device pointers so other pipelines can reuse them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/api.h"
#include "reference/problem.h"
#include "reference/status.h"

namespace indexlab::cuda {

// ---- Capabilities ---------------------------------------------------------------------------

/// Whether the sm90 kernels of `path` (kHisa, kMisa, kMisaDagger; kDsa forwards to can_implement)
/// take this problem; otherwise an error naming the field (precision, h, d, k, hisa_block, ...).
/// Also runs ref::validate and ref::validate_options.
Status can_implement_sparse(ref::Path path, const ref::Inputs& in, const ref::Options& opt);
Status can_implement_sparse(ref::Path path, const ref::PagedInputs& in, const ref::Options& opt);

// ---- Host entry points (copy in, run, copy out), fp8 ----------------------------------------
// Each fills out->nq, k, index [nq, k] (canonical order, -1 padding), score [nq, k] (the kernel's
// own fp32 score of each selected key, -inf at padding), active_heads for MISA paths, and on
// opt.want_logits the path's final scores as dense logits (-inf where not a candidate).
// Paged: relative indices are positions in the sequence, absolute ones physical cache slots.

Status hisa_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out);
Status hisa_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out);
Status misa_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out);
Status misa_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out);
Status misa_dagger_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out);
Status misa_dagger_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out);

/// Dispatch on path (kDsa -> dsa_fp8 / dsa_paged_fp8).
Status run_sparse(ref::Path path, const ref::Inputs& in, const ref::Options& opt, ref::Result* out);
Status run_sparse(ref::Path path, const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out);

// ---- Device building blocks -----------------------------------------------------------------

/// Block pooling (SPEC 4.2 / 5.1) on device pointers. Block t pools keys [begin[t], end[t])
/// (flat: indices into k; paged: positions of sequence seq[t] through block_table, 64-token pages
/// of SPEC 1). Arithmetic (reference/emulate_sm90_sparse.h emulates it bit for bit):
///   acc[x]  = sum over keys j ascending of (double)s[j] * (double)e4m3(k[j, x])   (fp64 adds)
///   mean[x] = (float)acc[x] / (float)(end - begin)                              (IEEE fp32 div)
///   requantized: scale = max(amax / 448, 1e-10), code = e4m3 satfinite(mean / scale).
struct PoolParams {
  const uint8_t* k = nullptr;            // flat keys [nk, d]
  const float* k_scale = nullptr;        // [nk]
  int64_t nk = 0;
  const uint8_t* cache = nullptr;        // paged cache [num_pages, 64 * (d + 4)]
  const int32_t* block_table = nullptr;  // [batch, max_pages]
  int64_t max_pages = 0, num_pages = 0;
  const int32_t* begin = nullptr;        // [nblocks]
  const int32_t* end = nullptr;          // [nblocks]
  const int32_t* seq = nullptr;          // [nblocks] paged only
  int64_t nblocks = 0;
  int d = 0;
  float* pooled_f32 = nullptr;           // [nblocks, d] means (may be null)
  uint8_t* pooled_codes = nullptr;       // [nblocks, d] re-quantized e4m3 (may be null)
  float* pooled_scale = nullptr;         // [nblocks] (with pooled_codes)
  void* stream = nullptr;
};
Status launch_pool_fp8(const PoolParams& p);

/// fp8 logits of listed candidate keys, bit-identical to the DSA logits kernel for the same
/// (query, key) pair. Row r's column c names a key either through tiles of 64 consecutive keys
/// (tile mode: key = tile_start[r * max_tiles + c / 64] + c % 64, tile_start -1 = no tile) or
/// through a list (list mode: key = cand[r * ncand + c], -1 = none). A key is scored only when
/// lo[r] <= key < hi[r] (flat: ks/ke; paged: positions, lo = 0); every other column gets -inf.
/// Paged keys are positions of sequence r / next_n, looked up through block_table.
struct GatherLogitsParams {
  const uint8_t* q = nullptr;            // [nq, h, d] e4m3
  const float* w = nullptr;              // [nq, h]
  const uint8_t* k = nullptr;            // flat keys [nk, d]
  const float* k_scale = nullptr;        // [nk]
  int64_t nk = 0;
  const uint8_t* cache = nullptr;        // paged cache
  const int32_t* block_table = nullptr;  // [batch, max_pages]
  int64_t max_pages = 0, num_pages = 0;
  int next_n = 1;
  const int32_t* lo = nullptr;           // [nq]
  const int32_t* hi = nullptr;           // [nq]
  const int32_t* tile_start = nullptr;   // tile mode: [nq, max_tiles]
  int64_t max_tiles = 0;
  const int32_t* cand = nullptr;         // list mode: [nq, ncand]
  int64_t ncand = 0;
  float* logits = nullptr;               // [nq, ld]; columns [0, max_tiles * 64 or ncand) written
  int64_t ld = 0, nq = 0;
  int h = 0, d = 0;
  void* stream = nullptr;
};
Status launch_gather_logits_fp8(const GatherLogitsParams& p);

/// Maps top-k output columns back to keys in place: index[r, t] = col < 0 ? -1 :
/// key(col) - base[r] (key as in GatherLogitsParams' tile or list mode; base may be null = 0).
/// Paged absolute output: with block_table set, key positions become physical slots.
struct RemapParams {
  int32_t* index = nullptr;              // [rows, k]
  int64_t rows = 0;
  int k = 0;
  const int32_t* tile_start = nullptr;
  int64_t max_tiles = 0;
  const int32_t* cand = nullptr;
  int64_t ncand = 0;
  const int32_t* base = nullptr;         // [rows] subtracted (relative indices), or null
  const int32_t* block_table = nullptr;  // paged absolute: position -> page * 64 + slot
  int64_t max_pages = 0;
  int next_n = 1;
  void* stream = nullptr;
};
Status launch_remap_indices(const RemapParams& p);

// ---- Benchmark fixtures -----------------------------------------------------------------------

/// A synthetic problem for side-by-side timing of the paths on one card.
/// Flat (batch == 0): sq queries at the end of one sequence of sk keys (query i sees keys
/// [0, sk - sq + i + 1)); sq == sk is causal prefill. Paged (batch > 0): batch sequences of sk
/// tokens, next_n queries each, pages shuffled.
struct SparseBenchSpec {
  ref::Path path = ref::Path::kDsa;
  int64_t sq = 0, sk = 0;
  int64_t batch = 0;
  int next_n = 1;
  int h = 64, d = 128, k = 2048;
  ref::Options opt;
  uint64_t seed = 1;
};
/// run() times the whole path; Workload::stages receives per-stage times of the same run
/// (e.g. "router", "pool", "block_scores", "rescore", "topk").
Status make_sparse_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out);

}  // namespace indexlab::cuda
