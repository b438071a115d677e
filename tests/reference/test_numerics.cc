/// Tests of reference/numerics.h against slow, independently written decoders and encoders.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "reference/numerics.h"

namespace indexlab::ref {
namespace {

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// ---- slow e4m3 oracle: field decode with ldexp, encode by bracketing search over the table ------

double slow_e4m3_decode(int code) {
  const int sign = code >> 7;
  const int exponent = (code >> 3) & 15;
  const int mantissa = code & 7;
  if (exponent == 15 && mantissa == 7) return std::nan("");
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, -9) : std::ldexp(8 + mantissa, exponent - 10);
  return sign ? -magnitude : magnitude;
}

// Magnitudes of codes 0..0x7E, plus 480 (what 0x7F would be with an infinity-free extension): the
// grid that round-to-nearest-even sees before the overflow decision.
std::vector<double> e4m3_grid() {
  std::vector<double> grid;
  for (int code = 0; code <= 0x7E; ++code) grid.push_back(slow_e4m3_decode(code));
  grid.push_back(480.0);
  return grid;
}

// Returns the code in 0..0x7F of the grid point nearest to m >= 0 (ties to even code), or 0x80
// when m lies beyond the grid's last point.
int slow_nearest_e4m3_magnitude(double m) {
  static const std::vector<double> grid = e4m3_grid();
  if (m > grid.back()) return 0x80;
  const auto hi = std::lower_bound(grid.begin(), grid.end(), m);
  const int hi_code = static_cast<int>(hi - grid.begin());
  if (*hi == m || hi_code == 0) return hi_code;
  const int lo_code = hi_code - 1;
  const double mid = (grid[lo_code] + grid[hi_code]) / 2;  // exact: both have <= 4 significant bits
  if (m < mid) return lo_code;
  if (m > mid) return hi_code;
  return (lo_code % 2 == 0) ? lo_code : hi_code;
}

uint8_t slow_e4m3_satfinite(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const int code = slow_nearest_e4m3_magnitude(std::fabs(static_cast<double>(x)));
  return sign | static_cast<uint8_t>(code >= 0x7F ? 0x7E : code);
}

uint8_t slow_e4m3_nonsat(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return sign | 0x7F;
  const int code = slow_nearest_e4m3_magnitude(std::fabs(static_cast<double>(x)));
  return sign | static_cast<uint8_t>(code >= 0x7F ? 0x7F : code);
}

// ---- slow bf16 oracle -------------------------------------------------------------------------

double slow_bf16_decode(int pattern) {
  const int sign = pattern >> 15;
  const int exponent = (pattern >> 7) & 0xFF;
  const int mantissa = pattern & 0x7F;
  double magnitude;
  if (exponent == 0xFF) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity() : std::nan("");
  } else if (exponent == 0) {
    magnitude = std::ldexp(mantissa, -133);
  } else {
    magnitude = std::ldexp(128 + mantissa, exponent - 134);
  }
  return sign ? -magnitude : magnitude;
}

// Nearest bf16 by comparing with the midpoint of the two bf16 magnitudes that bracket |x|.
uint16_t slow_bf16(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isnan(x)) return sign | 0x7FC0;
  const double m = std::fabs(static_cast<double>(x));
  if (std::isinf(x)) return sign | 0x7F80;
  // lo: the largest non-negative bf16 pattern whose value is <= m (linear in pattern order).
  int lo = 0;
  for (int step = 1 << 14; step > 0; step >>= 1) {
    if (lo + step <= 0x7F7F && slow_bf16_decode(lo + step) <= m) lo += step;
  }
  if (slow_bf16_decode(lo) == m) return sign | static_cast<uint16_t>(lo);
  // The pattern after 0x7F7F (max finite) would be 2^128 on an unbounded grid: rounding there
  // overflows to infinity (0x7F80), which is exactly lo + 1.
  const double hi_value = lo == 0x7F7F ? std::ldexp(1.0, 128) : slow_bf16_decode(lo + 1);
  const double mid = (slow_bf16_decode(lo) + hi_value) / 2;
  const bool up = m > mid || (m == mid && (lo & 1));
  return sign | static_cast<uint16_t>(up ? lo + 1 : lo);
}

void expect_e4m3_conversions(float x) {
  ASSERT_EQ(float_to_e4m3_satfinite(x), slow_e4m3_satfinite(x))
      << "satfinite x=" << x << " bits=0x" << std::hex << bits(x);
  ASSERT_EQ(float_to_e4m3_nonsat(x), slow_e4m3_nonsat(x))
      << "nonsat x=" << x << " bits=0x" << std::hex << bits(x);
}

void expect_bf16_conversion(float x) {
  ASSERT_EQ(float_to_bf16(x), slow_bf16(x)) << "x=" << x << " bits=0x" << std::hex << bits(x);
}

// ---- decoding ----------------------------------------------------------------------------------

TEST(Numerics, E4m3DecodeAll256Codes) {
  for (int code = 0; code < 256; ++code) {
    const float got = e4m3_to_float(static_cast<uint8_t>(code));
    const double want = slow_e4m3_decode(code);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << "code 0x" << std::hex << code;
      EXPECT_EQ(code & 0x7F, 0x7F);
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << "code 0x" << std::hex << code;
      EXPECT_EQ(std::signbit(got), (code & 0x80) != 0) << "code 0x" << std::hex << code;
    }
  }
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), 0x1p-9f);
  EXPECT_EQ(e4m3_to_float(0x08), 0x1p-6f);
  EXPECT_EQ(e4m3_to_float(0xBB), -1.375f);
}

TEST(Numerics, Bf16DecodeAll65536Patterns) {
  for (int pattern = 0; pattern < 65536; ++pattern) {
    const float got = bf16_to_float(static_cast<uint16_t>(pattern));
    const double want = slow_bf16_decode(pattern);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << "pattern 0x" << std::hex << pattern;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << "pattern 0x" << std::hex << pattern;
      ASSERT_EQ(std::signbit(got), (pattern & 0x8000) != 0) << "pattern 0x" << std::hex << pattern;
    }
  }
}

// ---- e4m3 encoding -----------------------------------------------------------------------------

TEST(Numerics, E4m3EncodeRoundTripsEveryCode) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7F) == 0x7F) continue;
    const float v = e4m3_to_float(static_cast<uint8_t>(code));
    EXPECT_EQ(float_to_e4m3_satfinite(v), code) << "code 0x" << std::hex << code;
    EXPECT_EQ(float_to_e4m3_nonsat(v), code) << "code 0x" << std::hex << code;
    EXPECT_TRUE(is_e4m3_value(v));
  }
}

TEST(Numerics, E4m3EncodeStridedSweepOfAllFloats) {
  // Every 1021st bit pattern over the whole 32-bit space: both signs, all exponents, NaNs.
  for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += 1021) {
    expect_e4m3_conversions(from_bits(static_cast<uint32_t>(u)));
  }
}

TEST(Numerics, E4m3EncodeDenseNearEveryGridPointAndMidpoint) {
  // 300 consecutive floats on each side of every grid value and every midpoint, both signs.
  const std::vector<double> grid = e4m3_grid();
  std::vector<float> centres;
  for (size_t i = 0; i < grid.size(); ++i) {
    centres.push_back(static_cast<float>(grid[i]));
    if (i + 1 < grid.size()) centres.push_back(static_cast<float>((grid[i] + grid[i + 1]) / 2));
  }
  for (float c : centres) {
    for (float sign : {1.0f, -1.0f}) {
      float up = sign * c;
      float down = sign * c;
      for (int step = 0; step < 300; ++step) {
        expect_e4m3_conversions(up);
        expect_e4m3_conversions(down);
        up = next_up(up);
        down = next_down(down);
      }
    }
  }
}

TEST(Numerics, E4m3EncodeSpecialValues) {
  const float specials[] = {0.0f,      -0.0f,     kInf,         -kInf,       kNan,     -kNan,
                            FLT_MAX,   -FLT_MAX,  FLT_TRUE_MIN, FLT_MIN,     0x1p-10f, 0x1p-11f,
                            448.0f,    463.99f,   464.0f,       464.0001f,   479.99f,  480.0f,
                            480.0001f, 1e6f,      -463.99f,     -464.0f,     -464.0001f};
  for (float x : specials) expect_e4m3_conversions(x);
}

TEST(Numerics, E4m3EncodeHandWorkedCases) {
  // The 448 | 480 midpoint: 464 = 1.1101b * 2^8 ties, and 448 (mantissa 110b) is the even side.
  EXPECT_EQ(float_to_e4m3_satfinite(464.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3_nonsat(464.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3_satfinite(-464.0f), 0xFE);
  EXPECT_EQ(float_to_e4m3_satfinite(463.99f), 0x7E);
  EXPECT_EQ(float_to_e4m3_satfinite(464.0001f), 0x7E);
  EXPECT_EQ(float_to_e4m3_nonsat(464.0001f), 0x7F);
  EXPECT_EQ(float_to_e4m3_nonsat(-464.0001f), 0xFF);
  EXPECT_EQ(float_to_e4m3_nonsat(next_up(464.0f)), 0x7F);
  EXPECT_EQ(float_to_e4m3_satfinite(479.99f), 0x7E);
  EXPECT_EQ(float_to_e4m3_satfinite(480.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3_nonsat(480.0f), 0x7F);
  EXPECT_EQ(float_to_e4m3_satfinite(kInf), 0x7E);
  EXPECT_EQ(float_to_e4m3_satfinite(-kInf), 0xFE);
  EXPECT_EQ(float_to_e4m3_nonsat(-kInf), 0xFF);
  EXPECT_EQ(float_to_e4m3_satfinite(-kNan), 0x7F);  // satfinite drops a NaN's sign
  EXPECT_EQ(float_to_e4m3_nonsat(-kNan), 0xFF);
  EXPECT_EQ(float_to_e4m3_satfinite(-0.0f), 0x80);
  // Subnormals, unit 2^-9: 2^-10 ties between 0 and 1 unit (to 0); 1.5 and 2.5 units tie to 2.
  EXPECT_EQ(float_to_e4m3_satfinite(0x1p-10f), 0x00);
  EXPECT_EQ(float_to_e4m3_satfinite(-0x1p-10f), 0x80);
  EXPECT_EQ(float_to_e4m3_satfinite(next_up(0x1p-10f)), 0x01);
  EXPECT_EQ(float_to_e4m3_satfinite(0x1.8p-9f), 0x02);
  EXPECT_EQ(float_to_e4m3_satfinite(0x1.4p-8f), 0x02);
  EXPECT_EQ(float_to_e4m3_satfinite(next_up(0x1.4p-8f)), 0x03);
  // 7.5 units is the midpoint of 7 units (0x07) and 2^-6 (0x08): ties up to the even code 0x08.
  EXPECT_EQ(float_to_e4m3_satfinite(7.5f * 0x1p-9f), 0x08);
  // Normals: 1.3 lies between 1.25 (0x3A) and 1.375 (0x3B), below their midpoint 1.3125.
  EXPECT_EQ(float_to_e4m3_satfinite(1.3f), 0x3A);
  EXPECT_EQ(float_to_e4m3_satfinite(-1.3125f), 0xBA);   // tie to even mantissa 010b
  EXPECT_EQ(float_to_e4m3_satfinite(1.4375f), 0x3C);    // tie to even mantissa 100b
  EXPECT_EQ(float_to_e4m3_satfinite(15.5f), 0x58);  // tie between 15 (0x57) and 16: to 16 (0x58)
  EXPECT_EQ(float_to_e4m3_satfinite(0.0927734375f), 0x1C);  // 0.09375 - 2^-10 -> 0.09375
  EXPECT_FALSE(is_e4m3_value(1.3f));
  EXPECT_FALSE(is_e4m3_value(464.0f));
  EXPECT_FALSE(is_e4m3_value(kInf));
  EXPECT_FALSE(is_e4m3_value(kNan));
  EXPECT_TRUE(is_e4m3_value(-0.0f));
  EXPECT_TRUE(is_e4m3_value(-0.01171875f));
}

// ---- bf16 encoding -----------------------------------------------------------------------------

TEST(Numerics, Bf16EncodeStridedSweepOfAllFloats) {
  for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += 509) {
    expect_bf16_conversion(from_bits(static_cast<uint32_t>(u)));
  }
}

TEST(Numerics, Bf16EncodeAroundEveryMidpoint) {
  // For every non-NaN bf16 pattern p: p itself, and the 5 floats on either side of the midpoint
  // between p and the next pattern (the midpoint is the float p | 0x8000).
  for (uint32_t p = 0; p < 65536; ++p) {
    const uint32_t hi = p << 16;
    if ((hi & 0x7FFFFFFFu) >= 0x7F800000u) continue;
    expect_bf16_conversion(from_bits(hi));
    const uint32_t mid = hi | 0x8000u;
    for (uint32_t d = 0; d <= 5; ++d) {
      expect_bf16_conversion(from_bits(mid + d));
      expect_bf16_conversion(from_bits(mid - d));
    }
  }
}

TEST(Numerics, Bf16EncodeHandWorkedCases) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(from_bits(0x3F808000u)), 0x3F80);  // tie, even side
  EXPECT_EQ(float_to_bf16(from_bits(0x3F818000u)), 0x3F82);  // tie, odd side rounds up
  EXPECT_EQ(float_to_bf16(from_bits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(float_to_bf16(-1.3f), 0xBFA6);                   // -1.3 = 0xBFA66666
  EXPECT_EQ(float_to_bf16(FLT_MAX), 0x7F80);                 // rounds past max finite
  EXPECT_EQ(float_to_bf16(from_bits(0x7F7F7FFFu)), 0x7F7F);
  EXPECT_EQ(float_to_bf16(-kNan), 0xFFC0);
  EXPECT_EQ(float_to_bf16(kNan), 0x7FC0);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_bf16(FLT_TRUE_MIN), 0x0000);
  EXPECT_EQ(round_to_bf16(3.14159265f), 3.140625f);
  EXPECT_TRUE(is_bf16_value(3.140625f));
  EXPECT_TRUE(is_bf16_value(-kInf));
  EXPECT_FALSE(is_bf16_value(3.14159265f));
  EXPECT_FALSE(is_bf16_value(kNan));
}

// ---- UE8M0 -------------------------------------------------------------------------------------

// Smallest power of two >= s within [2^-126, 2^127], by repeated doubling in fp64.
float slow_ue8m0_ceil(float s) {
  double p = std::ldexp(1.0, -126);
  while (p < s && p < std::ldexp(1.0, 127)) p *= 2;
  return static_cast<float>(p);
}

TEST(Numerics, Ue8m0FromBitsPowersOfTwoAndNeighbours) {
  for (int k = -126; k <= 127; ++k) {
    const float p = std::ldexp(1.0f, k);
    EXPECT_EQ(ue8m0_from_bits(p), p) << "k=" << k;
    EXPECT_EQ(ue8m0_from_bits(next_up(p)), std::ldexp(1.0f, std::min(k + 1, 127))) << "k=" << k;
    EXPECT_EQ(ue8m0_from_bits(next_down(p)), p) << "k=" << k;
    for (float s : {next_up(p), next_down(p), p * 1.3f, p * 0.77f}) {
      if (s > 0 && std::isfinite(s)) {
        EXPECT_EQ(ue8m0_from_bits(s), slow_ue8m0_ceil(s)) << s;
      }
    }
  }
  EXPECT_EQ(ue8m0_from_bits(0.011160714f), 0.015625f);  // 5 / 448 -> 2^-6
  EXPECT_EQ(ue8m0_from_bits(FLT_TRUE_MIN), 0x1p-126f);   // clamped below
  EXPECT_EQ(ue8m0_from_bits(0x1.8p-130f), 0x1p-126f);
  EXPECT_EQ(ue8m0_from_bits(FLT_MAX), 0x1p127f);        // clamped above
}

TEST(Numerics, Ue8m0Exp2CeilLog2PowersOfTwoAndNeighbours) {
  for (int k = -126; k <= 127; ++k) {
    const float p = std::ldexp(1.0f, k);
    EXPECT_EQ(ue8m0_exp2_ceil_log2(p), p) << "k=" << k;
    // log2f(next_down(2^k)) is below k for every k, so the ceiling is 2^k.
    EXPECT_EQ(ue8m0_exp2_ceil_log2(next_down(p)), p) << "k=" << k;
    // One ulp above 2^k, log2 is k + 1.7e-7: when the fp32 spacing around it is 2^-21 or more
    // (k >= 4, or k <= -5; -4 + 1.7e-7 lies in [2, 4)) that is under half a spacing, so log2f
    // returns k exactly and the result lands on 2^k, below s (the bits rule gives 2^(k+1)).
    if ((k >= 4 && k < 127) || k <= -5) {
      EXPECT_EQ(ue8m0_exp2_ceil_log2(next_up(p)), p) << "k=" << k;
      EXPECT_EQ(ue8m0_from_bits(next_up(p)), 2 * p) << "k=" << k;
    }
    // Well away from powers of two both rules agree.
    if (k < 127) {
      EXPECT_EQ(ue8m0_exp2_ceil_log2(p * 1.3f), 2 * p) << "k=" << k;
    }
  }
  // 2^1 (1 + 2^-23): log2 = 1 + 1.7e-7 rounds up to 1 + 2^-23 (the spacing at 1), ceiling 2.
  EXPECT_EQ(ue8m0_exp2_ceil_log2(next_up(2.0f)), 4.0f);
  EXPECT_EQ(ue8m0_exp2_ceil_log2(next_up(0x1p-4f)), 0x1p-3f);
  EXPECT_EQ(ue8m0_exp2_ceil_log2(0.011160714f), 0.015625f);
}

// ---- small helpers -----------------------------------------------------------------------------

TEST(Numerics, UlpDistance) {
  EXPECT_EQ(ulp_distance(1.0f, 1.0f), 0u);
  EXPECT_EQ(ulp_distance(1.0f, from_bits(0x3F800001u)), 1u);
  EXPECT_EQ(ulp_distance(from_bits(0x3F800001u), 1.0f), 1u);
  EXPECT_EQ(ulp_distance(1.0f, 2.0f), uint64_t{1} << 23);
  EXPECT_EQ(ulp_distance(0.0f, -0.0f), 0u);
  EXPECT_EQ(ulp_distance(-FLT_TRUE_MIN, FLT_TRUE_MIN), 2u);
  EXPECT_EQ(ulp_distance(-1.5f, 1.5f), 2u * 0x3FC00000u);
  EXPECT_EQ(ulp_distance(FLT_MAX, kInf), 1u);
  EXPECT_EQ(ulp_distance(-FLT_MAX, FLT_MAX), 2u * 0x7F7FFFFFu);
  EXPECT_EQ(ulp_distance(kNan, 1.0f), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(ulp_distance(0.3f, kNan), std::numeric_limits<uint64_t>::max());
}

TEST(Numerics, NextUpNextDown) {
  EXPECT_EQ(bits(next_up(1.0f)), 0x3F800001u);
  EXPECT_EQ(bits(next_down(1.0f)), 0x3F7FFFFFu);
  EXPECT_EQ(bits(next_up(-1.0f)), 0xBF7FFFFFu);
  EXPECT_EQ(bits(next_down(-1.0f)), 0xBF800001u);
  EXPECT_EQ(next_up(0.0f), FLT_TRUE_MIN);
  EXPECT_EQ(next_up(-0.0f), FLT_TRUE_MIN);
  EXPECT_EQ(next_down(0.0f), -FLT_TRUE_MIN);
  EXPECT_EQ(bits(next_up(-FLT_TRUE_MIN)), 0x80000000u);  // -0
  EXPECT_EQ(next_up(FLT_MAX), kInf);
  EXPECT_EQ(next_up(kInf), kInf);
  EXPECT_EQ(next_down(-kInf), -kInf);
  EXPECT_EQ(next_up(-kInf), -FLT_MAX);
  EXPECT_EQ(next_down(FLT_MIN), from_bits(0x007FFFFFu));
  EXPECT_TRUE(std::isnan(next_up(kNan)));
  EXPECT_EQ(ulp_distance(0.7f, next_up(next_up(0.7f))), 2u);
}

}  // namespace
}  // namespace indexlab::ref

namespace indexlab::ref {
namespace {

// is_e4m3_value is a fast bit test; it must agree with the round-trip definition everywhere.
TEST(Numerics, IsE4m3ValueMatchesRoundTripOnADenseSweep) {
  auto slow = [](float x) {
    if (!std::isfinite(x)) return false;
    const float y = e4m3_to_float(float_to_e4m3_satfinite(x));
    uint32_t a, b;
    std::memcpy(&a, &x, 4);
    std::memcpy(&b, &y, 4);
    return a == b;
  };
  int64_t agree = 0;
  for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 997) {
    const uint32_t bits = static_cast<uint32_t>(u);
    float x;
    std::memcpy(&x, &bits, 4);
    ASSERT_EQ(is_e4m3_value(x), slow(x)) << std::hexfloat << x;
    ++agree;
  }
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_float(static_cast<uint8_t>(c));
    for (float x : {v, std::nextafter(v, 1e9f), std::nextafter(v, -1e9f), v * 0.5f, v * 1.5f}) {
      ASSERT_EQ(is_e4m3_value(x), slow(x)) << std::hexfloat << x;
    }
  }
  EXPECT_GT(agree, 4000000);
}

}  // namespace
}  // namespace indexlab::ref
