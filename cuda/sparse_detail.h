/// Internal (host-only) declarations shared by the sparse-path sources of cuda/.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/sparse.h"

namespace indexlab::cuda::detail {

/// Per-path benchmark factories behind make_sparse_workload (cuda/sparse_bench.cu).
Status make_hisa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out);   // sm90_hisa.cu
Status make_misa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out);   // sm90_misa.cu (kMisa, kMisaDagger)
Status make_dsa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out);    // sparse_bench.cu

}  // namespace indexlab::cuda::detail

namespace indexlab::cuda::detail {

/// Synthetic fp8 problem of a SparseBenchSpec as stored bytes (e4m3 codes, fp32 scales and
/// weights), shared by the benchmark fixtures of every path so that they time the same data.
/// Codes are random finite e4m3 of magnitude ~[2^-3, 2^3) (never 0), scales in [0.5, 1.5),
/// weights in [-0.7, 1.3).
struct SyntheticFp8 {
  int64_t rows = 0;                 // sq (flat) or batch * next_n (paged)
  std::vector<uint8_t> q;           // [rows, h, d]
  std::vector<float> w;             // [rows, h]
  std::vector<float> q_scale;       // [rows, h] (q-norm routing)
  // flat
  std::vector<uint8_t> k;           // [sk, d]
  std::vector<float> k_scale;       // [sk]
  std::vector<int32_t> ks, ke;      // [rows]: [0, sk - sq + i + 1)
  // paged (batch sequences of sk tokens, shuffled pages)
  int64_t max_pages = 0, num_pages = 0;
  std::vector<uint8_t> cache;       // [num_pages, 64 * (d + 4)]
  std::vector<int32_t> block_table; // [batch, max_pages]
  std::vector<int32_t> context_lens;// [batch]
  double pairs = 0;                 // visible (query, key) pairs
};
Status make_synthetic_fp8(const SparseBenchSpec& spec, SyntheticFp8* out);

}  // namespace indexlab::cuda::detail
