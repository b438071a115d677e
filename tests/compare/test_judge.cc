/// Tests of compare/judge.h on constructed cases with known answers: ties, the bound-aware rule,
/// -inf patterns, logits metrics, short rows, invalid indices, index bases, paged problems, row
/// sampling and precomputed references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kH = 4, kD = 16;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// A flat fp32 DSA problem with planted scores. Every head has w = 0.25 and q[i,h,:] = (1, 0, ..., 0),
/// so score[i,j] = sum_h 0.25 * relu(k[j,0]) = k[j,0] exactly (for k[j,0] > 0). Dims 1..D-1 of the
/// keys hold non-integer filler that no score sees (it only enters the reference's own error bound,
/// at ~1e-15). `ranges` gives (ks, ke) per row.
Problem planted(const std::vector<float>& scores, const std::vector<std::pair<int, int>>& ranges, int k) {
  Problem p;
  p.name = "planted";
  ref::Inputs& in = p.flat;
  const int64_t nq = static_cast<int64_t>(ranges.size()), nk = static_cast<int64_t>(scores.size());
  in.precision = ref::Precision::kFp32;
  in.shape = ref::Shape{nq, nk, kH, kD, k};
  in.q.assign(nq * kH * kD, 0.0f);
  for (int64_t t = 0; t < nq * kH; ++t) in.q[t * kD] = 1.0f;
  in.w.assign(nq * kH, 0.25f);
  in.k.resize(nk * kD);
  for (int64_t j = 0; j < nk; ++j) {
    in.k[j * kD] = scores[j];
    for (int d = 1; d < kD; ++d) in.k[j * kD + d] = 0.1f * static_cast<float>((j * 7 + d * 3) % 11) - 0.45f;
  }
  for (const auto& r : ranges) {
    in.ks.push_back(r.first);
    in.ke.push_back(r.second);
  }
  return p;
}

/// A candidate output with the given rows of indices (relative unless said otherwise).
CandidateOutput output(const Problem& p, const std::vector<std::vector<int32_t>>& rows,
                       ref::IndexBase base = ref::IndexBase::kRelative) {
  CandidateOutput c;
  c.nq = p.rows();
  c.k = p.k();
  c.index_base = base;
  for (const auto& r : rows) {
    EXPECT_EQ(static_cast<int>(r.size()), c.k);
    c.index.insert(c.index.end(), r.begin(), r.end());
  }
  return c;
}

Report judge_with(const Problem& p, const CandidateOutput& c, const std::string& tolerance = "exact",
                  JudgeOptions o = {}) {
  EXPECT_TRUE(tolerance_by_name(tolerance, p.h(), p.d(), &o.tolerance).ok());
  o.worst_rows = 1000;
  Report r;
  const Status st = judge(p, c, o, &r);
  EXPECT_TRUE(st.ok()) << st.message();
  return r;
}

/// The verdict of row `row` among the reported worst rows (all non-exact rows are reported).
RowVerdict verdict(const Report& r, int64_t row) {
  for (const RowVerdict& v : r.selection.worst)
    if (v.row == row) return v;
  RowVerdict exact;  // not listed: exact
  exact.row = row;
  exact.exact = exact.tie_tolerant = exact.bound_aware = true;
  return exact;
}

/// The reference output (with logits) as a candidate output.
CandidateOutput reference_output(const Problem& p) {
  Registry reg;
  register_builtin(&reg);
  CandidateOutput c;
  const Candidate* ref_cand = reg.find(std::string("ref.") + ref::path_name(p.path));
  EXPECT_NE(ref_cand, nullptr);
  const Status st = ref_cand->run(p, &c);
  EXPECT_TRUE(st.ok()) << st.message();
  return c;
}

// ---- ties -----------------------------------------------------------------------------------

// Scores of 8 keys: four keys tie at 1.875, which is the K-th score for K = 4. The reference
// takes 3.0625 (key 6), 2.75 (key 0) and the tied keys of lowest index, 2 and 3.
const std::vector<float> kTieScores = {2.75f, 0.5f, 1.875f, 1.875f, 0.3125f, 1.875f, 3.0625f, 1.875f};

TEST(JudgeTies, ReferenceTakesTheLowestTiedKeys) {
  const Problem p = planted(kTieScores, {{0, 8}}, 4);
  const CandidateOutput r = reference_output(p);
  EXPECT_EQ(r.index, (std::vector<int32_t>{6, 0, 2, 3}));
  EXPECT_EQ(judge_with(p, r).selection.exact, 1);
}

TEST(JudgeTies, OtherTiedKeysAreTieTolerantNotExact) {
  const Problem p = planted(kTieScores, {{0, 8}}, 4);
  // Keys 5 and 7 instead of 2 and 3, in another order: same multiset of scores.
  const Report r = judge_with(p, output(p, {{7, 6, 5, 0}}));
  const RowVerdict v = verdict(r, 0);
  EXPECT_TRUE(v.valid);
  EXPECT_FALSE(v.exact);
  EXPECT_TRUE(v.tie_tolerant);
  EXPECT_TRUE(v.bound_aware);
  EXPECT_DOUBLE_EQ(v.recall, 0.5);  // {6, 0} of {6, 0, 2, 3}
  EXPECT_EQ(r.selection.exact, 0);
  EXPECT_EQ(r.selection.tie_tolerant, 1);
  EXPECT_EQ(r.selection.bound_aware, 1);
  EXPECT_DOUBLE_EQ(r.selection.min_recall, 0.5);
  EXPECT_DOUBLE_EQ(r.selection.mean_recall, 0.5);
  EXPECT_TRUE(r.selection.passed(false));
  EXPECT_FALSE(r.selection.passed(true));

  // One tied key swapped: recall 3/4.
  const Report r3 = judge_with(p, output(p, {{6, 0, 2, 7}}));
  EXPECT_DOUBLE_EQ(verdict(r3, 0).recall, 0.75);
  EXPECT_TRUE(verdict(r3, 0).tie_tolerant);
}

TEST(JudgeTies, DroppingAKeyAboveTheKthFailsBoth) {
  const Problem p = planted(kTieScores, {{0, 8}}, 4);
  // Key 0 (2.75, above the K-th 1.875) dropped for the tied key 5.
  const Report r = judge_with(p, output(p, {{6, 2, 3, 5}}), "tensor_core");
  const RowVerdict v = verdict(r, 0);
  EXPECT_TRUE(v.valid);
  EXPECT_FALSE(v.tie_tolerant);
  EXPECT_FALSE(v.bound_aware);
  EXPECT_DOUBLE_EQ(v.recall, 0.75);
  EXPECT_TRUE(contains(v.diagnosis, "K-th score 1.875")) << v.diagnosis;
  // 2.75 is 0x40300000, 1.875 is 0x3FF00000: 0x400000 = 4194304 ulps apart.
  EXPECT_TRUE(contains(v.diagnosis, "missing key 0 (score 2.75, 4194304 ulps from the K-th)")) << v.diagnosis;
  EXPECT_TRUE(contains(v.diagnosis, "extra key 5 (score 1.875, 0 ulps from the K-th)")) << v.diagnosis;
  EXPECT_FALSE(r.selection.passed(false));
}

// ---- the bound-aware rule -------------------------------------------------------------------
//
// Row keys: 2.25, 3.125, 1.5, X, 1.25, 0.625 with K = 3: the reference takes keys 1, 0, 2 and the
// K-th score is 1.5; X (key 3) is the (K+1)-th. In the planted problem sum_h |w_h| = 1, s = 1 and
// sum_d |q_d k_d| = |k_0| = score, so judge.h's bound of a key of score x is
//   b(x) = dot_rel * x + epi_rel * x,
// and the judge accepts a chosen key of score x over the K-th (1.5) when
//   x + b(x) + 2^-24 (x + 1.5) >= 1.5 - b(1.5)     (the reference's own bound here is ~1e-15).
//
// tensor_core, h = 4, d = 16: dot_rel = ceil(16/32) * 34 * 2^-13 = 0.004150390625,
//   epi_rel = (4+3) 2^-24 = 4.17e-7, so b(x) = 0.0041508 x and b(1.5) = 0.0062262.
//   X = 1.5 - 2^-10 = 1.4990234375: 1.4990234 + 0.0062222 + 1.8e-7 = 1.5052458 >= 1.4937738: passes.
//   1.25 (key 4):                   1.25 + 0.0051885 + 1.6e-7      = 1.2551887 <  1.4937738: fails.
// fp32, h = 4, d = 16: dot_rel = 16 2^-24, epi_rel = 7 2^-24, b(x) = 23 2^-24 x = 1.371e-6 x,
//   b(1.5) = 2.056e-6.
//   X = 1.5 - 2^-10: 1.4990234 + 2.06e-6 + 1.8e-7 = 1.4990257 < 1.4999979: fails.
//   X = 1.5 - 2^-21 = 1.49999952 (4 ulps below 1.5): 1.49999952 + 2.056e-6 + 1.79e-7 = 1.50000176
//   >= 1.4999979: passes.
// exact (b = 0): X = 1.5 - 2^-21: 1.49999952 + 1.79e-7 = 1.4999997 < 1.5 - 1e-15: fails.
// A swap is never tie-tolerant: the multiset of scores changes.

Problem boundary_problem(float x) { return planted({2.25f, 3.125f, 1.5f, x, 1.25f, 0.625f}, {{0, 6}}, 3); }

TEST(JudgeBound, ReferenceOrderAndKthScore) {
  const Problem p = boundary_problem(1.5f - 0x1p-10f);
  EXPECT_EQ(reference_output(p).index, (std::vector<int32_t>{1, 0, 2}));
}

TEST(JudgeBound, TensorCoreSwapInsideTheBoundPasses) {
  const Problem p = boundary_problem(1.5f - 0x1p-10f);
  const CandidateOutput swapped = output(p, {{1, 0, 3}});
  const RowVerdict v = verdict(judge_with(p, swapped, "tensor_core"), 0);
  EXPECT_TRUE(v.valid);
  EXPECT_FALSE(v.exact);
  EXPECT_FALSE(v.tie_tolerant);
  EXPECT_TRUE(v.bound_aware);
  EXPECT_NEAR(v.recall, 2.0 / 3.0, 1e-15);
  // 1.5 - 2^-10 is 2^13 = 8192 ulps (2^-23 each) below 1.5.
  EXPECT_TRUE(contains(v.diagnosis, "missing key 2 (score 1.5, 0 ulps from the K-th)")) << v.diagnosis;
  EXPECT_TRUE(contains(v.diagnosis, "extra key 3 (score 1.49902344, 8192 ulps from the K-th)")) << v.diagnosis;
  // The same swap under the fp32 and exact models is outside the bound.
  EXPECT_FALSE(verdict(judge_with(p, swapped, "fp32"), 0).bound_aware);
  EXPECT_FALSE(verdict(judge_with(p, swapped, "exact"), 0).bound_aware);
}

TEST(JudgeBound, TensorCoreSwapFarBelowFails) {
  const Problem p = boundary_problem(1.5f - 0x1p-10f);
  const RowVerdict v = verdict(judge_with(p, output(p, {{1, 0, 4}}), "tensor_core"), 0);
  EXPECT_TRUE(v.valid);
  EXPECT_FALSE(v.tie_tolerant);
  EXPECT_FALSE(v.bound_aware);
  EXPECT_TRUE(contains(v.diagnosis, "extra key 4 (score 1.25")) << v.diagnosis;
}

TEST(JudgeBound, Fp32SwapFourUlpsBelowPasses) {
  const float x = 1.5f - 0x1p-21f;
  ASSERT_EQ(ref::ulp_distance(x, 1.5f), 4u);
  const Problem p = boundary_problem(x);
  const CandidateOutput swapped = output(p, {{3, 1, 0}});
  const RowVerdict v = verdict(judge_with(p, swapped, "fp32"), 0);
  EXPECT_FALSE(v.tie_tolerant);
  EXPECT_TRUE(v.bound_aware);
  EXPECT_TRUE(contains(v.diagnosis, "extra key 3 (score 1.49999952, 4 ulps from the K-th)")) << v.diagnosis;
  EXPECT_FALSE(verdict(judge_with(p, swapped, "exact"), 0).bound_aware);
  EXPECT_TRUE(verdict(judge_with(p, swapped, "tensor_core"), 0).bound_aware);
}

TEST(JudgeBound, MissingTheTopKeyFailsUnderEveryModel) {
  const Problem p = boundary_problem(1.5f - 0x1p-10f);
  for (const char* tol : {"exact", "fp32", "tensor_core"}) {
    const RowVerdict v = verdict(judge_with(p, output(p, {{0, 2, 3}}), tol), 0);
    EXPECT_FALSE(v.bound_aware) << tol;
    EXPECT_TRUE(contains(v.diagnosis, "missing key 1 (score 3.125")) << v.diagnosis;
  }
}

TEST(JudgeBound, ToleranceModels) {
  Tolerance t;
  ASSERT_TRUE(tolerance_by_name("tensor_core", 4, 16, &t).ok());
  EXPECT_DOUBLE_EQ(t.dot_rel, 34.0 / 8192.0);
  EXPECT_DOUBLE_EQ(t.epi_rel, 7.0 * 0x1p-24);
  ASSERT_TRUE(tolerance_by_name("tensor_core", 64, 128, &t).ok());
  EXPECT_DOUBLE_EQ(t.dot_rel, 4 * 34.0 / 8192.0);
  ASSERT_TRUE(tolerance_by_name("fp32", 4, 16, &t).ok());
  EXPECT_DOUBLE_EQ(t.dot_rel, 16.0 * 0x1p-24);
  EXPECT_DOUBLE_EQ(t.epi_rel, 7.0 * 0x1p-24);
  ASSERT_TRUE(tolerance_by_name("exact", 4, 16, &t).ok());
  EXPECT_EQ(t.dot_rel, 0.0);
  EXPECT_EQ(t.epi_rel, 0.0);
  const Status st = tolerance_by_name("loose", 4, 16, &t);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "'loose'")) << st.message();
}

// ---- logits: -inf pattern and metrics -----------------------------------------------------

// Row 0 sees all 8 keys, row 1 keys [2, 6): the reference logits are the planted scores there
// and -inf elsewhere.
Problem logits_problem() { return planted(kTieScores, {{0, 8}, {2, 6}}, 4); }

std::vector<float> planted_logits() {
  std::vector<float> l(kTieScores.begin(), kTieScores.end());
  for (int j = 0; j < 8; ++j) l.push_back(j >= 2 && j < 6 ? kTieScores[j] : kNegInf);
  return l;
}

TEST(JudgeLogits, ReferenceLogitsAreThePlantedScores) {
  const Problem p = logits_problem();
  const CandidateOutput r = reference_output(p);
  ASSERT_EQ(r.logits_cols, 8);
  EXPECT_EQ(r.logits, planted_logits());
  const Report rep = judge_with(p, r);
  EXPECT_TRUE(rep.logits.present);
  EXPECT_EQ(rep.logits.inf_mismatches, 0);
  EXPECT_EQ(rep.logits.compared, 12);
  EXPECT_EQ(rep.logits.max_ulp, 0u);
  EXPECT_EQ(rep.logits.max_abs, 0.0);
  EXPECT_EQ(rep.logits.frac_bit_exact, 1.0);
  EXPECT_EQ(rep.logits.deepgemm_diff, 0.0);
}

TEST(JudgeLogits, FiniteWhereTheReferenceHasMinusInf) {
  const Problem p = logits_problem();
  CandidateOutput c = reference_output(p);
  c.logits[1 * 8 + 7] = 0.5f;  // row 1 sees [2, 6): column 7 must be -inf
  const Report r = judge_with(p, c);
  EXPECT_EQ(r.logits.inf_mismatches, 1);
  EXPECT_TRUE(contains(r.logits.first_inf_mismatch, "row 1 column 7")) << r.logits.first_inf_mismatch;
  EXPECT_TRUE(contains(r.logits.first_inf_mismatch, "reference -inf, candidate 0.5")) << r.logits.first_inf_mismatch;
  EXPECT_EQ(r.logits.compared, 12);
  EXPECT_EQ(r.selection.exact, 2);  // the selection is judged on its own
}

TEST(JudgeLogits, MinusInfWhereTheReferenceIsFinite) {
  const Problem p = logits_problem();
  CandidateOutput c = reference_output(p);
  c.logits[1 * 8 + 4] = kNegInf;  // visible key 4 of row 1 (0.3125)
  c.logits[0 * 8 + 6] = kNegInf;  // visible key 6 of row 0 (3.0625)
  const Report r = judge_with(p, c);
  EXPECT_EQ(r.logits.inf_mismatches, 2);
  EXPECT_TRUE(contains(r.logits.first_inf_mismatch, "row 0 column 6: reference 3.0625, candidate -inf"))
      << r.logits.first_inf_mismatch;
  EXPECT_EQ(r.logits.compared, 10);
}

TEST(JudgeLogits, MetricsMatchHandComputedValues) {
  const Problem p = logits_problem();
  CandidateOutput c = reference_output(p);
  const std::vector<float> y = c.logits;
  // Row 0 key 0: 2.75 + 2^-20, 4 ulps (2^-22 each in [2, 4)) above, relative error 2^-20 / 2.75.
  c.logits[0] = 2.75f + 0x1p-20f;
  // Row 1 key 3: 1.875 - 2^-10, 2^13 = 8192 ulps (2^-23 each in [1, 2)) below, relative 2^-10 / 1.875.
  c.logits[8 + 3] = 1.875f - 0x1p-10f;
  // Row 1 key 5: 1.875 + 2^-23, the next float: 1 ulp.
  c.logits[8 + 5] = 1.875f + 0x1p-23f;
  const Report r = judge_with(p, c);
  const LogitsSummary& l = r.logits;
  EXPECT_EQ(l.inf_mismatches, 0);
  EXPECT_EQ(l.compared, 12);
  EXPECT_DOUBLE_EQ(l.max_abs, 0x1p-10);
  EXPECT_DOUBLE_EQ(l.max_rel, 0x1p-10 / 1.875);
  EXPECT_EQ(l.max_ulp, 8192u);
  EXPECT_TRUE(contains(l.worst, "row 1 column 3")) << l.worst;
  EXPECT_DOUBLE_EQ(l.frac_bit_exact, 9.0 / 12.0);
  // 1 - 2 sum(xy) / sum(x^2 + y^2) = sum((x - y)^2) / sum(x^2 + y^2).
  long double num = 0, den = 0;
  for (size_t t = 0; t < y.size(); ++t) {
    if (y[t] == kNegInf) continue;
    const long double xd = c.logits[t], yd = y[t];
    num += (xd - yd) * (xd - yd);
    den += xd * xd + yd * yd;
  }
  const double expected = static_cast<double>(num / den);
  EXPECT_GT(expected, 1e-8);
  EXPECT_NEAR(l.deepgemm_diff, expected, 1e-14);
  EXPECT_EQ(r.selection.exact, 2);
}

TEST(JudgeLogits, WrongLogitsShapeIsAnError) {
  const Problem p = logits_problem();
  CandidateOutput c = reference_output(p);
  c.logits.resize(2 * 7);
  c.logits_cols = 7;
  Report r;
  const Status st = judge(p, c, {}, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "need")) << st.message();
  EXPECT_TRUE(contains(st.message(), "8")) << st.message();
}

// ---- short rows, -1 padding and invalid indices -------------------------------------------

// Row 0 sees 8 keys, row 1 two (keys 3 and 4: 1.875 each), row 2 none; K = 4.
Problem short_problem() { return planted(kTieScores, {{0, 8}, {3, 5}, {4, 4}}, 4); }

TEST(JudgeShortRows, ReferencePadsWithMinusOne) {
  const Problem p = short_problem();
  const CandidateOutput r = reference_output(p);
  EXPECT_EQ(r.index, (std::vector<int32_t>{6, 0, 2, 3, 0, 1, -1, -1, -1, -1, -1, -1}));
}

TEST(JudgeShortRows, PaddingInAnySlotIsExact) {
  const Problem p = short_problem();
  const Report r = judge_with(p, output(p, {{3, 2, 0, 6}, {-1, 1, -1, 0}, {-1, -1, -1, -1}}));
  EXPECT_EQ(r.selection.exact, 3);
  EXPECT_EQ(r.selection.invalid, 0);
  EXPECT_DOUBLE_EQ(r.selection.mean_recall, 1.0);
}

TEST(JudgeShortRows, AMissingQualifyingKeyFails) {
  const Problem p = short_problem();
  // Row 1 has two qualifying keys; the candidate gives one. Every qualifying key must be chosen,
  // even under the loosest model.
  const Report r = judge_with(p, output(p, {{6, 0, 2, 3}, {1, -1, -1, -1}, {-1, -1, -1, -1}}), "tensor_core");
  const RowVerdict v = verdict(r, 1);
  EXPECT_TRUE(v.valid);
  EXPECT_FALSE(v.tie_tolerant);
  EXPECT_FALSE(v.bound_aware);
  EXPECT_DOUBLE_EQ(v.recall, 0.5);
  EXPECT_TRUE(contains(v.diagnosis, "1 keys selected, reference has 2")) << v.diagnosis;
  EXPECT_TRUE(contains(v.diagnosis, "missing key 0 (score 1.875")) << v.diagnosis;
  EXPECT_EQ(r.selection.exact, 2);
  EXPECT_DOUBLE_EQ(r.selection.min_recall, 0.5);
  EXPECT_DOUBLE_EQ(r.selection.mean_recall, 2.5 / 3.0);
}

TEST(JudgeShortRows, AKeyInARowWithNoneVisibleIsInvalid) {
  const Problem p = short_problem();
  const Report r = judge_with(p, output(p, {{6, 0, 2, 3}, {0, 1, -1, -1}, {-1, 0, -1, -1}}));
  const RowVerdict v = verdict(r, 2);
  EXPECT_FALSE(v.valid);
  EXPECT_TRUE(contains(v.diagnosis, "slot 1 holds 0, not a visible key (visible: [4, 4))")) << v.diagnosis;
  EXPECT_EQ(r.selection.invalid, 1);
  EXPECT_DOUBLE_EQ(v.recall, 1.0);  // an empty reference set has recall 1
}

// Row 0 sees keys [2, 6) (scores 1.875, 1.875, 0.3125, 1.875), K = 3: the reference takes
// relative 0, 1, 3.
Problem invalid_problem() { return planted(kTieScores, {{2, 6}}, 3); }

RowVerdict judge_invalid(const std::vector<int32_t>& idx, ref::IndexBase base = ref::IndexBase::kRelative) {
  const Problem p = invalid_problem();
  const Report r = judge_with(p, output(p, {idx}, base), "tensor_core");
  EXPECT_EQ(r.selection.invalid, 1);
  EXPECT_EQ(r.selection.bound_aware, 0);
  EXPECT_FALSE(r.selection.passed(false));
  const RowVerdict v = verdict(r, 0);
  EXPECT_FALSE(v.valid);
  EXPECT_FALSE(v.tie_tolerant);
  EXPECT_FALSE(v.bound_aware);
  return v;
}

TEST(JudgeInvalid, ReferenceAndValidCandidate) {
  const Problem p = invalid_problem();
  EXPECT_EQ(reference_output(p).index, (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(judge_with(p, output(p, {{3, 0, 1}})).selection.exact, 1);
}

TEST(JudgeInvalid, OutOfRangeNamesTheSlot) {
  const RowVerdict v = judge_invalid({0, 4, 1});  // relative 4 is key 6 = ke
  EXPECT_TRUE(contains(v.diagnosis, "slot 1 holds 4, not a visible key (visible: [2, 6))")) << v.diagnosis;
  const RowVerdict big = judge_invalid({0, 1, std::numeric_limits<int32_t>::max()});
  EXPECT_TRUE(contains(big.diagnosis, "slot 2 holds 2147483647")) << big.diagnosis;
}

TEST(JudgeInvalid, NegativeOtherThanMinusOneNamesTheSlot) {
  const RowVerdict v = judge_invalid({0, -2, 1});
  EXPECT_TRUE(contains(v.diagnosis, "slot 1 holds -2")) << v.diagnosis;
}

TEST(JudgeInvalid, InvisibleAbsoluteIndexNamesTheSlot) {
  // Absolute key 1 lies before ks = 2.
  const RowVerdict v = judge_invalid({1, 2, 3}, ref::IndexBase::kAbsolute);
  EXPECT_TRUE(contains(v.diagnosis, "slot 0 holds 1, not a visible key (visible: [2, 6))")) << v.diagnosis;
}

TEST(JudgeInvalid, DuplicateNamesTheKeyAndTheSlot) {
  const RowVerdict v = judge_invalid({1, 0, 1});
  EXPECT_TRUE(contains(v.diagnosis, "key 1 selected twice")) << v.diagnosis;
  // Regression: the duplicate diagnosis once named only the key, not the slot (2) repeating it.
  EXPECT_TRUE(contains(v.diagnosis, "slot 2")) << v.diagnosis;
}

// ---- index bases --------------------------------------------------------------------------

TEST(JudgeIndexBase, RelativeAndAbsoluteDescribeTheSameKeys) {
  const Problem p = invalid_problem();  // ks = 2
  EXPECT_EQ(judge_with(p, output(p, {{0, 1, 3}}, ref::IndexBase::kRelative)).selection.exact, 1);
  EXPECT_EQ(judge_with(p, output(p, {{2, 3, 5}}, ref::IndexBase::kAbsolute)).selection.exact, 1);
  // Relative numbers labelled absolute: keys 0 and 1 are not visible.
  const Report wrong = judge_with(p, output(p, {{0, 1, 3}}, ref::IndexBase::kAbsolute));
  EXPECT_EQ(wrong.selection.invalid, 1);
  // Absolute numbers labelled relative: 5 is past the row.
  EXPECT_EQ(judge_with(p, output(p, {{2, 3, 5}}, ref::IndexBase::kRelative)).selection.invalid, 1);
}

TEST(JudgeIndexBase, AbsoluteReferenceOnRandomRaggedRows) {
  std::mt19937_64 rng(testing::test_seed());
  Problem p;
  p.flat = testing::random_inputs(rng, ref::Precision::kBf16, 12, 160, 4, 16, 20, /*causal=*/false);
  p.options.index_base = ref::IndexBase::kAbsolute;
  CandidateOutput abs_out = reference_output(p);
  EXPECT_EQ(abs_out.index_base, ref::IndexBase::kAbsolute);
  EXPECT_EQ(judge_with(p, abs_out).selection.exact, 12);
  // The same keys made relative.
  CandidateOutput rel = abs_out;
  rel.index_base = ref::IndexBase::kRelative;
  bool shifted = false;
  for (int64_t i = 0; i < 12; ++i)
    for (int s = 0; s < 20; ++s) {
      int32_t& x = rel.index[i * 20 + s];
      if (x >= 0) {
        x -= p.flat.ks[i];
        shifted = shifted || p.flat.ks[i] > 0;
      }
    }
  ASSERT_TRUE(shifted) << "seed " << testing::test_seed() << ": no row with ks > 0";
  EXPECT_EQ(judge_with(p, rel).selection.exact, 12);
  // Absolute indices read as relative: every row with ks > 0 and a selection goes wrong.
  CandidateOutput mislabelled = abs_out;
  mislabelled.index_base = ref::IndexBase::kRelative;
  EXPECT_LT(judge_with(p, mislabelled).selection.exact, 12);
}

// ---- paged problems -----------------------------------------------------------------------

Problem paged_problem(ref::Precision prec, int next_n, ref::IndexBase base, uint64_t salt = 0) {
  std::mt19937_64 rng(testing::test_seed() + salt);
  const ref::Inputs flat = testing::random_inputs(rng, prec, 6, 200, 4, 32, 24);
  Problem p;
  p.name = "paged";
  p.paged = true;
  p.options.index_base = base;
  EXPECT_TRUE(to_paged(flat, next_n, testing::test_seed() + 1, &p.paged_in).ok());
  return p;
}

TEST(JudgePaged, AbsoluteSlotIndices) {
  const Problem p = paged_problem(ref::Precision::kFp8, 2, ref::IndexBase::kAbsolute);
  const CandidateOutput c = reference_output(p);
  const Report r = judge_with(p, c);
  EXPECT_EQ(r.selection.rows_judged, 6);
  EXPECT_EQ(r.selection.exact, 6);
  EXPECT_EQ(r.logits.inf_mismatches, 0);
  EXPECT_EQ(r.logits.frac_bit_exact, 1.0);
  // Slots, not positions: the pages are shuffled, so some slot differs from its position.
  FlatView fv;
  ASSERT_TRUE(flat_view(p, &fv).ok());
  const CandidateOutput rel = [&] {
    Problem q = p;
    q.options.index_base = ref::IndexBase::kRelative;
    return reference_output(q);
  }();
  bool differs = false;
  for (size_t t = 0; t < c.index.size(); ++t) {
    const int64_t i = static_cast<int64_t>(t) / p.k();
    if (rel.index[t] < 0) continue;
    EXPECT_EQ(c.index[t], fv.slot_of_key[fv.in.ks[i] + rel.index[t]]);
    differs = differs || c.index[t] != rel.index[t];
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(judge_with(p, rel).selection.exact, 6);
  // Positions passed off as absolute slots: wrong keys or not visible.
  CandidateOutput positions = rel;
  positions.index_base = ref::IndexBase::kAbsolute;
  const Report bad = judge_with(p, positions);
  EXPECT_LT(bad.selection.exact, 6);
  EXPECT_FALSE(bad.selection.passed(false));
}

TEST(JudgePaged, SelectionMatchesTheFlatProblem) {
  std::mt19937_64 rng(testing::test_seed());
  Problem flat;
  flat.flat = testing::random_inputs(rng, ref::Precision::kBf16, 6, 200, 4, 32, 24);
  Problem paged;
  paged.paged = true;
  ASSERT_TRUE(to_paged(flat.flat, 1, 5, &paged.paged_in).ok());
  const CandidateOutput a = reference_output(flat), b = reference_output(paged);
  EXPECT_EQ(a.index, b.index);  // ks = 0: relative keys are positions
  // The flat selection judged on the paged problem; logits are by position in both (ks = 0), but
  // the paged row is as wide as its pages.
  CandidateOutput a_idx = a;
  a_idx.logits.clear();
  a_idx.logits_cols = 0;
  EXPECT_EQ(judge_with(paged, a_idx).selection.exact, 6);
  // A wrong slot for one key.
  CandidateOutput c = b;
  c.index[0] = c.index[1];
  EXPECT_EQ(judge_with(paged, c).selection.invalid, 1);
}

/// ref.<path> on a paged problem with the given alignment.
CandidateOutput paged_reference(Problem p, ref::BlockAlign align) {
  p.options.align = align;
  return reference_output(p);
}

TEST(JudgePaged, ReleaseAlignmentIsPerSequence) {
  // In paged decode every sequence starts at position 0 of its own pages, so ks (position 0) is a
  // multiple of B and release-aligned blocks must agree with sequence-aligned ones (SPEC 4.1),
  // and no block may pool another sequence's keys.
  // Regression: flatten_paged lays sequences back to back at offsets off[b], and release blocks
  // were once aligned to multiples of B of that flat buffer; for off[b] % B != 0 they shifted and
  // pooled keys of sequence b - 1, so one sequence's selection depended on another's cache.
  // Release blocks now start at each sequence's block_origin.
  for (ref::Path path : {ref::Path::kHisa, ref::Path::kMisa}) {
    SCOPED_TRACE(ref::path_name(path));
    std::mt19937_64 rng(testing::test_seed());
    const ref::Inputs flat = testing::random_inputs(rng, ref::Precision::kFp8, 6, 200, 8, 16, 16);
    Problem p;
    p.path = path;
    p.paged = true;
    p.options.hisa_block = 32;
    p.options.hisa_m = 2;
    p.options.misa_heads = 2;
    p.options.misa_block = 32;
    ASSERT_TRUE(to_paged(flat, 1, 3, &p.paged_in).ok());  // contexts 195..200: off[b] % 32 != 0
    const CandidateOutput seq = paged_reference(p, ref::BlockAlign::kSequence);
    const CandidateOutput rel = paged_reference(p, ref::BlockAlign::kRelease);
    EXPECT_EQ(rel.index, seq.index);
    // Overwrite sequence 0's cache (random codes, scales 1000 times larger): the other sequences
    // must not notice.
    Problem q = p;
    ref::PagedInputs& g = q.paged_in;
    std::uniform_int_distribution<int> code(0x08, 0x6F);
    for (int64_t lp = 0; lp * 64 < g.context_lens[0]; ++lp) {
      uint8_t* page = &g.cache[g.block_table[lp] * g.page_bytes()];
      for (int64_t t = 0; t < 64 * g.d; ++t) page[t] = static_cast<uint8_t>(code(rng) | (rng() & 0x80));
      float* scales = reinterpret_cast<float*>(page + 64 * g.d);
      for (int t = 0; t < 64; ++t) scales[t] *= 1000.0f;
    }
    const CandidateOutput rel2 = paged_reference(q, ref::BlockAlign::kRelease);
    const CandidateOutput seq2 = paged_reference(q, ref::BlockAlign::kSequence);
    const size_t k = static_cast<size_t>(p.k());
    EXPECT_EQ(std::vector<int32_t>(seq2.index.begin() + k, seq2.index.end()),
              std::vector<int32_t>(seq.index.begin() + k, seq.index.end()));
    EXPECT_EQ(std::vector<int32_t>(rel2.index.begin() + k, rel2.index.end()),
              std::vector<int32_t>(rel.index.begin() + k, rel.index.end()));
  }
}

TEST(JudgePaged, EmptyContextsWithNoPages) {
  // A decode batch whose sequences are all empty: no pages at all (max_pages = 0 is valid).
  Problem p;
  p.paged = true;
  ref::PagedInputs& g = p.paged_in;
  g.precision = ref::Precision::kFp8;
  g.h = 4;
  g.d = 16;
  g.k = 8;
  g.batch = 2;
  g.context_lens = {0, 0};
  g.q.assign(2 * 4 * 16, 0.375f);
  g.w.assign(2 * 4, 0.625f);
  ASSERT_TRUE(ref::validate(g, p.options).ok());
  Registry reg;
  register_builtin(&reg);
  Report r;
  const Status st = verify_candidate(*reg.find("ref.dsa"), p, {}, 1, &r);
  // Regression: run_paged once gave logits [2, 1] (width max(1, max_pages * page_tokens)) while
  // Problem::logits_cols() is 0, so judge() rejected the reference's own output.
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(r.selection.exact, 2);
  EXPECT_EQ(r.logits.inf_mismatches, 0);
}

// ---- row sampling -------------------------------------------------------------------------

TEST(JudgeSampling, RowsToJudgeIsSortedUniqueSeededAndOfTheRequestedSize) {
  JudgeOptions o;
  o.seed = testing::test_seed();
  for (int64_t n : {1, 5, 17, 99, 100}) {
    o.sample_rows = n;
    const std::vector<int64_t> rows = rows_to_judge(100, o);
    ASSERT_EQ(static_cast<int64_t>(rows.size()), n);
    EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));
    EXPECT_EQ(std::set<int64_t>(rows.begin(), rows.end()).size(), rows.size());
    EXPECT_GE(rows.front(), 0);
    EXPECT_LT(rows.back(), 100);
    EXPECT_EQ(rows_to_judge(100, o), rows);  // same seed, same rows
  }
  o.sample_rows = 10;
  const std::vector<int64_t> a = rows_to_judge(1000, o);
  o.seed += 1;
  EXPECT_NE(rows_to_judge(1000, o), a);
  // 0 or at least nq: every row.
  for (int64_t n : {0, 100, 250}) {
    o.sample_rows = n;
    const std::vector<int64_t> all = rows_to_judge(100, o);
    ASSERT_EQ(all.size(), 100u);
    for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(all[i], i);
  }
  // Not always the same rows: over 60 seeds, samples of 5 of 20 cover every row.
  std::set<int64_t> seen;
  o.sample_rows = 5;
  for (uint64_t s = 0; s < 60; ++s) {
    o.seed = testing::test_seed() * 131 + s;
    for (int64_t i : rows_to_judge(20, o)) seen.insert(i);
  }
  EXPECT_EQ(seen.size(), 20u);
}

TEST(JudgeSampling, JudgesExactlyTheSampledRows) {
  std::mt19937_64 rng(testing::test_seed());
  Problem p;
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 40, 120, 4, 16, 8);
  const CandidateOutput good = reference_output(p);
  JudgeOptions o;
  o.sample_rows = 7;
  o.seed = testing::test_seed() + 3;
  const std::vector<int64_t> rows = rows_to_judge(40, o);
  // Break every row: each row's first slot duplicates its second.
  CandidateOutput all_bad = good;
  for (int64_t i = 0; i < 40; ++i) all_bad.index[i * 8] = all_bad.index[i * 8 + 1];
  const Report r = judge_with(p, all_bad, "exact", o);
  EXPECT_EQ(r.selection.rows_total, 40);
  EXPECT_EQ(r.selection.rows_judged, 7);
  EXPECT_EQ(r.selection.invalid, 7);
  ASSERT_EQ(r.selection.worst.size(), 7u);
  for (const RowVerdict& v : r.selection.worst)
    EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), v.row)) << v.row;
  // Break only rows outside the sample: nothing is seen.
  CandidateOutput outside = good;
  for (int64_t i = 0; i < 40; ++i)
    if (!std::binary_search(rows.begin(), rows.end(), i)) outside.index[i * 8] = outside.index[i * 8 + 1];
  const Report ro = judge_with(p, outside, "exact", o);
  EXPECT_EQ(ro.selection.exact, 7);
  EXPECT_EQ(ro.selection.invalid, 0);
  // Break one sampled row: it is seen.
  CandidateOutput inside = good;
  inside.index[rows[3] * 8] = inside.index[rows[3] * 8 + 1];
  const Report ri = judge_with(p, inside, "exact", o);
  EXPECT_EQ(ri.selection.invalid, 1);
  ASSERT_EQ(ri.selection.worst.size(), 1u);
  EXPECT_EQ(ri.selection.worst[0].row, rows[3]);
}

// ---- precomputed reference ----------------------------------------------------------------

ref::Result precomputed(const Problem& p, const JudgeOptions& o) {
  FlatView fv;
  EXPECT_TRUE(flat_view(p, &fv).ok());
  Problem sub;
  sub.path = p.path;
  sub.flat = restrict_rows(fv.in, rows_to_judge(p.rows(), o));
  ref::Options ro = p.options;
  ro.index_base = ref::IndexBase::kRelative;
  ro.want_logits = true;
  ref::Result rr;
  EXPECT_TRUE(run_reference(sub, ro, &rr).ok());
  return rr;
}

void expect_same_report_with_precomputed_reference(const Problem& p, CandidateOutput c) {
  JudgeOptions o;
  o.sample_rows = 5;
  o.seed = testing::test_seed();
  ASSERT_TRUE(tolerance_by_name("tensor_core", p.h(), p.d(), &o.tolerance).ok());
  Report computed;
  ASSERT_TRUE(judge(p, c, o, &computed).ok());
  const ref::Result rr = precomputed(p, o);
  o.reference = &rr;
  Report given;
  ASSERT_TRUE(judge(p, c, o, &given).ok());
  EXPECT_EQ(given.to_json().dump(), computed.to_json().dump());
  EXPECT_LT(computed.selection.exact, 5) << "the candidate should be wrong somewhere";
}

TEST(JudgeReference, PrecomputedGivesTheSameReportFlat) {
  std::mt19937_64 rng(testing::test_seed());
  Problem p;
  p.path = ref::Path::kHisa;
  p.options.hisa_block = 16;
  p.options.hisa_m = 4;
  p.flat = testing::random_inputs(rng, ref::Precision::kFp8, 30, 150, 4, 16, 16);
  CandidateOutput c = reference_output(p);
  for (int64_t i = 0; i < 30; ++i) std::swap(c.index[i * 16], c.index[i * 16 + 15]);  // order only
  for (int64_t i = 0; i < 30; ++i) c.index[i * 16 + 3] = -1;                            // a dropped key
  for (float& x : c.logits)
    if (x != kNegInf) x *= 1.0f + 0x1p-20f;
  expect_same_report_with_precomputed_reference(p, c);
}

TEST(JudgeReference, PrecomputedGivesTheSameReportPaged) {
  const Problem p = paged_problem(ref::Precision::kFp8, 1, ref::IndexBase::kAbsolute, 7);
  CandidateOutput c = reference_output(p);
  for (int64_t i = 0; i < p.rows(); ++i) c.index[i * p.k() + 2] = c.index[i * p.k() + 5];
  expect_same_report_with_precomputed_reference(p, c);
}

TEST(JudgeReference, MismatchedPrecomputedReferenceIsAnError) {
  std::mt19937_64 rng(testing::test_seed());
  Problem p;
  p.flat = testing::random_inputs(rng, ref::Precision::kFp32, 10, 64, 4, 16, 8);
  const CandidateOutput c = reference_output(p);
  JudgeOptions o;
  const ref::Result wrong_rows = [&] {
    JudgeOptions five;
    five.sample_rows = 5;
    return precomputed(p, five);
  }();
  o.reference = &wrong_rows;  // 5 rows, but all 10 are judged
  Report r;
  const Status st = judge(p, c, o, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "precomputed reference")) << st.message();
}

// ---- output shape -------------------------------------------------------------------------

TEST(JudgeShape, WrongShapesAreCleanErrors) {
  const Problem p = short_problem();  // [3, 4]
  CandidateOutput c = output(p, {{6, 0, 2, 3}, {0, 1, -1, -1}, {-1, -1, -1, -1}});
  Report r;
  CandidateOutput k3 = c;
  k3.k = 3;
  Status st = judge(p, k3, {}, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "[3, 3] but the problem needs [3, 4]")) << st.message();
  CandidateOutput short_index = c;
  short_index.index.pop_back();
  st = judge(p, short_index, {}, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "11 elements")) << st.message();
}

}  // namespace
}  // namespace indexlab::compare
