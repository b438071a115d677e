/// Judging a candidate against the reference (SPEC 9): selections, logits, determinism.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compare/problem.h"

namespace indexlab::compare {

/// What a candidate produced for a problem.
struct CandidateOutput {
  int64_t nq = 0;
  int k = 0;
  ref::IndexBase index_base = ref::IndexBase::kRelative;
  std::vector<int32_t> index;   // [nq, k] selected keys in any order; -1 = empty slot
  int64_t logits_cols = 0;
  std::vector<float> logits;    // [nq, logits_cols] optional
  /// MISA / MISA-dagger, optional: the heads the candidate routed each row to, [nq, heads]
  /// ascending. When they differ from the reference's, the judge checks them against the router
  /// scores' drift bound and judges the row under the candidate's heads.
  int heads = 0;
  std::vector<int32_t> active_heads;
};

/// A ref::Result (or a kernel's result in the same struct) as a candidate output; moves the
/// indices and logits out of `r`.
CandidateOutput to_candidate_output(ref::Result&& r, ref::IndexBase base);

/// How far a candidate's scores may drift from the exact ones (the bound-aware rule). The bound
/// of key j for query i is
///   dot_rel * sum_h |w_ih| s_j sum_d |q_ihd k_jd|  +  epi_rel * sum_h |w_ih| s_j relu(dot_ihj)
///   + abs_floor
/// plus one fp32 rounding of the score. abs_floor covers fp32 underflow: each of the epilogue's
/// operations may lose up to 2^-150 in the subnormal range, whatever the relative terms say.
struct Tolerance {
  std::string name = "exact";
  double dot_rel = 0.0;
  double epi_rel = 0.0;
  double abs_floor = 0.0;
};
/// Named models: "exact" (0), "fp32" (fp32 dot and epilogue: D 2^-24, (H+3) 2^-24),
/// "tensor_core" (Hopper wgmma truncation, SPEC 8: ceil(D/32) * 34 * 2^-13 of the absolute dot,
/// plus the fp32 epilogue). The fp8 tensor-core model is a worst case, so it is loose. Both
/// non-exact models carry abs_floor = (2H + D + 4) 2^-149.
Status tolerance_by_name(const std::string& name, int h, int d, Tolerance* out);

struct JudgeOptions {
  int64_t sample_rows = 0;   // judge a seeded random subset of this many rows (0: all)
  uint64_t seed = 1;
  Tolerance tolerance;
  int worst_rows = 5;        // rows reported in detail
  /// Optional precomputed reference for the judged rows (rows_to_judge order), computed with
  /// want_logits and relative indices; saves recomputing it when many candidates share a problem.
  const ref::Result* reference = nullptr;
};

/// The verdict on one row.
struct RowVerdict {
  int64_t row = 0;
  bool valid = true;          // every index unique, in range and visible
  bool exact = false;         // same set as the reference
  bool tie_tolerant = false;  // same multiset of reference scores, all keys above the K-th present
  bool bound_aware = false;   // as tie_tolerant, keys within the bound of the K-th interchangeable
  double recall = 1.0;
  bool ref_ambiguous = false; // the reference flagged a rounding it could not decide
  std::string diagnosis;      // names the missing and extra keys, their scores, the K-th, ulps
};

struct SelectionSummary {
  int64_t rows_total = 0, rows_judged = 0;
  int64_t exact = 0, tie_tolerant = 0, bound_aware = 0, invalid = 0;
  double min_recall = 1.0, mean_recall = 1.0;
  std::vector<RowVerdict> worst;  // the worst rows, lowest recall first
  bool passed(bool require_exact) const {
    return invalid == 0 && (require_exact ? exact == rows_judged : bound_aware == rows_judged);
  }
};

struct LogitsSummary {
  bool present = false;
  int64_t inf_mismatches = 0;   // the -inf pattern must match exactly
  std::string first_inf_mismatch;
  /// HISA and MISA-dagger: cells whose -inf differs only because a key's candidate membership
  /// (its block kept; its place in the top K1 by MISA score) rests on a score within the drift
  /// bound of the boundary; not counted as mismatches.
  int64_t decision_cells = 0;
  int64_t compared = 0;         // finite pairs compared
  double max_abs = 0.0, max_rel = 0.0;
  uint64_t max_ulp = 0;
  double frac_bit_exact = 1.0;
  double deepgemm_diff = 0.0;   // 1 - 2 sum(xy) / sum(x^2 + y^2), fp64
  std::string worst;            // where max_ulp was seen
};

struct Report {
  std::string problem, candidate;
  SelectionSummary selection;
  LogitsSummary logits;
  int64_t rerouted_rows = 0;    // MISA / dagger rows judged under the candidate's own heads
  int reruns = 0;               // determinism: reruns compared (0: not checked)
  bool deterministic = true;
  std::string determinism_detail;
  nlohmann::json to_json() const;
};

/// The rows judged for a problem of nq rows (all, or a sorted seeded sample).
std::vector<int64_t> rows_to_judge(int64_t nq, const JudgeOptions& o);

/// Judges a candidate's output on a problem. The reference runs on the sampled rows only.
Status judge(const Problem& p, const CandidateOutput& cand, const JudgeOptions& o, Report* out);

/// Compares two outputs of the same candidate bitwise; detail names the first difference.
bool bitwise_equal(const CandidateOutput& a, const CandidateOutput& b, std::string* detail);

}  // namespace indexlab::compare
