/// Random problems for the tests: seeded, non-integer values, ragged ranges.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <random>

#include "reference/problem.h"

namespace indexlab::testing {

/// The test seed: INDEXLAB_SEED from the environment, else `fallback`. Print it on failure.
inline uint64_t test_seed(uint64_t fallback = 20261127) {
  const char* s = std::getenv("INDEXLAB_SEED");
  return s ? std::strtoull(s, nullptr, 10) : fallback;
}

/// Causal prefill of nq queries over the last nq of nk keys (ks = 0, ke = nk - nq + i + 1).
inline ref::RawInputs random_raw(std::mt19937_64& rng, int64_t nq, int64_t nk, int h, int d, int k,
                                 bool causal = true) {
  ref::RawInputs r;
  r.shape = ref::Shape{nq, nk, h, d, k};
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  r.q.resize(nq * h * d);
  r.k.resize(nk * d);
  r.w.resize(nq * h);
  for (auto& x : r.q) x = g(rng) * 0.75f;
  for (auto& x : r.k) x = g(rng) * 1.3f;
  for (auto& x : r.w) x = u(rng) + 0.05f;  // mostly positive, some negative
  r.ks.resize(nq);
  r.ke.resize(nq);
  std::uniform_int_distribution<int64_t> pick(0, nk);
  for (int64_t i = 0; i < nq; ++i) {
    if (causal) {
      r.ks[i] = 0;
      r.ke[i] = static_cast<int32_t>(std::max<int64_t>(0, nk - nq + i + 1));
    } else {
      int64_t a = pick(rng), b = pick(rng);
      if (a > b) std::swap(a, b);
      r.ks[i] = static_cast<int32_t>(a);
      r.ke[i] = static_cast<int32_t>(b);
    }
  }
  return r;
}

inline ref::Inputs random_inputs(std::mt19937_64& rng, ref::Precision p, int64_t nq, int64_t nk,
                                 int h, int d, int k, bool causal = true) {
  ref::Inputs in;
  Status st = ref::quantize_inputs(random_raw(rng, nq, nk, h, d, k, causal), p, {}, &in);
  if (!st.ok()) std::abort();
  return in;
}

}  // namespace indexlab::testing
