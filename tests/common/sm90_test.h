/// Small helpers shared by the sm90 kernel and emulation tests: the GPU skip, named seeds, bit
/// comparison of floats.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/api.h"
#include "cuda/scoped_env.h"

/// Skips the test with the reason when no usable Hopper GPU is present.
#define SKIP_WITHOUT_GPU()                                                \
  do {                                                                    \
    std::string why_no_gpu;                                               \
    if (!::indexlab::cuda::device_available(&why_no_gpu)) GTEST_SKIP() << why_no_gpu; \
  } while (0)

namespace indexlab::testing {

/// A seed per test name, derived from INDEXLAB_SEED (printed once) so a failure can be replayed.
inline uint64_t seed_for(const char* name) {
  static const uint64_t base = [] {
    const char* e = std::getenv("INDEXLAB_SEED");
    const uint64_t v = e ? std::strtoull(e, nullptr, 10) : 20261127ull;
    std::printf("[sm90 tests] INDEXLAB_SEED = %llu\n", static_cast<unsigned long long>(v));
    return v;
  }();
  uint64_t h = base ^ 0x9E3779B97F4A7C15ull;
  for (const char* c = name; *c; ++c) h = (h ^ static_cast<uint8_t>(*c)) * 0x100000001B3ull;
  return h;
}

using ::indexlab::cuda::ScopedEnv;

inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// Bitwise equal, except that +0 and -0 count as equal.
inline bool same_float(float a, float b) { return bits(a) == bits(b) || (a == 0.0f && b == 0.0f); }

}  // namespace indexlab::testing
