/// libFuzzer target: problem.json text through problem_from_json; an accepted description must
/// survive problem_to_json + problem_from_json unchanged.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "compare/problem.h"
#include "fuzz/libfuzzer_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexlab;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  ref::Options o;
  (void)compare::options_from_json(j, &o);
  compare::Problem p;
  if (!compare::problem_from_json(j, &p).ok()) return 0;
  (void)ref::validate_options(p.path, ref::Shape{0, 0, p.h(), p.d(), p.k()}, p.options);
  const nlohmann::json back = compare::problem_to_json(p);
  compare::Problem q;
  Status st = compare::problem_from_json(back, &q);
  if (!st.ok()) fuzz::property_failed("problem JSON reread", st.message());
  if (compare::problem_to_json(q) != back) fuzz::property_failed("problem JSON round trip", back.dump());
  return 0;
}
