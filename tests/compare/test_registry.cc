/// Tests of compare/registry.h: adding candidates, the built-in reference candidates, a user's
/// kernel registered in a few lines, and deliberately broken candidates that verify_candidate
/// must catch with the right diagnosis.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "compare/judge.h"
#include "compare/problem.h"
#include "compare/registry.h"
#include "compare/workloads.h"
#include "reference/numerics.h"
#include "tests/common/random_problem.h"

namespace indexlab::compare {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

Candidate named(const std::string& name) {
  Candidate c;
  c.name = name;
  c.run = [](const Problem&, CandidateOutput*) { return Status::Ok(); };
  return c;
}

/// Runs the DSA reference on (a modified copy of) flat inputs, as a candidate output.
Status run_dsa_on(const ref::Inputs& in, const ref::Options& opt, CandidateOutput* out,
                  bool want_logits = false) {
  ref::Options o = opt;
  o.want_logits = want_logits;
  ref::Result r;
  INDEXLAB_RETURN_IF_ERROR(ref::run(ref::Path::kDsa, in, o, &r));
  out->nq = r.nq;
  out->k = r.k;
  out->index_base = opt.index_base;
  out->index = std::move(r.index);
  out->logits_cols = r.logits_cols;
  out->logits = std::move(r.logits);
  return Status::Ok();
}

/// verify_candidate with every non-exact row reported.
Report verify(const Candidate& c, const Problem& p, int reruns = 1) {
  JudgeOptions o;
  o.worst_rows = 1000;
  Report r;
  const Status st = verify_candidate(c, p, o, reruns, &r);
  EXPECT_TRUE(st.ok()) << st.message();
  return r;
}

const RowVerdict* find_row(const Report& r, int64_t row) {
  for (const RowVerdict& v : r.selection.worst)
    if (v.row == row) return &v;
  return nullptr;  // exact
}

// ---- Registry -----------------------------------------------------------------------------

TEST(Registry, AddRejectsEmptyNameMissingRunAndDuplicates) {
  Registry reg;
  Status st = reg.add(named(""));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "needs a name")) << st.message();

  Candidate no_run;
  no_run.name = "my.no_run";
  st = reg.add(no_run);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "'my.no_run' has no run function")) << st.message();

  ASSERT_TRUE(reg.add(named("my.kernel")).ok());
  st = reg.add(named("my.kernel"));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "'my.kernel' is already registered")) << st.message();

  EXPECT_EQ(reg.names(), std::vector<std::string>{"my.kernel"});
  EXPECT_EQ(reg.all().size(), 1u);
  EXPECT_EQ(reg.find("my.no_run"), nullptr);
  EXPECT_EQ(Registry::global().find("my.kernel"), nullptr);  // a local registry stays local
}

TEST(Registry, MissingSupportsMeansEverything) {
  Registry reg;
  ASSERT_TRUE(reg.add(named("my.any")).ok());
  const Candidate* c = reg.find("my.any");
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(static_cast<bool>(c->supports));
  Problem p;
  p.path = ref::Path::kMisaDagger;
  std::string why;
  EXPECT_TRUE(c->supports(p, &why));
}

TEST(Registry, BuiltinAddsTheReferencePathsAndIsIdempotent) {
  Registry reg;
  ASSERT_TRUE(reg.add(named("my.first")).ok());
  register_builtin(&reg);
  std::vector<std::string> names = reg.names();
  ASSERT_GE(names.size(), 5u);
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + 5),
            (std::vector<std::string>{"my.first", "ref.dsa", "ref.hisa", "ref.misa", "ref.misa_dagger"}));
  for (const char* n : {"ref.dsa", "ref.hisa", "ref.misa", "ref.misa_dagger"}) {
    const Candidate* c = reg.find(n);
    ASSERT_NE(c, nullptr) << n;
    EXPECT_EQ(c->tolerance, "exact");
    EXPECT_FALSE(c->needs_gpu);
    EXPECT_FALSE(c->description.empty());
  }
  register_builtin(&reg);
  EXPECT_EQ(reg.names(), names);
}

TEST(Registry, ReferenceCandidateRefusesAnotherPath) {
  Registry reg;
  register_builtin(&reg);
  std::mt19937_64 rng(testing::test_seed());
  Problem p;  // a DSA problem
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 4, 64, 4, 16, 8);
  std::string why;
  EXPECT_FALSE(reg.find("ref.hisa")->supports(p, &why));
  EXPECT_EQ(why, "computes hisa, the problem asks for dsa");
  Report r;
  const Status st = verify_candidate(*reg.find("ref.misa"), p, {}, 1, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "candidate 'ref.misa' does not support this problem: computes misa, "
                                     "the problem asks for dsa"))
      << st.message();
  EXPECT_TRUE(reg.find("ref.dsa")->supports(p, &why));
}

TEST(Registry, EachReferencePassesOnItsOwnPathFlatAndPaged) {
  Registry reg;
  register_builtin(&reg);
  std::mt19937_64 rng(testing::test_seed());
  const ref::Inputs flat = testing::random_inputs(rng, ref::Precision::kFp8, 6, 180, 8, 16, 16);
  for (ref::Path path : {ref::Path::kDsa, ref::Path::kHisa, ref::Path::kMisa, ref::Path::kMisaDagger}) {
    for (bool paged : {false, true}) {
      Problem p;
      p.path = path;
      p.options.hisa_block = 16;
      p.options.hisa_m = 4;
      p.options.misa_heads = 3;
      p.options.misa_block = 32;
      p.options.dagger_k1 = 40;
      p.options.index_base = paged ? ref::IndexBase::kAbsolute : ref::IndexBase::kRelative;
      p.paged = paged;
      if (paged) {
        ASSERT_TRUE(to_paged(flat, 1, 3, &p.paged_in).ok());
      } else {
        p.flat = flat;
      }
      const Candidate* c = reg.find(std::string("ref.") + ref::path_name(path));
      ASSERT_NE(c, nullptr);
      const Report r = verify(*c, p, /*reruns=*/2);
      EXPECT_EQ(r.selection.exact, 6) << c->name << (paged ? " paged" : " flat");
      EXPECT_TRUE(r.logits.present);
      EXPECT_EQ(r.logits.inf_mismatches, 0);
      EXPECT_EQ(r.logits.frac_bit_exact, 1.0);
      EXPECT_TRUE(r.deterministic);
      EXPECT_EQ(r.reruns, 1);
      EXPECT_EQ(r.candidate, c->name);
    }
  }
}

TEST(Registry, VerifyCandidateOutsideARegistryDoesNotThrow) {
  // A Candidate built by hand and passed straight to verify_candidate, without Registry::add
  // (which fills in a missing `supports`).
  std::mt19937_64 rng(testing::test_seed());
  Problem p;
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 4, 64, 4, 16, 8);
  Candidate c;
  c.name = "my.unregistered";
  c.run = [](const Problem& q, CandidateOutput* out) { return run_dsa_on(q.flat, q.options, out); };
  Report r;
  Status st;
  // Regression: verify_candidate once called an empty `supports` (std::bad_function_call); an
  // empty one now means "supports everything", as in Registry::add.
  bool threw = true;
  EXPECT_NO_THROW({
    st = verify_candidate(c, p, {}, 1, &r);
    threw = false;
  });
  if (!threw && st.ok()) {
    EXPECT_EQ(r.selection.exact, 4);
  }
  Candidate no_run;
  no_run.name = "my.no_run";
  no_run.supports = [](const Problem&, std::string*) { return true; };
  // Likewise an empty `run` is an error Status, not a throw.
  EXPECT_NO_THROW(st = verify_candidate(no_run, p, {}, 1, &r));
}

// ---- the README example ---------------------------------------------------------------------

TEST(RegistryExample, UserKernelInAFewLines) {
  // My kernel: DSA scores in plain fp32 loops, then a brute-force sort of each row.
  compare::Candidate mine;
  mine.name = "my.bruteforce_dsa";
  mine.tolerance = "fp32";  // scores computed in fp32: judged with the fp32 error model
  mine.run = [](const compare::Problem& p, compare::CandidateOutput* out) {
    const ref::Inputs& in = p.flat;  // an fp32 problem: no key scales
    const int H = in.shape.h, D = in.shape.d, K = in.shape.k;
    out->nq = in.shape.nq;
    out->k = K;
    out->index.assign(out->nq * K, -1);  // -1: empty slot
    for (int64_t i = 0; i < in.shape.nq; ++i) {
      std::vector<std::pair<float, int32_t>> row;  // (score, key relative to ks)
      for (int32_t j = in.ks[i]; j < in.ke[i]; ++j) {
        float score = 0.0f;
        for (int h = 0; h < H; ++h) {
          float dot = 0.0f;
          for (int d = 0; d < D; ++d) dot += in.q[(i * H + h) * D + d] * in.k[j * D + d];
          score += in.w[i * H + h] * std::max(0.0f, dot);
        }
        row.emplace_back(score, j - in.ks[i]);
      }
      std::sort(row.begin(), row.end(), std::greater<>());
      for (int t = 0; t < K && t < static_cast<int>(row.size()); ++t) out->index[i * K + t] = row[t].second;
    }
    return Status::Ok();
  };
  compare::Registry registry;
  ASSERT_TRUE(registry.add(mine).ok());

  // Verify it on a random fp32 problem: 16 queries over 300 keys, 8 heads of dim 32, top-64.
  std::mt19937_64 rng(testing::test_seed());
  compare::Problem problem;
  problem.flat = testing::random_inputs(rng, ref::Precision::kFp32, 16, 300, 8, 32, 64);
  compare::Report report;
  ASSERT_TRUE(compare::verify_candidate(*registry.find("my.bruteforce_dsa"), problem, {}, /*reruns=*/2, &report).ok());
  EXPECT_TRUE(report.selection.passed(/*require_exact=*/false)) << report.to_json().dump(2);
  EXPECT_TRUE(report.deterministic);
}

// The example's verdict is not a tautology: the same kernel with one head's weight negated fails.
TEST(RegistryExample, TheExampleCanFail) {
  std::mt19937_64 rng(testing::test_seed());
  Problem problem;
  problem.flat = testing::random_inputs(rng, ref::Precision::kFp32, 16, 300, 8, 32, 64);
  Registry reg;
  Candidate wrong;
  wrong.name = "my.wrong";
  wrong.tolerance = "fp32";
  wrong.run = [](const Problem& p, CandidateOutput* out) {
    ref::Inputs in = p.flat;
    for (int64_t i = 0; i < in.shape.nq; ++i) in.w[i * in.shape.h + 1] *= -1.0f;
    return run_dsa_on(in, p.options, out);
  };
  ASSERT_TRUE(reg.add(wrong).ok());
  const Report r = verify(*reg.find("my.wrong"), problem);
  EXPECT_FALSE(r.selection.passed(false));
  EXPECT_LT(r.selection.mean_recall, 1.0);
}

// ---- deliberately broken candidates ---------------------------------------------------------

/// Ragged rows of lengths 6, 20, 34, 48 with K = 24: in the short rows every visible key, the one
/// at ks included, belongs to the reference selection.
Problem ragged_problem() {
  std::mt19937_64 rng(testing::test_seed());
  Problem p;
  p.name = "ragged";
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 16, 128, 4, 16, 24, /*causal=*/false);
  for (int64_t i = 0; i < 16; ++i) {
    p.flat.ks[i] = static_cast<int32_t>((i * 29) % 80);
    p.flat.ke[i] = p.flat.ks[i] + 6 + static_cast<int32_t>(i % 4) * 14;
  }
  return p;
}

/// Causal rows of 249..256 keys with K = 32.
Problem causal_problem(uint64_t salt = 0) {
  std::mt19937_64 rng(testing::test_seed() + salt);
  Problem p;
  p.name = "causal";
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 8, 256, 4, 32, 32);
  return p;
}

TEST(BrokenCandidate, OffByOneInKsMissesTheKeyAtKs) {
  Registry reg;
  Candidate c;
  c.name = "broken.ks_plus_one";
  c.run = [](const Problem& p, CandidateOutput* out) {
    ref::Inputs in = p.flat;
    for (auto i = 0u; i < in.ks.size(); ++i) in.ks[i] += in.ks[i] < in.ke[i];  // bug: scans ks+1 .. ke
    INDEXLAB_RETURN_IF_ERROR(run_dsa_on(in, p.options, out));
    for (int64_t i = 0; i < out->nq; ++i)
      for (int s = 0; s < out->k; ++s)
        if (out->index[i * out->k + s] >= 0) out->index[i * out->k + s] += in.ks[i] - p.flat.ks[i];
    return Status::Ok();
  };
  ASSERT_TRUE(reg.add(c).ok());
  const Problem p = ragged_problem();
  ref::Result truth;
  ASSERT_TRUE(ref::run(ref::Path::kDsa, p.flat, {}, &truth).ok());
  const Report r = verify(*reg.find("broken.ks_plus_one"), p);
  EXPECT_EQ(r.selection.invalid, 0);
  EXPECT_FALSE(r.selection.passed(false));
  int rows_with_key_at_ks = 0, short_rows = 0;
  for (int64_t i = 0; i < 16; ++i) {
    const int32_t* sel = &truth.index[i * 24];
    const bool has_ks = std::find(sel, sel + 24, 0) != sel + 24;
    const RowVerdict* v = find_row(r, i);
    if (!has_ks) {
      EXPECT_EQ(v, nullptr) << "row " << i << " does not need the key at ks: " << v->diagnosis;
      continue;
    }
    ++rows_with_key_at_ks;
    ASSERT_NE(v, nullptr) << "row " << i;
    EXPECT_TRUE(v->valid);
    EXPECT_LT(v->recall, 1.0);
    EXPECT_TRUE(contains(v->diagnosis, "missing key 0 (score ")) << "row " << i << ": " << v->diagnosis;
    // In a row of at most K keys every key must be selected. (In a longer row the key at ks may
    // tie with the (K+1)-th, e.g. at score 0, and then the swap is legitimately tie-tolerant.)
    if (p.flat.ke[i] - p.flat.ks[i] <= 24) {
      EXPECT_FALSE(v->bound_aware) << "row " << i;
      ++short_rows;
    }
  }
  EXPECT_GE(short_rows, 8);  // the rows of 6 and 20 keys
  EXPECT_GE(rows_with_key_at_ks, short_rows);
}

TEST(BrokenCandidate, OneHeadDroppedLowersRecall) {
  Registry reg;
  Candidate c;
  c.name = "broken.no_head_0";
  c.tolerance = "tensor_core";  // caught even under the loosest model
  c.run = [](const Problem& p, CandidateOutput* out) {
    ref::Inputs in = p.flat;
    for (int64_t i = 0; i < in.shape.nq; ++i) in.w[i * in.shape.h] = 0.0f;  // bug: head 0 left out
    return run_dsa_on(in, p.options, out);
  };
  ASSERT_TRUE(reg.add(c).ok());
  const Report r = verify(*reg.find("broken.no_head_0"), causal_problem());
  EXPECT_EQ(r.selection.invalid, 0);
  EXPECT_LT(r.selection.min_recall, 1.0);
  EXPECT_LT(r.selection.mean_recall, 1.0);
  EXPECT_LT(r.selection.bound_aware, r.selection.rows_judged);
  EXPECT_FALSE(r.selection.passed(false));
  ASSERT_FALSE(r.selection.worst.empty());
  EXPECT_TRUE(contains(r.selection.worst[0].diagnosis, "missing key")) << r.selection.worst[0].diagnosis;
  EXPECT_TRUE(contains(r.selection.worst[0].diagnosis, "extra key")) << r.selection.worst[0].diagnosis;

  // Where head 0 carries no weight anyway, the same candidate is exact.
  Problem no_head_0 = causal_problem();
  for (int64_t i = 0; i < 8; ++i) no_head_0.flat.w[i * 4] = 0.0f;
  EXPECT_EQ(verify(*reg.find("broken.no_head_0"), no_head_0).selection.exact, 8);
}

TEST(BrokenCandidate, OneWrongKeyIsNamedWithTheDroppedOne) {
  // The top key of each row is replaced with the lowest-scoring visible key.
  Registry reg;
  Candidate c;
  c.name = "broken.one_wrong";
  c.run = [](const Problem& p, CandidateOutput* out) {
    INDEXLAB_RETURN_IF_ERROR(run_dsa_on(p.flat, p.options, out, /*want_logits=*/true));
    for (int64_t i = 0; i < out->nq; ++i) {
      const float* l = &out->logits[i * out->logits_cols];
      const int32_t ks = p.flat.ks[i];
      const int32_t worst = static_cast<int32_t>(std::min_element(l + ks, l + p.flat.ke[i]) - l);
      out->index[i * out->k] = worst - ks;  // bug: K-1 right keys and one wrong
    }
    out->logits.clear();
    out->logits_cols = 0;
    return Status::Ok();
  };
  ASSERT_TRUE(reg.add(c).ok());
  const Problem p = causal_problem(1);
  ref::Options o;
  o.want_logits = true;
  ref::Result truth;
  ASSERT_TRUE(ref::run(ref::Path::kDsa, p.flat, o, &truth).ok());
  const Report r = verify(*reg.find("broken.one_wrong"), p);
  EXPECT_EQ(r.selection.invalid, 0);
  EXPECT_EQ(r.selection.tie_tolerant, 0);
  EXPECT_EQ(r.selection.bound_aware, 0);
  EXPECT_DOUBLE_EQ(r.selection.mean_recall, 31.0 / 32.0);
  ASSERT_EQ(r.selection.worst.size(), 8u);
  for (int64_t i = 0; i < 8; ++i) {
    const RowVerdict* v = find_row(r, i);
    ASSERT_NE(v, nullptr);
    const float* l = &truth.logits[i * truth.logits_cols];
    const int32_t top = truth.index[i * 32];
    const int32_t low = static_cast<int32_t>(std::min_element(l, l + p.flat.ke[i]) - l);
    const float kth = truth.score[i * 32 + 31];
    const std::string missing = "missing key " + std::to_string(top) + " (score ";
    const std::string missing_ulps = std::to_string(ref::ulp_distance(truth.score[i * 32], kth)) + " ulps from the K-th)";
    const std::string extra = "extra key " + std::to_string(low) + " (score ";
    const std::string extra_ulps = std::to_string(ref::ulp_distance(l[low], kth)) + " ulps from the K-th)";
    EXPECT_TRUE(contains(v->diagnosis, missing)) << v->diagnosis;
    EXPECT_TRUE(contains(v->diagnosis, missing_ulps)) << v->diagnosis << "\n  lacks " << missing_ulps;
    EXPECT_TRUE(contains(v->diagnosis, extra)) << v->diagnosis;
    EXPECT_TRUE(contains(v->diagnosis, extra_ulps)) << v->diagnosis << "\n  lacks " << extra_ulps;
    EXPECT_DOUBLE_EQ(v->recall, 31.0 / 32.0);
  }
}

/// Keys come in identical pairs (2m, 2m+1), so every score ties with its twin; K = 15 is odd, so
/// the K-th reference key (the lower of a pair) has its tied twin just outside the selection.
Problem paired_problem() {
  std::mt19937_64 rng(testing::test_seed());
  Problem p;
  p.name = "pairs";
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 8, 128, 4, 16, 15);
  ref::Inputs& in = p.flat;
  const int D = in.shape.d;
  for (int64_t j = 0; j + 1 < in.shape.nk; j += 2) {
    std::copy(in.k.begin() + j * D, in.k.begin() + (j + 1) * D, in.k.begin() + (j + 1) * D);
    in.k_scale[j + 1] = in.k_scale[j];
  }
  return p;
}

TEST(BrokenCandidate, NondeterministicTieOrderIsReported) {
  Registry reg;
  Candidate c;
  c.name = "broken.flaky_ties";
  auto calls = std::make_shared<int>(0);
  c.run = [calls](const Problem& p, CandidateOutput* out) {
    INDEXLAB_RETURN_IF_ERROR(run_dsa_on(p.flat, p.options, out));
    if ((*calls)++ % 2 == 0) return Status::Ok();
    // bug: every other run breaks the tie at the K-th key the other way (ks = 0: relative = absolute)
    for (int64_t i = 0; i < out->nq; ++i) {
      int32_t* row = &out->index[i * out->k];
      const int32_t twin = row[out->k - 1] ^ 1;
      if (twin < p.flat.ke[i] && std::find(row, row + out->k, twin) == row + out->k) row[out->k - 1] = twin;
    }
    return Status::Ok();
  };
  ASSERT_TRUE(reg.add(c).ok());
  const Problem p = paired_problem();
  Report r = verify(*reg.find("broken.flaky_ties"), p, /*reruns=*/3);
  EXPECT_FALSE(r.deterministic);
  EXPECT_EQ(r.reruns, 2);
  EXPECT_TRUE(contains(r.determinism_detail, "rerun 1: index[")) << r.determinism_detail;
  EXPECT_TRUE(contains(r.determinism_detail, ",14] = ")) << r.determinism_detail;
  EXPECT_EQ(r.selection.exact, 8);  // the first run is the reference's order
  EXPECT_TRUE(contains(r.to_json().dump(), "\"bitwise_identical\":false")) << r.to_json().dump();

  // A run and the next differ, but the changed run alone is a valid tie-tolerant selection: only
  // the rerun check catches it.
  CandidateOutput first, second;
  ASSERT_TRUE(reg.find("broken.flaky_ties")->run(p, &first).ok());
  ASSERT_TRUE(reg.find("broken.flaky_ties")->run(p, &second).ok());
  std::string detail;
  EXPECT_FALSE(bitwise_equal(first, second, &detail));
  EXPECT_TRUE(bitwise_equal(first, first, &detail));
  if (*calls % 2 == 1) std::swap(first, second);  // `second` is the changed one
  Report r2;
  JudgeOptions o;
  ASSERT_TRUE(judge(p, second, o, &r2).ok());
  EXPECT_LT(r2.selection.exact, 8);
  EXPECT_EQ(r2.selection.tie_tolerant, 8);
  EXPECT_TRUE(r2.selection.passed(false));

  // A deterministic candidate passes the same check; one run checks nothing.
  Registry builtin;
  register_builtin(&builtin);
  const Report det = verify(*builtin.find("ref.dsa"), p, 3);
  EXPECT_TRUE(det.deterministic);
  EXPECT_EQ(det.reruns, 2);
  EXPECT_EQ(verify(*reg.find("broken.flaky_ties"), p, 1).reruns, 0);
}

TEST(BrokenCandidate, WrongShapeIsACleanError) {
  Registry reg;
  Candidate c;
  c.name = "broken.k_minus_one";
  c.run = [](const Problem& p, CandidateOutput* out) {
    INDEXLAB_RETURN_IF_ERROR(run_dsa_on(p.flat, p.options, out));
    CandidateOutput narrow;  // bug: K - 1 columns
    narrow.nq = out->nq;
    narrow.k = out->k - 1;
    for (int64_t i = 0; i < out->nq; ++i)
      narrow.index.insert(narrow.index.end(), out->index.begin() + i * out->k,
                          out->index.begin() + (i + 1) * out->k - 1);
    *out = narrow;
    return Status::Ok();
  };
  ASSERT_TRUE(reg.add(c).ok());
  Candidate failing = named("broken.fails");
  failing.run = [](const Problem&, CandidateOutput*) { return error("out of device memory"); };
  ASSERT_TRUE(reg.add(failing).ok());

  const Problem p = causal_problem();
  Report r;
  Status st = verify_candidate(*reg.find("broken.k_minus_one"), p, {}, 1, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "candidate output is [8, 31] but the problem needs [8, 32]")) << st.message();
  st = verify_candidate(*reg.find("broken.fails"), p, {}, 1, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "candidate 'broken.fails': out of device memory");
}

}  // namespace
}  // namespace indexlab::compare

namespace indexlab::compare {
namespace {

// Regression (found fuzzing cuda.dsa on an H100): the sm90 candidates claimed paged problems with
// pages of other than 64 tokens and then failed on them, instead of declining with a reason.
TEST(Registry, Sm90CandidatesDeclineUnsupportedProblemsWithAReason) {
  Registry reg;
  register_builtin(&reg);
  const Candidate* emu = reg.find("emu.sm90_dsa");
  ASSERT_NE(emu, nullptr);
  std::mt19937_64 rng(testing::test_seed() + 77);
  Problem p;
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 4, 200, 8, 64, 16);
  std::string why;
  EXPECT_TRUE(emu->supports(p, &why)) << why;
  ASSERT_TRUE(to_paged(p.flat, 2, 5, &p.paged_in).ok());
  p.paged = true;
  EXPECT_TRUE(emu->supports(p, &why)) << why;
  p.paged_in.page_tokens = 16;
  EXPECT_FALSE(emu->supports(p, &why));
  EXPECT_NE(why.find("page_tokens = 16"), std::string::npos) << why;
  p.paged = false;
  p.flat.shape.h = 12;
  EXPECT_FALSE(emu->supports(p, &why));
  EXPECT_NE(why.find("h = 12"), std::string::npos) << why;
  p.flat.shape.h = 8;
  p.path = ref::Path::kHisa;
  EXPECT_FALSE(emu->supports(p, &why));
  Problem b;
  b.flat = testing::random_inputs(rng, ref::Precision::kBf16, 4, 200, 8, 64, 16);
  EXPECT_FALSE(emu->supports(b, &why));
  EXPECT_NE(why.find("fp8 only"), std::string::npos) << why;
}

}  // namespace
}  // namespace indexlab::compare
