/// A verification problem: one path with its options on flat or paged inputs, and its JSON form.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "reference/problem.h"

namespace indexlab::compare {

struct Problem {
  std::string name;            // workload or file name, for reports
  ref::Path path = ref::Path::kDsa;
  ref::Options options;
  bool paged = false;
  ref::Inputs flat;            // when !paged
  ref::PagedInputs paged_in;   // when paged

  int64_t rows() const { return paged ? paged_in.rows() : flat.shape.nq; }
  int k() const { return paged ? paged_in.k : flat.shape.k; }
  int h() const { return paged ? paged_in.h : flat.shape.h; }
  int d() const { return paged ? paged_in.d : flat.shape.d; }
  ref::Precision precision() const { return paged ? paged_in.precision : flat.precision; }
  /// Width of a logits row: nk (flat) or max_pages * page_tokens (paged, by position).
  int64_t logits_cols() const {
    return paged ? paged_in.max_pages * paged_in.page_tokens : flat.shape.nk;
  }
};

/// Problem description as JSON (everything but the tensors), e.g.
/// {"path":"hisa","layout":"flat","precision":"fp8","nq":8,"nk":4096,"h":64,"d":128,"k":2048,
///  "index_base":"relative","hisa":{"block":128,"m":64,...},"misa":{...},"dagger_k1":8192}
nlohmann::json problem_to_json(const Problem& p);
/// Reads the description; shapes of the tensors are checked later when they are attached.
Status problem_from_json(const nlohmann::json& j, Problem* p);
Status options_from_json(const nlohmann::json& j, ref::Options* o);
nlohmann::json options_to_json(const ref::Options& o);

/// Runs the reference on the problem (flat or paged).
Status run_reference(const Problem& p, const ref::Options& o, ref::Result* out);

/// A flat view of any problem, as the judge sees it: paged problems are laid out flat
/// (ref::flatten_paged); col_base[i] is subtracted from a key to get its logits column (0 for
/// flat problems, ks[i] for paged ones, whose logits are by position), and slot_of_key maps flat
/// keys to physical cache slots (paged only; absolute indices of paged problems are slots).
struct FlatView {
  ref::Inputs in;
  std::vector<int64_t> col_base;     // [nq]
  std::vector<int64_t> slot_of_key;  // [nk] paged only
  bool paged = false;
};
Status flat_view(const Problem& p, FlatView* out);

/// The rows of a flat problem kept (ascending), as a smaller flat problem sharing nothing.
ref::Inputs restrict_rows(const ref::Inputs& in, const std::vector<int64_t>& rows);

}  // namespace indexlab::compare
