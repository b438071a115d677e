/// Internal (host-only) declarations shared by the sparse-path sources of cuda/.
#pragma once
#include <memory>

#include "cuda/sparse.h"

namespace indexlab::cuda::detail {

/// Per-path benchmark factories behind make_sparse_workload (cuda/sparse_bench.cu).
Status make_hisa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out);   // sm90_hisa.cu
Status make_misa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out);   // sm90_misa.cu (kMisa, kMisaDagger)
Status make_dsa_workload(const SparseBenchSpec& spec, std::unique_ptr<Workload>* out);    // sparse_bench.cu

}  // namespace indexlab::cuda::detail
