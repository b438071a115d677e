/// libFuzzer target: read_npy on arbitrary bytes; an accepted image must survive write + read.
#include <cstddef>
#include <cstdint>

#include "fuzz/libfuzzer_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexlab;
  compare::Tensor t;
  if (!compare::read_npy(data, size, "fuzz.npy", &t).ok()) return 0;
  fuzz::exercise(t);
  std::vector<uint8_t> img;
  Status st = compare::write_npy(t, &img);
  if (!st.ok()) fuzz::property_failed("npy write", st.message());
  compare::Tensor u;
  st = compare::read_npy(img.data(), img.size(), "rewritten.npy", &u);
  if (!st.ok()) fuzz::property_failed("npy reread", st.message());
  if (!fuzz::same_tensor(t, u)) fuzz::property_failed("npy round trip", "the rewritten tensor differs");
  return 0;
}
