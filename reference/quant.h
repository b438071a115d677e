/// Per-row fp8 quantizers of SPEC section 7 (deepgemm, vllm_cache, deepseek) and their UE8M0 options.
#pragma once
#include <cstdint>
#include <string>

#include "reference/status.h"

namespace indexlab::ref {

enum class Quantizer { kDeepGemm, kVllmCache, kDeepSeek };

struct QuantConfig {
  Quantizer kind = Quantizer::kDeepGemm;
  bool ue8m0 = false;  // round the scale up to a power of two (the kind's own rule)
  float eps = 1e-4f;   // amax floor; vLLM's q quantizer uses 1e-10 with the vllm_cache rule
};

/// Quantizes one row x[0..n) to e4m3 codes; returns the positive scale s so that
/// x ~= s * e4m3_to_float(codes[t]).
///  deepgemm:   s = max(amax, eps) / 448 (fp32 division); UE8M0 from the bits;
///              codes = satfinite(x * fl(1/s)).
///  vllm_cache: s = max(amax, eps) / 448; UE8M0 as exp2f(ceilf(log2f(s)));
///              codes = satfinite(x / s).
///  deepseek:   s = max(amax, eps) * fl(1/448); UE8M0 from the bits;
///              codes = satfinite(clamp(x / s, -448, 448)).
/// x must be finite (callers validate first).
float quantize_row_e4m3(const float* x, int64_t n, const QuantConfig& cfg, uint8_t* codes);

const char* quantizer_name(Quantizer q);
/// Parses "deepgemm", "vllm_cache" or "deepseek".
Status parse_quantizer(const std::string& name, Quantizer* out);

}  // namespace indexlab::ref
