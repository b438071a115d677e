/// Shared helpers of the libFuzzer targets: a property failure traps, so libFuzzer records it.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

#include "compare/tensor_io.h"

namespace indexlab::fuzz {

/// Reports a broken property (a reader accepting what its writer cannot reproduce) and aborts.
[[noreturn]] inline void property_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "indexlab libfuzzer property failed: %s: %s\n", what, detail.c_str());
  std::abort();
}

inline bool same_tensor(const compare::Tensor& a, const compare::Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.data == b.data;
}

/// Decodes an accepted tensor every way a caller might: none of these may crash.
inline void exercise(const compare::Tensor& t) {
  if (!t.check().ok()) property_failed("check", "a reader returned a tensor that fails Tensor::check");
  std::vector<float> f;
  std::vector<int32_t> i;
  std::vector<int64_t> l;
  (void)t.to_f32(&f);
  (void)t.to_i32(&i);
  (void)t.to_i64(&l);
  (void)compare::format_shape(t.shape);
}

}  // namespace indexlab::fuzz
