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
#include "reference/problem.h"

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

/// Runs `run(&result)` (a Status(ref::Result*) callable) once, then `reruns` more times, and
/// expects every rerun's index, score and logits to equal the first run's bit for bit. Returns
/// the first run's result.
template <typename Run>
ref::Result expect_reruns_bitwise_identical(Run run, int reruns, const std::string& what) {
  ref::Result first;
  Status st = run(&first);
  EXPECT_TRUE(st.ok()) << what << ": " << st.message();
  if (!st.ok()) return first;
  for (int r = 0; r < reruns; ++r) {
    ref::Result again;
    st = run(&again);
    EXPECT_TRUE(st.ok()) << what << ": " << st.message();
    if (!st.ok()) return first;
    const bool same = first.index == again.index &&
                      std::memcmp(first.score.data(), again.score.data(), first.score.size() * 4) == 0 &&
                      again.logits.size() == first.logits.size() &&
                      std::memcmp(first.logits.data(), again.logits.data(), first.logits.size() * 4) == 0;
    EXPECT_TRUE(same) << what << ": rerun " << r << " differs from the first run";
    if (!same) return first;
  }
  return first;
}

/// Two prefill logits kernels named by INDEXLAB_LOGITS: `run` under `a` (default: the
/// warp-specialized kernel, "ws") must give the same bits in 20 reruns, and the same logits and
/// selection as under `b` (default: logits_kernel, "v1").
template <typename Run>
void expect_logits_kernels_agree(Run run, const std::string& what, const char* a = "ws", const char* b = "v1") {
  ref::Result first;
  {
    ScopedEnv env("INDEXLAB_LOGITS", a);
    first = expect_reruns_bitwise_identical(run, 20, what + " (" + a + ")");
  }
  ScopedEnv env("INDEXLAB_LOGITS", b);
  ref::Result second;
  Status st = run(&second);
  ASSERT_TRUE(st.ok()) << what << ": " << st.message();
  ASSERT_EQ(first.logits.size(), second.logits.size()) << what;
  EXPECT_EQ(0, std::memcmp(first.logits.data(), second.logits.data(), second.logits.size() * 4))
      << what << ": the " << a << " and " << b << " logits kernels disagree";
  EXPECT_EQ(first.index, second.index) << what << ": the " << a << " and " << b << " logits kernels select differently";
}

}  // namespace indexlab::testing
