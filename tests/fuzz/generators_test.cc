/// Generators: determinism, validity, and that each SPEC section 10 class is reached.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "tests/common/random_problem.h"
#include "compare/problem_io.h"
#include "fuzz/generators.h"
#include "reference/numerics.h"

namespace indexlab {
namespace {

std::vector<float> all_values(const compare::Problem& p) {
  std::vector<float> v = p.paged ? p.paged_in.q : p.flat.q;
  if (!p.paged) v.insert(v.end(), p.flat.k.begin(), p.flat.k.end());
  return v;
}

TEST(FuzzGenerators, SameSeedAndIndexGiveTheSameCase) {
  fuzz::GenConfig cfg;
  for (int64_t i = 0; i < 50; ++i) {
    fuzz::Case a, b;
    ASSERT_TRUE(fuzz::make_case(cfg, 99, i, &a).ok());
    ASSERT_TRUE(fuzz::make_case(cfg, 99, i, &b).ok());
    EXPECT_EQ(a.label(), b.label());
    EXPECT_EQ(compare::problem_to_json(a.problem), compare::problem_to_json(b.problem));
    compare::TensorMap ta, tb;
    ASSERT_TRUE(compare::inputs_to_tensors(a.problem, &ta).ok());
    ASSERT_TRUE(compare::inputs_to_tensors(b.problem, &tb).ok());
    for (const auto& [name, t] : ta) EXPECT_EQ(t.data, tb.at(name).data) << i << " " << name;
  }
  fuzz::Case a, b;
  ASSERT_TRUE(fuzz::make_case(cfg, 99, 3, &a).ok());
  ASSERT_TRUE(fuzz::make_case(cfg, 100, 3, &b).ok());
  EXPECT_NE(a.problem.name, b.problem.name);
}

TEST(FuzzGenerators, EveryGeneratorMakesValidProblems) {
  fuzz::GenConfig cfg;
  cfg.allow_long = true;
  for (const std::string& g : fuzz::generator_names()) {
    EXPECT_FALSE(fuzz::generator_reaches(g).empty()) << g;
    const int n = g == "long_rows" ? 2 : 60;
    for (int64_t i = 0; i < n; ++i) {
      fuzz::Case c;
      ASSERT_TRUE(fuzz::make_case_with(g, "", cfg, testing::test_seed(), i, &c).ok()) << g;
      EXPECT_EQ(c.generator, g);
      compare::FlatView fv;
      Status st = compare::flat_view(c.problem, &fv);
      EXPECT_TRUE(st.ok()) << c.label() << " case " << i << ": " << st.message();
      const ref::Shape s{c.problem.rows(), 0, c.problem.h(), c.problem.d(), c.problem.k()};
      st = ref::validate_options(c.problem.path, s, c.problem.options);
      EXPECT_TRUE(st.ok()) << c.label() << " case " << i << ": " << st.message();
    }
  }
}

TEST(FuzzGenerators, RowClassesOfSpec10AreReached) {
  fuzz::GenConfig cfg;
  const uint64_t seed = testing::test_seed();
  auto count = [&](const std::string& g) {
    fuzz::RowClasses total;
    for (int64_t i = 0; i < 40; ++i) {
      fuzz::Case c;
      EXPECT_TRUE(fuzz::make_case_with(g, "", cfg, seed, i, &c).ok());
      fuzz::RowClasses r;
      EXPECT_TRUE(fuzz::classify_rows(c.problem, &r).ok());
      total.exactly_k += r.exactly_k;
      total.fewer_than_k += r.fewer_than_k;
      total.empty += r.empty;
      total.more_than_k += r.more_than_k;
    }
    return total;
  };
  const fuzz::RowClasses ek = count("exactly_k_visible");
  EXPECT_GT(ek.exactly_k, ek.fewer_than_k + ek.more_than_k);  // mostly exactly K
  EXPECT_GT(count("fewer_than_k").fewer_than_k, 40);
  EXPECT_GT(count("empty_rows").empty, 40);
  EXPECT_GT(count("paged_next_n").empty + count("paged_next_n").fewer_than_k, 0);
}

TEST(FuzzGenerators, PagedProblemsAreShuffledAndNextNReachesBeyondKernels) {
  fuzz::GenConfig cfg;
  int shuffled = 0, big_next_n = 0, garbage_cols = 0;
  for (int64_t i = 0; i < 60; ++i) {
    fuzz::Case c;
    ASSERT_TRUE(fuzz::make_case_with(i % 2 ? "paged_decode" : "paged_next_n", "", cfg, 3, i, &c).ok());
    ASSERT_TRUE(c.problem.paged);
    const ref::PagedInputs& g = c.problem.paged_in;
    big_next_n += g.next_n > 2;
    int64_t expect = 0;
    for (int64_t b = 0; b < g.batch; ++b) {
      const int64_t pages = (g.context_lens[b] + g.page_tokens - 1) / g.page_tokens;
      for (int64_t p = 0; p < pages; ++p) shuffled += g.block_table[b * g.max_pages + p] != expect++;
      for (int64_t p = pages; p < g.max_pages; ++p) {
        const int32_t x = g.block_table[b * g.max_pages + p];
        garbage_cols += x < 0 || x >= g.num_pages;
      }
    }
  }
  EXPECT_GT(shuffled, 0);
  EXPECT_GT(big_next_n, 10);
  EXPECT_GT(garbage_cols, 0);
}

TEST(FuzzGenerators, PagedPackUnpackRoundTrip) {
  fuzz::GenConfig cfg;
  for (int64_t i = 0; i < 30; ++i) {
    fuzz::Case c;
    ASSERT_TRUE(fuzz::make_case_with("paged_decode", "", cfg, 8, i, &c).ok());
    fuzz::PagedParts parts;
    ASSERT_TRUE(fuzz::unpack_paged(c.problem.paged_in, &parts).ok());
    compare::Problem q = c.problem;
    ASSERT_TRUE(fuzz::pack_paged(parts, 77, 2, 1, &q.paged_in).ok());
    compare::FlatView a, b;
    ASSERT_TRUE(compare::flat_view(c.problem, &a).ok());
    ASSERT_TRUE(compare::flat_view(q, &b).ok());
    EXPECT_EQ(a.in.ks, b.in.ks);
    EXPECT_EQ(a.in.ke, b.in.ke);
    EXPECT_EQ(a.in.k_scale, b.in.k_scale);
    ASSERT_EQ(a.in.k.size(), b.in.k.size());
    EXPECT_EQ(std::memcmp(a.in.k.data(), b.in.k.data(), a.in.k.size() * 4), 0);
  }
}

TEST(FuzzGenerators, ValueClassesHoldTheirValues) {
  fuzz::GenConfig cfg;
  cfg.paged = false;
  auto any_of = [&](const std::string& cls, ref::Precision prec, auto pred) {
    fuzz::GenConfig c2 = cfg;
    c2.precisions = {prec};
    for (int64_t i = 0; i < 30; ++i) {
      fuzz::Case c;
      EXPECT_TRUE(fuzz::make_case_with("random", cls, c2, 4, i, &c).ok());
      EXPECT_EQ(c.values, cls);
      for (float x : all_values(c.problem))
        if (pred(x)) return true;
    }
    return false;
  };
  EXPECT_TRUE(any_of("saturation", ref::Precision::kFp8, [](float x) { return std::fabs(x) == 448.0f; }));
  EXPECT_TRUE(any_of("saturation", ref::Precision::kFp32, [](float x) { return std::fabs(x) == 464.0f; }));
  EXPECT_TRUE(any_of("subnormal", ref::Precision::kFp32, [](float x) { return x != 0 && std::fpclassify(x) == FP_SUBNORMAL; }));
  EXPECT_TRUE(any_of("subnormal", ref::Precision::kFp8, [](float x) { return x != 0 && std::fabs(x) < 0x1p-6f; }));
  EXPECT_TRUE(any_of("signed_zero", ref::Precision::kBf16, [](float x) { return x == 0 && std::signbit(x); }));
  EXPECT_FALSE(any_of("narrow_range", ref::Precision::kFp32, [](float x) { return x < 1.0f || x >= 1.25f; }));
  EXPECT_FALSE(any_of("low_bits", ref::Precision::kFp32, [](float x) { return x < 1.0f || x >= 1.25f; }));
  EXPECT_TRUE(any_of("nonfinite", ref::Precision::kFp32, [](float x) { return !std::isfinite(x); }));
  // NaN and Inf never appear outside their own labelled class.
  for (int64_t i = 0; i < 200; ++i) {
    fuzz::Case c;
    ASSERT_TRUE(fuzz::make_case(fuzz::GenConfig{}, 5, i, &c).ok());
    EXPECT_NE(c.values, "nonfinite");
    EXPECT_FALSE(c.problem.options.allow_nonfinite);
    for (float x : all_values(c.problem)) ASSERT_TRUE(std::isfinite(x)) << c.label();
  }
}

TEST(FuzzGenerators, HeavyTiesProduceTiedKthScores) {
  fuzz::GenConfig cfg;
  cfg.paged = false;
  int tied_rows = 0;
  for (int64_t i = 0; i < 40; ++i) {
    fuzz::Case c;
    ASSERT_TRUE(fuzz::make_case_with("heavy_ties", "", cfg, 6, i, &c).ok());
    ref::Options o = c.problem.options;
    o.want_logits = true;
    ref::Result r;
    ASSERT_TRUE(compare::run_reference(c.problem, o, &r).ok());
    const int K = r.k;
    for (int64_t row = 0; row < r.nq; ++row) {
      if (r.index[row * K + K - 1] < 0) continue;
      const float kth = r.score[row * K + K - 1];
      int64_t equal = 0;
      for (int64_t j = 0; j < r.logits_cols; ++j) equal += r.logits[row * r.logits_cols + j] == kth;
      tied_rows += equal > 1;
    }
  }
  EXPECT_GT(tied_rows, 20);
}

TEST(FuzzGenerators, LongRowsReachAMillionKeys) {
  fuzz::GenConfig cfg;
  cfg.allow_long = true;
  fuzz::Case c;
  ASSERT_TRUE(fuzz::make_case_with("long_rows", "", cfg, 1, 0, &c).ok());
  EXPECT_GE(c.problem.flat.shape.nk, int64_t{1} << 20);
  int64_t maxlen = 0;
  for (int64_t i = 0; i < c.problem.flat.shape.nq; ++i)
    maxlen = std::max<int64_t>(maxlen, c.problem.flat.ke[i] - c.problem.flat.ks[i]);
  EXPECT_GE(maxlen, int64_t{1} << 20);
  // Not drawn unless enabled.
  fuzz::GenConfig off;
  for (int64_t i = 0; i < 100; ++i) {
    ASSERT_TRUE(fuzz::make_case(off, 1, i, &c).ok());
    EXPECT_NE(c.generator, "long_rows");
  }
}

}  // namespace
}  // namespace indexlab
