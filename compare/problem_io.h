/// Problems, inputs and candidate outputs as files (problem.json + .npz / .npy / .safetensors),
/// and repro directories that `indexlab replay` judges again.
#pragma once
#include <string>

#include "compare/judge.h"
#include "compare/problem.h"
#include "compare/tensor_io.h"

namespace indexlab::compare {

/// Tensor names of an inputs file. Flat: q [nq,h,d], k [nk,d], w [nq,h], ks [nq], ke [nq], and
/// optionally k_scale [nk], q_scale [nq,h], seq_end [nq]. Paged: q [rows,h,d], w [rows,h],
/// kv_cache (uint8 bytes, first dim num_pages, num_pages * page_bytes in all), block_table
/// [batch,max_pages], context_lens [batch], optionally q_scale. q and k may be stored as F32
/// values, or as BF16 / F8_E4M3 codes of the problem's precision.
Status inputs_to_tensors(const Problem& p, TensorMap* out);
/// Attaches the tensors to a problem whose description came from problem.json; `file` names the
/// source in errors.
Status inputs_from_tensors(const TensorMap& t, const std::string& file, Problem* p);

/// Candidate outputs: indices [nq, k] (int32 or int64; -1 = empty), optional logits [nq, cols].
Status output_to_tensors(const CandidateOutput& c, TensorMap* out);
Status output_from_tensors(const TensorMap& t, const std::string& file, const Problem& p,
                           CandidateOutput* out);

/// Loads problem.json and an inputs file into a problem.
Status load_problem(const std::string& problem_json, const std::string& inputs_file, Problem* p);
/// Writes problem.json and inputs.npz into dir (created if missing).
Status save_problem(const Problem& p, const std::string& dir);

/// A repro directory: problem.json, inputs.npz, candidate.npz and report.json.
Status write_repro(const std::string& dir, const Problem& p, const CandidateOutput& c,
                   const Report* report);
Status read_repro(const std::string& dir, Problem* p, CandidateOutput* c);

}  // namespace indexlab::compare
