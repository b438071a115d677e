// Every validation error path of the reference: each names the field and the index at fault.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "reference/problem.h"
#include "tests/common/random_problem.h"

namespace indexlab::ref {
namespace {

Inputs good() {
  std::mt19937_64 rng(7);
  return indexlab::testing::random_inputs(rng, Precision::kFp8, 4, 20, 2, 8, 3);
}

void expect_error(const Inputs& in, const std::string& needle, Path p = Path::kDsa, Options o = {}) {
  Result r;
  Status st = run(p, in, o, &r);
  ASSERT_FALSE(st.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
}

struct Case {
  const char* name;
  std::function<void(Inputs&)> mutate;
  const char* needle;
};

TEST(RefValidation, FlatInputs) {
  const std::vector<Case> cases = {
      {"k zero", [](Inputs& in) { in.shape.k = 0; }, "k (top-K) must be >= 1, got 0"},
      {"h zero", [](Inputs& in) { in.shape.h = 0; }, "h (heads) must be >= 1"},
      {"d zero", [](Inputs& in) { in.shape.d = -1; }, "d (head dim) must be >= 1"},
      {"nq negative", [](Inputs& in) { in.shape.nq = -2; }, "nq must be >= 0"},
      {"nk huge", [](Inputs& in) { in.shape.nk = int64_t{1} << 40; }, "exceeds the int32 index range"},
      {"q size", [](Inputs& in) { in.q.pop_back(); }, "q has 63 elements but its shape [nq, h, d] needs 64"},
      {"k size", [](Inputs& in) { in.k.push_back(1); }, "k has 161 elements"},
      {"w size", [](Inputs& in) { in.w.pop_back(); }, "w has 7 elements"},
      {"ks size", [](Inputs& in) { in.ks.pop_back(); }, "ks has 3 elements"},
      {"ke size", [](Inputs& in) { in.ke.push_back(0); }, "ke has 5 elements"},
      {"scale size", [](Inputs& in) { in.k_scale.pop_back(); }, "k_scale has 19 elements"},
      {"scale negative", [](Inputs& in) { in.k_scale[5] = -0.5f; }, "k_scale[5] = -0.5 must be positive"},
      {"scale nan", [](Inputs& in) { in.k_scale[6] = NAN; }, "k_scale[6] = nan must be positive"},
      {"scale zero", [](Inputs& in) { in.k_scale[0] = 0.0f; }, "k_scale[0] = 0 must be positive"},
      {"q_scale", [](Inputs& in) { in.q_scale[3] = INFINITY; }, "q_scale[3] = inf must be positive"},
      {"ks negative", [](Inputs& in) { in.ks[2] = -1; }, "ks[2] = -1 is negative"},
      {"ke past nk", [](Inputs& in) { in.ke[1] = 21; }, "ke[1] = 21 exceeds nk = 20"},
      {"ks > ke", [](Inputs& in) { in.ks[3] = 19; in.ke[3] = 10; }, "ks[3] = 19 is greater than ke[3] = 10"},
      {"seq_end", [](Inputs& in) { in.seq_end = {20, 20, 5, 20}; }, "seq_end[2] = 5 must lie in [ke[2]"},
      {"seq_end size", [](Inputs& in) { in.seq_end = {20}; }, "seq_end has 1 elements"},
      {"q nan", [](Inputs& in) { in.q[2 * 8 + 3] = NAN; }, "q[1,0,3] = nan is not finite"},
      {"k inf", [](Inputs& in) { in.k[9] = INFINITY; }, "k[1,1] = inf is not finite"},
      {"w nan", [](Inputs& in) { in.w[5] = NAN; }, "w[2,1] = nan is not finite"},
      {"q not e4m3", [](Inputs& in) { in.q[0] = 0.3f; }, "q[0,0,0] = 0.3 is not a fp8 value"},
      {"k not e4m3", [](Inputs& in) { in.k[17] = 449.0f; }, "k[2,1] = 449 is not a fp8 value"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Inputs in = good();
    c.mutate(in);
    expect_error(in, c.needle);
  }
}

TEST(RefValidation, NonFiniteOptOut) {
  Inputs in = good();
  in.q[0] = NAN;
  Options o;
  o.allow_nonfinite = true;
  Result r;
  Status st = run(Path::kDsa, in, o, &r);
  ASSERT_TRUE(st.ok()) << st.message();
  // Row 0's scores are NaN everywhere the NaN head is summed: NaN never wins, rows pad with -1.
  for (int t = 0; t < r.k; ++t) {
    if (r.index[t] >= 0) EXPECT_FALSE(std::isnan(r.score[t]));
  }
}

TEST(RefValidation, PathOptions) {
  Inputs in = good();
  Options o;
  o.hisa_m = 1;
  expect_error(in, "hisa_m (blocks kept) must be >= 2, got 1", Path::kHisa, o);
  o = {};
  o.hisa_block = 0;
  expect_error(in, "hisa_block (B) must be >= 1", Path::kHisa, o);
  o = {};
  o.hisa_block = 1;
  o.hisa_m = 2;
  expect_error(in, "hisa_m * hisa_block = 2 must be >= k = 3", Path::kHisa, o);
  o = {};
  o.misa_heads = 3;
  expect_error(in, "misa_heads must lie in [1, h = 2], got 3", Path::kMisa, o);
  o.misa_heads = 0;
  expect_error(in, "misa_heads must lie in [1, h = 2], got 0", Path::kMisaDagger, o);
  o = {};
  o.misa_heads = 1;
  o.misa_block = 0;
  expect_error(in, "misa_block (Br) must be >= 1", Path::kMisa, o);
  o = {};
  o.misa_heads = 1;
  o.dagger_k1 = 2;
  expect_error(in, "dagger_k1 = 2 must be >= k = 3", Path::kMisaDagger, o);
  o = {};
  o.threads = -1;
  expect_error(in, "threads must be >= 0", Path::kDsa, o);
  Result r;
  EXPECT_FALSE(run(Path::kDsa, in, {}, nullptr).ok());
}

PagedInputs good_paged() {
  PagedInputs p;
  p.precision = Precision::kFp8;
  p.h = 2;
  p.d = 8;
  p.k = 4;
  p.next_n = 2;
  p.batch = 2;
  p.num_pages = 3;
  p.cache.assign(p.num_pages * p.page_bytes(), 0x38);  // code 0x38 = 1.0
  for (int64_t pg = 0; pg < p.num_pages; ++pg)
    for (int t = 0; t < 64; ++t) {
      const float s = 0.25f;
      std::memcpy(&p.cache[pg * p.page_bytes() + 64 * 8 + t * 4], &s, 4);
    }
  p.max_pages = 2;
  p.block_table = {2, 0, 1, -1};
  p.context_lens = {100, 30};
  p.q.assign(4 * 2 * 8, 0.5f);
  p.w.assign(4 * 2, 0.75f);
  return p;
}

TEST(RefValidation, PagedInputs) {
  struct PCase {
    const char* name;
    std::function<void(PagedInputs&)> mutate;
    const char* needle;
  };
  const std::vector<PCase> cases = {
      {"next_n", [](PagedInputs& p) { p.next_n = 0; }, "next_n must be >= 1, got 0"},
      {"k", [](PagedInputs& p) { p.k = 0; }, "k (top-K) must be >= 1"},
      {"cache size", [](PagedInputs& p) { p.cache.pop_back(); }, "cache has"},
      {"table size", [](PagedInputs& p) { p.block_table.pop_back(); }, "block_table has 3 elements"},
      {"ctx size", [](PagedInputs& p) { p.context_lens.pop_back(); }, "context_lens has 1 elements"},
      {"ctx negative", [](PagedInputs& p) { p.context_lens[1] = -1; }, "context_lens[1] = -1 must lie in [0"},
      {"ctx too long", [](PagedInputs& p) { p.context_lens[0] = 129; }, "context_lens[0] = 129 must lie in [0, max_pages * page_tokens = 128]"},
      {"page out of range", [](PagedInputs& p) { p.block_table[1] = 3; }, "block_table[0,1] = 3 is not a page in [0, num_pages = 3)"},
      {"page negative", [](PagedInputs& p) { p.block_table[2] = -1; }, "block_table[1,0] = -1 is not a page"},
      {"q size", [](PagedInputs& p) { p.q.pop_back(); }, "q has 63 elements but its shape [batch * next_n, h, d]"},
      {"w size", [](PagedInputs& p) { p.w.push_back(0); }, "w has 9 elements"},
      {"q nan", [](PagedInputs& p) { p.q[9] = NAN; }, "q[0,1,1] = nan is not finite"},
      {"q not fp8", [](PagedInputs& p) { p.q[0] = 0.1f; }, "q[0,0,0] = 0.1 is not a fp8 value"},
      {"scale", [](PagedInputs& p) { const float s = -1; std::memcpy(&p.cache[0 * p.page_bytes() + 64 * 8 + 5 * 4], &s, 4); },
       "cache page 0 slot 5 (sequence 0, position 69) scale = -1 must be positive and finite"},
      {"nan code", [](PagedInputs& p) { p.cache[1 * p.page_bytes() + 3 * 8 + 2] = 0x7F; },
       "cache page 1 slot 3 (sequence 1, position 3) element 2 = nan is not finite"},
  };
  for (const PCase& c : cases) {
    SCOPED_TRACE(c.name);
    PagedInputs p = good_paged();
    c.mutate(p);
    Result r;
    Status st = run_paged(Path::kDsa, p, {}, &r);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find(c.needle), std::string::npos) << st.message();
  }
  // The unmodified problem runs, and the unused table entry (-1 past the context) is never read.
  PagedInputs p = good_paged();
  Result r;
  Status st = run_paged(Path::kDsa, p, {}, &r);
  EXPECT_TRUE(st.ok()) << st.message();
}

TEST(RefValidation, ParseNames) {
  Precision p;
  Path path;
  Routing rt;
  EXPECT_TRUE(parse_precision("bf16", &p).ok());
  EXPECT_EQ(p, Precision::kBf16);
  EXPECT_NE(parse_precision("fp16", &p).message().find("'fp16' is not one of fp32, bf16, fp8"), std::string::npos);
  EXPECT_TRUE(parse_path("misa_dagger", &path).ok());
  EXPECT_EQ(path, Path::kMisaDagger);
  EXPECT_FALSE(parse_path("nsa", &path).ok());
  EXPECT_TRUE(parse_routing("q_norm", &rt).ok());
  EXPECT_FALSE(parse_routing("random", &rt).ok());
}

}  // namespace
}  // namespace indexlab::ref
