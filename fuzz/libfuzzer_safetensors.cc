/// libFuzzer target: read_safetensors on arbitrary bytes; an accepted file must survive write + read.
#include <cstddef>
#include <cstdint>

#include "fuzz/libfuzzer_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexlab;
  compare::TensorMap m;
  compare::Metadata meta;
  if (!compare::read_safetensors(data, size, "fuzz.safetensors", &m, &meta).ok()) return 0;
  for (const auto& [name, t] : m) fuzz::exercise(t);
  std::vector<uint8_t> img;
  Status st = compare::write_safetensors(m, meta, &img);
  if (!st.ok()) fuzz::property_failed("safetensors write", st.message());
  compare::TensorMap u;
  compare::Metadata umeta;
  st = compare::read_safetensors(img.data(), img.size(), "rewritten.safetensors", &u, &umeta);
  if (!st.ok()) fuzz::property_failed("safetensors reread", st.message());
  if (u.size() != m.size() || umeta != meta) fuzz::property_failed("safetensors round trip", "tensors or metadata differ");
  for (const auto& [name, t] : m) {
    auto it = u.find(name);
    if (it == u.end() || !fuzz::same_tensor(t, it->second)) fuzz::property_failed("safetensors round trip", name);
  }
  return 0;
}
