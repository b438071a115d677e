/// Emulation of the sm90 block-pooling kernel (see emulate_sm90_sparse.h for the order).
#include <algorithm>
#include <cmath>

#include "reference/emulate_sm90_sparse.h"
#include "reference/numerics.h"

namespace indexlab::ref {

void emulate_sm90_pool(const Inputs& in, int64_t j0, int64_t j1, bool requantize, EmulatedPool* out) {
  const int D = in.shape.d;
  out->value.assign(static_cast<size_t>(D), 0.0f);
  out->scale = 1.0f;
  const float count = static_cast<float>(j1 - j0);
  for (int x = 0; x < D; ++x) {
    double acc = 0.0;
    for (int64_t j = j0; j < j1; ++j) {
      const double s = in.k_scale.empty() ? 1.0 : static_cast<double>(in.k_scale[j]);
      acc += s * static_cast<double>(in.k[j * D + x]);
    }
    out->value[x] = static_cast<float>(acc) / count;
  }
  if (!requantize) return;
  float amax = 0.0f;
  for (float v : out->value) amax = std::max(amax, std::fabs(v));
  out->scale = std::max(amax / 448.0f, 1e-10f);
  for (auto& v : out->value) v = e4m3_to_float(float_to_e4m3_satfinite(v / out->scale));
}

}  // namespace indexlab::ref
