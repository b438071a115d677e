/// The registry of candidates: reference paths, CUDA kernels when built, and users' own kernels.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "compare/judge.h"
#include "compare/problem.h"

namespace indexlab::compare {

/// A candidate computes a selection (and optionally logits) for a problem.
struct Candidate {
  std::string name;         // e.g. "ref.hisa", "cuda.dsa", "my.kernel"
  std::string description;
  /// Says whether the candidate handles a problem; on false, `why` says what it does not support.
  std::function<bool(const Problem&, std::string* why)> supports;
  /// Runs on the problem's inputs; must fill out->index [rows, k] in the problem's index base.
  std::function<Status(const Problem&, CandidateOutput*)> run;
  /// Tolerance model for the bound-aware rule (see tolerance_by_name).
  std::string tolerance = "exact";
  /// True when the candidate needs a GPU (skipped with a reason where none is present).
  bool needs_gpu = false;
};

class Registry {
 public:
  /// The process-wide registry, with nothing in it until register_builtin() or add().
  static Registry& global();
  /// Adds a candidate; an empty name, a missing run function or a duplicate name is an error.
  Status add(Candidate c);
  const Candidate* find(const std::string& name) const;
  std::vector<const Candidate*> all() const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::unique_ptr<Candidate>> items_;
};

/// Registers the reference paths (ref.dsa, ref.hisa, ref.misa, ref.misa_dagger: each supports
/// problems of its own path, any precision and layout) and, when indexlab was built with CUDA,
/// the Hopper kernels (cuda.*). Idempotent.
void register_builtin(Registry* r);

/// Runs a candidate `reruns` times (at least once), checks the outputs are bitwise identical
/// and judges the first against the reference.
Status verify_candidate(const Candidate& c, const Problem& p, JudgeOptions jo, int reruns, Report* out,
                        CandidateOutput* first_output = nullptr);

}  // namespace indexlab::compare
