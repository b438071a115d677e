/// Planted-bug candidates for the fuzzer's tests (never part of the library): each is the
/// reference with one known defect.
#pragma once
#include <csignal>
#include <cstdlib>
#include <string>

#include "compare/registry.h"
#include "fuzz/campaign.h"

namespace indexlab::testing {

inline Status reference_as_candidate(const compare::Problem& p, bool logits, compare::CandidateOutput* out) {
  ref::Options o = p.options;
  o.want_logits = logits;
  ref::Result r;
  INDEXLAB_RETURN_IF_ERROR(compare::run_reference(p, o, &r));
  if (!logits) r.logits_cols = 0;
  *out = compare::to_candidate_output(std::move(r), p.options.index_base);
  return Status::Ok();
}

inline bool flat_only(const compare::Problem& p, std::string* why) {
  if (!p.paged) return true;
  if (why) *why = "flat problems only";
  return false;
}

/// A reference variant with an off-by-one in ke: every row also sees key ke (when it exists).
inline compare::Candidate planted_ke_off_by_one() {
  compare::Candidate c;
  c.name = "planted.ke_off_by_one";
  c.supports = flat_only;
  c.run = [](const compare::Problem& p, compare::CandidateOutput* out) {
    compare::Problem q = p;
    for (int64_t i = 0; i < q.flat.shape.nq; ++i) {
      q.flat.ke[i] = static_cast<int32_t>(std::min<int64_t>(q.flat.ke[i] + 1, q.flat.shape.nk));
      if (!q.flat.seq_end.empty()) q.flat.seq_end[i] = std::max(q.flat.seq_end[i], q.flat.ke[i]);
    }
    return reference_as_candidate(q, false, out);
  };
  return c;
}

/// A top-k that drops ties: when the K-th score is shared with an unselected key, every selected
/// key holding that score is dropped (its slot becomes -1).
inline compare::Candidate planted_topk_drops_ties() {
  compare::Candidate c;
  c.name = "planted.topk_drops_ties";
  c.run = [](const compare::Problem& p, compare::CandidateOutput* out) {
    ref::Options o = p.options;
    o.want_logits = true;
    ref::Result r;
    INDEXLAB_RETURN_IF_ERROR(compare::run_reference(p, o, &r));
    compare::FlatView fv;
    INDEXLAB_RETURN_IF_ERROR(compare::flat_view(p, &fv));
    const int K = r.k;
    for (int64_t i = 0; i < r.nq; ++i) {
      const float kth = r.score[i * K + K - 1];
      if (r.index[i * K + K - 1] < 0) continue;  // fewer than K: no threshold
      int64_t tied = 0;
      for (int64_t j = fv.in.ks[i]; j < fv.in.ke[i]; ++j)
        tied += r.logits[i * r.logits_cols + (j - fv.col_base[i])] == kth;
      int64_t sel_tied = 0;
      for (int s = 0; s < K; ++s) sel_tied += r.score[i * K + s] == kth;
      if (tied == sel_tied) continue;
      for (int s = 0; s < K; ++s)
        if (r.score[i * K + s] == kth) r.index[i * K + s] = -1;
    }
    out->nq = r.nq;
    out->k = K;
    out->index_base = p.options.index_base;
    out->index = std::move(r.index);
    return Status::Ok();
  };
  return c;
}

/// A candidate that reads past ke: it scores keys [ks, ke] inclusive; where ke = nk the read leaves
/// the key buffer, which this candidate turns into the segfault a kernel would risk.
inline compare::Candidate planted_reads_past_ke() {
  compare::Candidate c;
  c.name = "planted.reads_past_ke";
  c.supports = flat_only;
  c.run = [](const compare::Problem& p, compare::CandidateOutput* out) {
    compare::Problem q = p;
    for (int64_t i = 0; i < q.flat.shape.nq; ++i) {
      if (q.flat.ke[i] >= q.flat.shape.nk) std::raise(SIGSEGV);
      q.flat.ke[i] += 1;
      if (!q.flat.seq_end.empty()) q.flat.seq_end[i] = std::max(q.flat.seq_end[i], q.flat.ke[i]);
    }
    return reference_as_candidate(q, false, out);
  };
  return c;
}

/// A fuzz target around a planted candidate: DSA problems of the default generators.
inline fuzz::Target planted_target(compare::Candidate c) {
  fuzz::Target t;
  t.name = c.name;
  t.candidate = std::move(c);
  t.gen.paths = {ref::Path::kDsa};
  t.isolate = false;
  return t;
}

}  // namespace indexlab::testing
