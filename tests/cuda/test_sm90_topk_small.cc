// The short-row top-k kernel (INDEXLAB_TOPK=short: every row it can hold, by length class: one
// CTA a row, the row's keys in shared memory) against a plain CPU canonical top-k, and against
// the cluster kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/api.h"
#include "tests/common/canonical_topk.h"
#include "tests/common/random_problem.h"
#include "tests/common/sm90_test.h"

namespace indexlab {
namespace {

using ::indexlab::testing::bits;
using ::indexlab::testing::same_float;
using ::indexlab::testing::seed_for;


/// Sets INDEXLAB_TOPK for the scope (nullptr: unset), restoring it after.
struct TopkEnv {
  explicit TopkEnv(const char* v) {
    const char* old = std::getenv("INDEXLAB_TOPK");
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (v) setenv("INDEXLAB_TOPK", v, 1);
    else unsetenv("INDEXLAB_TOPK");
  }
  ~TopkEnv() {
    if (had_) setenv("INDEXLAB_TOPK", old_.c_str(), 1);
    else unsetenv("INDEXLAB_TOPK");
  }
  bool had_ = false;
  std::string old_;
};

void check(const std::vector<float>& x, int64_t rows, int64_t cols, const std::vector<int32_t>& ks,
           const std::vector<int32_t>& ke, int k, bool absolute, const std::string& what) {
  std::vector<int32_t> gi;
  std::vector<float> gs;
  const auto base = absolute ? ref::IndexBase::kAbsolute : ref::IndexBase::kRelative;
  Status st = cuda::topk_rows(x, rows, cols, ks, ke, k, base, &gi, &gs);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  std::vector<int32_t> ci(static_cast<size_t>(k));
  std::vector<float> cs(static_cast<size_t>(k));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t lo = ks.empty() ? 0 : ks[r], hi = ke.empty() ? cols : ke[r];
    testing::canonical_topk(x.data() + r * cols, lo, hi, k, absolute, ci.data(), cs.data());
    for (int t = 0; t < k; ++t) {
      ASSERT_EQ(gi[r * k + t], ci[t]) << what << ": row " << r << " slot " << t;
      ASSERT_TRUE(same_float(gs[r * k + t], cs[t])) << what << ": row " << r << " slot " << t;
    }
  }
  // The cluster kernel must give the same bytes on the same rows.
  {
    TopkEnv env("cluster");
    std::vector<int32_t> ci2;
    std::vector<float> cs2;
    ASSERT_TRUE(cuda::topk_rows(x, rows, cols, ks, ke, k, base, &ci2, &cs2).ok());
    ASSERT_EQ(gi, ci2) << what << ": short-row and cluster kernels differ";
    ASSERT_EQ(0, std::memcmp(gs.data(), cs2.data(), gs.size() * 4)) << what;
  }
  std::printf("[%s] rows=%lld cols=%lld k=%d: canonical, equal to the cluster kernel\n", what.c_str(),
              static_cast<long long>(rows), static_cast<long long>(cols), k);
}

TEST(Sm90TopkSmall, RaggedRowsEveryLengthClass) {
  SKIP_WITHOUT_GPU();
  TopkEnv env("short");
  std::mt19937_64 rng(testing::test_seed() ^ 0x5a11u);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t cols = 16384, rows = 40;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = nd(rng) * 3.7f + 0.01f;
  // Specials in the even rows only: a row holding +inf takes the key digits from the start, a
  // finite row the linear first pass.
  for (int t = 0; t < 2000; ++t) {
    const size_t r = 2 * (rng() % (rows / 2)), c = rng() % cols;
    x[r * cols + c] = (t % 3 == 0) ? NAN : (t % 3 == 1 ? -INFINITY : INFINITY);
  }
  const int lens[] = {0, 1, 2, 3, 31, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 8191, 8192, 8193, 12000, 16383, 16384};
  std::vector<int32_t> ks(rows), ke(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int len = lens[r % (sizeof(lens) / sizeof(lens[0]))];
    ks[r] = static_cast<int32_t>(std::min<int64_t>(r % 7, cols - len));
    ke[r] = ks[r] + len;
  }
  for (int k : {1, 5, 2048, 8192}) {
    check(x, rows, cols, ks, ke, k, false, "Small_Ragged_K" + std::to_string(k));
    check(x, rows, cols, ks, ke, k, true, "Small_Ragged_Abs_K" + std::to_string(k));
  }
}

TEST(Sm90TopkSmall, TiesAndNarrowRanges) {
  SKIP_WITHOUT_GPU();
  TopkEnv env("short");
  std::mt19937_64 rng(testing::test_seed() ^ 0x71e5u);
  // 8197 columns: the 256-thread instance; 24581: the 1024-thread one (rows over 16384).
  for (const int64_t cols : {int64_t{8192 + 5}, int64_t{24576 + 5}}) {
    std::vector<std::vector<float>> rv;
    rv.push_back(std::vector<float>(cols, 0.75f));  // all equal: ties decide everything
    std::vector<float> r1(cols);
    for (auto& v : r1) v = static_cast<float>(rng() % 5) * 0.125f - 0.25f;  // 5 values, heavy ties
    rv.push_back(r1);
    std::vector<float> r2(cols);
    for (int64_t j = 0; j < cols; ++j) {  // keys differing only in the last 8 bits (the 3rd pass)
      const uint32_t u = 0x3F800000u | static_cast<uint32_t>(rng() & 0xFF);
      std::memcpy(&r2[j], &u, 4);
    }
    rv.push_back(r2);
    std::vector<float> r3(cols);
    for (auto& v : r3) v = (rng() % 2) ? -0.0f : 0.0f;  // +-0 only
    rv.push_back(r3);
    std::vector<float> r4(cols, -INFINITY);  // a handful valid
    for (int t = 0; t < 9; ++t) r4[rng() % cols] = 1.5f + t;
    rv.push_back(r4);
    std::vector<float> r5(cols, NAN);  // nothing valid
    rv.push_back(r5);
    std::vector<float> x;
    for (auto& r : rv) x.insert(x.end(), r.begin(), r.end());
    const int64_t rows = static_cast<int64_t>(rv.size());
    for (int k : {1, 100, 2048, 4097, 8192})
      check(x, rows, cols, {}, {}, k, false, "Small_Ties_C" + std::to_string(cols) + "_K" + std::to_string(k));
  }
}

// The linear first pass (bins over [min, max] of the row's values) and its hand-over to the key
// digits: outliers that leave every other value in one bin, ranges that overflow or whose scale
// does (those rows take the key digits), magnitudes over 60 decades, values on the bin edges,
// whole bins at the K-th largest, and zeros of both signs and subnormals where the K-th largest
// falls (the fast path keeps a winner's raw float bits until it ranks them, and -0 must still tie
// with +0).
TEST(Sm90TopkSmall, LinearBinsEdgeCases) {
  SKIP_WITHOUT_GPU();
  TopkEnv env("short");
  std::mt19937_64 rng(testing::test_seed() ^ 0x11b5u);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  for (const int64_t cols : {int64_t{8192}, int64_t{40000}}) {  // 256- and 1024-thread instances
    std::vector<std::vector<float>> rv;
    std::vector<float> r(cols);
    for (auto& v : r) v = u01(rng) * 1.37f - 0.41f;  // plain finite row
    rv.push_back(r);
    for (auto& v : r) v = 1.0f + u01(rng) * 0.0009765625f;  // one bin but for the two outliers
    r[17] = 1e30f;
    r[4000] = -1e30f;
    rv.push_back(r);
    for (auto& v : r) v = (u01(rng) * 2.0f - 1.0f) * 3.3e38f;  // max - min overflows
    rv.push_back(r);
    for (auto& v : r) {  // subnormals of both signs: 2048 / (max - min) overflows
      const uint32_t b = static_cast<uint32_t>(rng() & 0x7FFFFFu) | (rng() % 2 ? 0x80000000u : 0u);
      std::memcpy(&v, &b, 4);
    }
    rv.push_back(r);
    for (auto& v : r) v = (rng() % 2 ? 1.0f : -1.0f) * std::pow(10.0f, u01(rng) * 60.0f - 30.0f);
    rv.push_back(r);
    const float lo = -0.3f, step = 0.7f / 2048.0f;  // on the bin edges, four copies each
    for (int64_t j = 0; j < cols; ++j) r[j] = lo + static_cast<float>(j / 4) * step;
    std::shuffle(r.begin(), r.end(), rng);
    rv.push_back(r);
    for (int64_t j = 0; j < cols; ++j) r[j] = static_cast<float>(j % 2048) * 0.25f;  // whole bins
    rv.push_back(r);
    for (auto& v : r) {  // zeros of both signs and subnormals at the median (K = 4097 of 8192):
      const uint32_t kind = static_cast<uint32_t>(rng() % 8);  // the K-th largest near 0
      if (kind == 0) {
        v = -0.0f;
      } else if (kind == 1) {
        v = 0.0f;
      } else if (kind == 2) {
        const uint32_t b = static_cast<uint32_t>(rng() & 0xFFFu) | (rng() % 2 ? 0x80000000u : 0u);
        std::memcpy(&v, &b, 4);
      } else {
        v = u01(rng) * 2.0f - 1.0f;
      }
    }
    rv.push_back(r);
    std::vector<float> x;
    for (auto& row : rv) x.insert(x.end(), row.begin(), row.end());
    const int64_t rows = static_cast<int64_t>(rv.size());
    for (int k : {1, 100, 2047, 2048, 2049, 4097})
      check(x, rows, cols, {}, {}, k, false, "Small_Linear_C" + std::to_string(cols) + "_K" + std::to_string(k));
  }
}

// Rows of every length class in one call (ragged ks / ke over 60000 columns): (0, 8192] and
// (8192, 16384] on the 256-thread instance, (16384, mid] on the 1024-thread one (mid = 49152 at
// K <= 2048, 39104 at K = 8192), longer rows on the cluster kernel, which skips the others; the
// class edges +-1 in every position of the row list. Canonical, equal to the cluster kernel on
// every row, and bitwise identical over reruns; also with the cluster kernel's one-wave row loop,
// and with no (16384, mid] class (those rows then take the cluster kernel too).
TEST(Sm90TopkSmall, LengthClassesInOneCall) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(testing::test_seed() ^ 0xc1a5u);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t cols = 60000, rows = 600;  // more than two rows an SM: the default takes the classes
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = nd(rng) * 2.3f - 0.17f;
  for (int t = 0; t < 4000; ++t) {  // specials in every third row (the key-digit path)
    const size_t r = 3 * (rng() % (rows / 3)), c = rng() % cols;
    x[r * cols + c] = (t % 3 == 0) ? NAN : (t % 3 == 1 ? -INFINITY : INFINITY);
  }
  const int lens[] = {0, 1, 2047, 8191, 8192, 8193, 16383, 16384, 16385, 24000, 39103, 39104, 39105,
                      49151, 49152, 49153, 59999, 60000};
  const int nl = static_cast<int>(sizeof(lens) / sizeof(lens[0]));
  std::vector<int32_t> ks(rows), ke(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int len = (r % 5 == 4) ? static_cast<int>(rng() % (cols + 1)) : lens[(r * 7) % nl];
    ks[r] = static_cast<int32_t>(rng() % (cols - len + 1));
    ke[r] = ks[r] + len;
  }
  for (int k : {1, 2048, 8192}) {
    check(x, rows, cols, ks, ke, k, false, "Classes_K" + std::to_string(k));
    check(x, rows, cols, ks, ke, k, true, "Classes_Abs_K" + std::to_string(k));
  }
  std::vector<int32_t> i0, i1;
  std::vector<float> s0, s1;
  ASSERT_TRUE(cuda::topk_rows(x, rows, cols, ks, ke, 2048, ref::IndexBase::kRelative, &i0, &s0).ok());
  for (int rep = 0; rep < 3; ++rep) {
    ASSERT_TRUE(cuda::topk_rows(x, rows, cols, ks, ke, 2048, ref::IndexBase::kRelative, &i1, &s1).ok());
    ASSERT_EQ(i0, i1) << "rerun " << rep;
    ASSERT_EQ(0, std::memcmp(s0.data(), s1.data(), s0.size() * 4)) << "rerun " << rep;
  }
  {
    // TopkParams::min_len_hint skips the length classes below it; a hint that is wrong for most
    // rows (they are shorter) must still give every row its selection, as must a right one.
    int64_t shortest = cols;
    for (int64_t r = 0; r < rows; ++r) shortest = std::min<int64_t>(shortest, ke[r] - ks[r]);
    for (int64_t hint : {shortest, int64_t{30000}, int64_t{cols}}) {
      ASSERT_TRUE(cuda::topk_rows(x, rows, cols, ks, ke, 2048, ref::IndexBase::kRelative, &i1, &s1, hint).ok());
      ASSERT_EQ(i0, i1) << "min_len_hint " << hint;
      ASSERT_EQ(0, std::memcmp(s0.data(), s1.data(), s0.size() * 4)) << "min_len_hint " << hint;
    }
  }
  {
    // The cluster kernel's one-wave loop over the rows (taken by default only past 32 rows an SM).
    testing::ScopedEnv loop("INDEXLAB_TOPK_CLUSTER_LOOP", "1");
    check(x, rows, cols, ks, ke, 2048, false, "Classes_ClusterLoop_K2048");
    check(x, rows, cols, ks, ke, 8192, true, "Classes_ClusterLoop_Abs_K8192");
    std::vector<int32_t> i2;
    std::vector<float> s2;
    ASSERT_TRUE(cuda::topk_rows(x, rows, cols, ks, ke, 2048, ref::IndexBase::kRelative, &i2, &s2).ok());
    ASSERT_EQ(i0, i2) << "the cluster loop changed the output";
    ASSERT_EQ(0, std::memcmp(s0.data(), s2.data(), s0.size() * 4));
  }
  testing::ScopedEnv nomid("INDEXLAB_TOPK_MID_CAP", "16384");  // rows over 16384 to the cluster kernel
  check(x, rows, cols, ks, ke, 2048, false, "Classes_NoMid_K2048");
  testing::ScopedEnv loop("INDEXLAB_TOPK_CLUSTER_LOOP", "1");
  check(x, rows, cols, ks, ke, 2048, false, "Classes_NoMid_ClusterLoop_K2048");
}

TEST(Sm90TopkSmall, RerunsBitwiseIdentical) {
  SKIP_WITHOUT_GPU();
  TopkEnv env("short");
  std::mt19937_64 rng(testing::test_seed() ^ 0x4e4eu);
  const int64_t rows = 300, cols = 8192;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = static_cast<float>(rng() % 97) * 0.0625f - 1.5f;
  std::vector<int32_t> i0, i1;
  std::vector<float> s0, s1;
  ASSERT_TRUE(cuda::topk_rows(x, rows, cols, {}, {}, 2048, ref::IndexBase::kRelative, &i0, &s0).ok());
  for (int rep = 0; rep < 20; ++rep) {
    ASSERT_TRUE(cuda::topk_rows(x, rows, cols, {}, {}, 2048, ref::IndexBase::kRelative, &i1, &s1).ok());
    ASSERT_EQ(i0, i1) << "rerun " << rep;
    ASSERT_EQ(0, std::memcmp(s0.data(), s1.data(), s0.size() * 4)) << "rerun " << rep;
  }
  check(x, rows, cols, {}, {}, 2048, false, "Small_Rerun");
}

}  // namespace
}  // namespace indexlab
