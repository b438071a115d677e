/// Planted bugs are found within a bounded number of cases and shrunk to small repros.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/common/random_problem.h"
#include "compare/problem_io.h"
#include "fuzz/campaign.h"
#include "planted.h"

namespace indexlab {
namespace {

struct Found {
  fuzz::CampaignResult result;
  fuzz::FailureRecord failure;
};

Found hunt(const fuzz::Target& t, uint64_t seed, bool isolate, int64_t max_cases) {
  fuzz::CampaignOptions o;
  o.seed = seed;
  o.max_cases = max_cases;
  o.time_budget_s = 0;
  o.eval.isolate = isolate;
  o.eval.timeout_s = 20;
  Found f;
  Status st = fuzz::run_campaign(t, o, &f.result);
  EXPECT_TRUE(st.ok()) << st.message();
  if (!f.result.failures.empty()) f.failure = f.result.failures.front();
  return f;
}

void print(const char* what, const Found& f) {
  const compare::Problem& p = f.failure.shrunk;
  std::printf("[%s] found at case %lld [%s/%s] %s; shrunk %lld -> %lld in %d runs: rows %lld keys %lld h %d d %d k %d\n",
              what, static_cast<long long>(f.failure.case_index), f.failure.generator.c_str(), f.failure.values.c_str(),
              fuzz::failure_kind_name(f.failure.kind), static_cast<long long>(f.failure.size_before),
              static_cast<long long>(f.failure.size_after), f.failure.shrink_evals, static_cast<long long>(p.rows()),
              static_cast<long long>(p.paged ? 0 : p.flat.shape.nk), p.h(), p.d(), p.k());
}

// Bounds asserted below, per planted bug: the campaign finds it within kMaxCases cases, and the
// shrunk repro has one row, one head, one dim and at most kMaxKeys keys and kMaxK top-k.
constexpr int64_t kMaxCases = 200;

TEST(FuzzPlanted, KeOffByOneFoundAndShrunk) {
  const uint64_t seed = testing::test_seed();
  const Found f = hunt(testing::planted_target(testing::planted_ke_off_by_one()), seed, false, kMaxCases);
  ASSERT_EQ(f.result.new_failures, 1) << "seed " << seed;
  print("ke_off_by_one", f);
  EXPECT_LT(f.failure.case_index, kMaxCases);
  EXPECT_EQ(f.failure.kind, fuzz::FailureKind::kInvalid) << f.failure.detail;
  const compare::Problem& p = f.failure.shrunk;
  EXPECT_EQ(p.rows(), 1);
  EXPECT_EQ(p.h(), 1);
  EXPECT_EQ(p.d(), 1);
  EXPECT_LE(p.flat.shape.nk, 2);
  EXPECT_EQ(p.k(), 1);
  EXPECT_LE(f.failure.size_after, 8);
}

TEST(FuzzPlanted, TopkDroppingTiesFoundAndShrunk) {
  const uint64_t seed = testing::test_seed();
  const Found f = hunt(testing::planted_target(testing::planted_topk_drops_ties()), seed, false, kMaxCases);
  ASSERT_EQ(f.result.new_failures, 1) << "seed " << seed;
  print("topk_drops_ties", f);
  EXPECT_LT(f.failure.case_index, kMaxCases);
  EXPECT_EQ(f.failure.kind, fuzz::FailureKind::kSelection) << f.failure.detail;
  const compare::Problem& p = f.failure.shrunk;
  EXPECT_EQ(p.rows(), 1);
  EXPECT_EQ(p.h(), 1);
  EXPECT_EQ(p.d(), 1);
  EXPECT_LE(p.flat.shape.nk, 2);  // two tied keys, K = 1
  EXPECT_EQ(p.k(), 1);
  EXPECT_LE(f.failure.size_after, 10);
}

TEST(FuzzPlanted, ReadPastKeCrashIsolatedAndShrunk) {
  const uint64_t seed = testing::test_seed();
  fuzz::Target t = testing::planted_target(testing::planted_reads_past_ke());
  t.gen.generators = {"causal_prefill"};  // the last row's ke is nk: the read leaves the buffer
  const Found f = hunt(t, seed, true, kMaxCases);
  ASSERT_EQ(f.result.new_failures, 1) << "seed " << seed;
  print("reads_past_ke", f);
  EXPECT_LT(f.failure.case_index, kMaxCases);
  EXPECT_EQ(f.failure.kind, fuzz::FailureKind::kCrash) << f.failure.detail;
  EXPECT_NE(f.failure.detail.find("signal"), std::string::npos) << f.failure.detail;
  const compare::Problem& p = f.failure.shrunk;
  EXPECT_EQ(p.rows(), 1);
  EXPECT_EQ(p.h(), 1);
  EXPECT_EQ(p.d(), 1);
  EXPECT_LE(p.flat.shape.nk, 1);
  EXPECT_EQ(p.k(), 1);
  EXPECT_LE(f.failure.size_after, 6);
}

TEST(FuzzPlanted, ReadPastKeWithoutCrashIsInvalid) {
  // Rows with ke < nk only: the extra key is selected and judged not visible.
  fuzz::Target t = testing::planted_target(testing::planted_reads_past_ke());
  t.gen.generators = {"sliding_window", "chunked_prefill", "random"};
  const Found f = hunt(t, testing::test_seed(), true, kMaxCases);
  ASSERT_EQ(f.result.new_failures, 1);
  EXPECT_TRUE(f.failure.kind == fuzz::FailureKind::kInvalid || f.failure.kind == fuzz::FailureKind::kCrash)
      << fuzz::failure_kind_name(f.failure.kind);
}

TEST(FuzzShrink, Deterministic) {
  fuzz::Target t = testing::planted_target(testing::planted_topk_drops_ties());
  fuzz::Case c;
  // Find a failing case, then shrink it twice.
  fuzz::EvalOptions eo;
  eo.isolate = false;
  fuzz::Verdict v;
  int64_t idx = 0;
  for (; idx < kMaxCases; ++idx) {
    ASSERT_TRUE(fuzz::make_case(t.gen, 7, idx, &c).ok());
    v = fuzz::evaluate(t, c.problem, 0, eo);
    if (v.failed()) break;
  }
  ASSERT_TRUE(v.failed());
  const fuzz::ShrinkResult a = fuzz::shrink(t, c.problem, v, eo, {});
  const fuzz::ShrinkResult b = fuzz::shrink(t, c.problem, v, eo, {});
  EXPECT_EQ(a.evals, b.evals);
  EXPECT_EQ(a.size_after, b.size_after);
  EXPECT_EQ(compare::problem_to_json(a.problem), compare::problem_to_json(b.problem));
  compare::TensorMap ta, tb;
  ASSERT_TRUE(compare::inputs_to_tensors(a.problem, &ta).ok());
  ASSERT_TRUE(compare::inputs_to_tensors(b.problem, &tb).ok());
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, x] : ta) EXPECT_EQ(x.data, tb.at(name).data) << name;
  EXPECT_LT(a.size_after, a.size_before);
  EXPECT_EQ(a.verdict.kind, v.kind);
}

TEST(FuzzRepro, RoundTripReproducesTheFailure) {
  fuzz::Target t = testing::planted_target(testing::planted_ke_off_by_one());
  fuzz::CampaignOptions o;
  o.seed = testing::test_seed();
  o.max_cases = kMaxCases;
  o.time_budget_s = 0;
  o.eval.isolate = false;
  o.out_dir = (std::filesystem::temp_directory_path() / ("indexlab-fuzz-repro-" + std::to_string(::getpid()))).string();
  fuzz::CampaignResult r;
  ASSERT_TRUE(fuzz::run_campaign(t, o, &r).ok());
  ASSERT_EQ(r.new_failures, 1);
  const fuzz::FailureRecord& f = r.failures.front();
  ASSERT_FALSE(f.repro_dir.empty());
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(f.repro_dir) / "fuzz.json"));
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(f.repro_dir) / "report.json"));
  // Read it back and judge the stored output again: same kind of failure.
  compare::Problem p;
  compare::CandidateOutput out;
  Status st = compare::read_repro(f.repro_dir, &p, &out);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(compare::problem_to_json(p), compare::problem_to_json(f.shrunk));
  fuzz::Target replay;
  replay.name = "stored";
  replay.candidate.name = "stored";
  replay.candidate.run = [out](const compare::Problem&, compare::CandidateOutput* o2) {
    *o2 = out;
    return Status::Ok();
  };
  fuzz::EvalOptions eo;
  eo.isolate = false;
  const fuzz::Verdict v = fuzz::evaluate(replay, p, 0, eo);
  EXPECT_EQ(v.kind, f.kind) << v.detail;
  // And the candidate itself still fails the same way on the repro.
  EXPECT_EQ(fuzz::evaluate(t, p, 0, eo).kind, f.kind);
  std::filesystem::remove_all(o.out_dir);
}

}  // namespace
}  // namespace indexlab

namespace indexlab {
namespace {

/// A caller bug of SPEC 10: the Hadamard rotation applied to the keys only. The caller_layout
/// generator (q aligned with needle keys) makes it visible at once.
TEST(FuzzPlanted, HadamardOnOneSideIsVisible) {
  compare::Candidate c;
  c.name = "planted.hadamard_keys_only";
  c.supports = testing::flat_only;
  c.run = [](const compare::Problem& p, compare::CandidateOutput* out) {
    compare::Problem q = p;
    const int D = q.flat.shape.d;
    if ((D & (D - 1)) != 0) return testing::reference_as_candidate(q, false, out);  // powers of 2 only
    for (int64_t j = 0; j < q.flat.shape.nk; ++j) {
      float* x = &q.flat.k[j * D];
      for (int len = 1; len < D; len *= 2)  // unnormalised fast Walsh-Hadamard transform
        for (int i = 0; i < D; i += 2 * len)
          for (int t = i; t < i + len; ++t) {
            const float a = x[t], b = x[t + len];
            x[t] = a + b;
            x[t + len] = a - b;
          }
    }
    return testing::reference_as_candidate(q, false, out);
  };
  fuzz::Target t = testing::planted_target(c);
  t.gen.generators = {"caller_layout"};
  t.gen.precisions = {ref::Precision::kFp32};
  t.gen.d_choices = {8, 16, 32};
  fuzz::CampaignOptions o;
  o.seed = testing::test_seed();
  o.max_cases = 20;
  o.time_budget_s = 0;
  o.eval.isolate = false;
  fuzz::CampaignResult r;
  ASSERT_TRUE(fuzz::run_campaign(t, o, &r).ok());
  ASSERT_EQ(r.new_failures, 1);
  EXPECT_LT(r.failures.front().case_index, 20);
  EXPECT_EQ(r.failures.front().kind, fuzz::FailureKind::kSelection) << r.failures.front().detail;
}

}  // namespace
}  // namespace indexlab
