/// The three per-row e4m3 quantizers of SPEC section 7, each with its own UE8M0 rule.
#include "reference/quant.h"

#include <algorithm>
#include <cmath>

#include "reference/numerics.h"

namespace indexlab::ref {

float quantize_row_e4m3(const float* x, int64_t n, const QuantConfig& cfg, uint8_t* codes) {
  float amax = 0.0f;
  for (int64_t t = 0; t < n; ++t) amax = std::max(amax, std::fabs(x[t]));
  const float floored = std::max(amax, cfg.eps);
  float s = 0.0f;
  switch (cfg.kind) {
    case Quantizer::kDeepGemm: {
      s = floored / 448.0f;
      if (cfg.ue8m0) s = ue8m0_from_bits(s);
      const float inv = 1.0f / s;
      for (int64_t t = 0; t < n; ++t) codes[t] = float_to_e4m3_satfinite(x[t] * inv);
      break;
    }
    case Quantizer::kVllmCache: {
      s = floored / 448.0f;
      if (cfg.ue8m0) s = ue8m0_exp2_ceil_log2(s);
      for (int64_t t = 0; t < n; ++t) codes[t] = float_to_e4m3_satfinite(x[t] / s);
      break;
    }
    case Quantizer::kDeepSeek: {
      const float inv448 = 1.0f / 448.0f;
      s = floored * inv448;
      if (cfg.ue8m0) s = ue8m0_from_bits(s);
      for (int64_t t = 0; t < n; ++t) {
        codes[t] = float_to_e4m3_satfinite(std::clamp(x[t] / s, -448.0f, 448.0f));
      }
      break;
    }
  }
  return s;
}

const char* quantizer_name(Quantizer q) {
  switch (q) {
    case Quantizer::kDeepGemm:
      return "deepgemm";
    case Quantizer::kVllmCache:
      return "vllm_cache";
    case Quantizer::kDeepSeek:
      return "deepseek";
  }
  return "unknown";
}

Status parse_quantizer(const std::string& name, Quantizer* out) {
  for (Quantizer q : {Quantizer::kDeepGemm, Quantizer::kVllmCache, Quantizer::kDeepSeek}) {
    if (name == quantizer_name(q)) {
      *out = q;
      return Status::Ok();
    }
  }
  return error("quantizer '", name, "' is unknown (expected deepgemm, vllm_cache or deepseek)");
}

}  // namespace indexlab::ref
