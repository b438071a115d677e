// ExactSum: exact accumulation and one correct rounding to fp32, midpoints included.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "reference/exact_sum.h"
#include "tests/common/random_problem.h"

namespace indexlab::ref {
namespace {

float sum_of(std::initializer_list<double> xs) {
  ExactSum s;
  for (double x : xs) s.add(x);
  return s.round_to_float();
}

TEST(ExactSum, MidpointsAreDecidedByTheResidual) {
  const double mid = 1.0 + std::ldexp(1.0, -24);  // halfway between 1 and 1 + 2^-23
  const float up = std::nextafter(1.0f, 2.0f);
  EXPECT_EQ(sum_of({mid}), 1.0f);                          // a tie rounds to even
  EXPECT_EQ(sum_of({mid, std::ldexp(1.0, -80)}), up);      // just above the midpoint
  EXPECT_EQ(sum_of({mid, -std::ldexp(1.0, -80)}), 1.0f);   // just below it
  // The same sums built from pieces that cancel: fp64 addition alone would lose 2^-80.
  EXPECT_EQ(sum_of({1e30, mid, std::ldexp(1.0, -80), -1e30}), up);
  EXPECT_EQ(sum_of({std::ldexp(1.0, -80), 3.0, mid, -3.0}), up);
  EXPECT_EQ(sum_of({}), 0.0f);
  EXPECT_EQ(sum_of({2.5, -2.5}), 0.0f);
}

TEST(ExactSum, MatchesAnExactIntegerSumOnRandomTerms) {
  // Terms k * 2^-60 with |k| < 2^40: their exact sum is an __int128 count of 2^-60.
  std::mt19937_64 rng(indexlab::testing::test_seed() + 5);
  std::uniform_int_distribution<int64_t> u(-(int64_t{1} << 40), int64_t{1} << 40);
  std::uniform_int_distribution<int> shift(0, 60);
  for (int trial = 0; trial < 2000; ++trial) {
    ExactSum s;
    __int128 total = 0;
    for (int t = 0; t < 50; ++t) {
      const int64_t k = u(rng) >> shift(rng);
      s.add(std::ldexp(static_cast<double>(k), -60));
      total += k;
    }
    // Reference rounding: the exact value as a long double is exact here (< 64 bits), then RNE.
    const long double exact = std::ldexp(static_cast<long double>(total), -60);
    ASSERT_EQ(s.round_to_float(), static_cast<float>(exact)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace indexlab::ref
