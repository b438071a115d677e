/// Built-in synthetic workloads with structure (sinks, local windows, needles, specialised heads)
/// and the adversarial value and range classes of SPEC section 10.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "reference/problem.h"

namespace indexlab::compare {

struct WorkloadSpec {
  std::string kind = "gaussian";
  int64_t nq = 64;     // queries: the last nq positions of a causal prefill over nk keys
  int64_t nk = 4096;
  int h = 64, d = 128, k = 2048;
  uint64_t seed = 1;
};

/// Kinds: gaussian, sinks_local, needles, specialized_heads (structured); ties, narrow_range,
/// low_bits, short_rows, packed (adversarial). Each fills raw fp32 inputs and ks/ke/seq_end.
Status make_workload(const WorkloadSpec& spec, ref::RawInputs* out);
const std::vector<std::string>& workload_kinds();
/// One-line description of a kind, for --help and reports.
std::string workload_description(const std::string& kind);

/// Lays a flat problem's keys out as a paged decode cache: nq / next_n sequences (nq must be a
/// multiple of next_n); sequence b holds keys [0, ctx_b) of the flat buffer with ctx_b =
/// max(ke) of its rows, stored in 64-token pages in shuffled physical order (a few spare pages
/// poisoned). Each row keeps its q and w.
Status to_paged(const ref::Inputs& flat, int next_n, uint64_t seed, ref::PagedInputs* out);

}  // namespace indexlab::compare
