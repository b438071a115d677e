/// libFuzzer target: read_npz on arbitrary bytes; an accepted archive must survive write + read.
#include <cstddef>
#include <cstdint>

#include "fuzz/libfuzzer_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexlab;
  compare::TensorMap m;
  if (!compare::read_npz(data, size, "fuzz.npz", &m).ok()) return 0;
  for (const auto& [name, t] : m) fuzz::exercise(t);
  std::vector<uint8_t> img;
  Status st = compare::write_npz(m, &img);
  if (!st.ok()) fuzz::property_failed("npz write", st.message());
  compare::TensorMap u;
  st = compare::read_npz(img.data(), img.size(), "rewritten.npz", &u);
  if (!st.ok()) fuzz::property_failed("npz reread", st.message());
  if (u.size() != m.size()) fuzz::property_failed("npz round trip", "member count differs");
  for (const auto& [name, t] : m) {
    auto it = u.find(name);
    if (it == u.end() || !fuzz::same_tensor(t, it->second)) fuzz::property_failed("npz round trip", name);
  }
  return 0;
}
