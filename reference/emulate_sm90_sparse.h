/// Bit-exact CPU emulation of indexlab's sm90 HISA, MISA and MISA-dagger kernels (cuda/sparse.h).
/// Each emulation follows the kernels' arithmetic order exactly, so GPU output must equal it bit
/// for bit (indices and scores); the reference paths (reference/paths.cc) are the exact contract
/// the GPU is judged against with the bound-aware rule.
#pragma once
#include <cstdint>
#include <vector>

#include "reference/problem.h"
#include "reference/status.h"

namespace indexlab::ref {

/// One pooled block as the sm90 pooling kernel computes it (cuda::launch_pool_fp8):
///   acc[x]  = sum over j = j0 .. j1-1 ascending of (double)s[j] * (double)k[j, x]  (fp64 adds;
///             each product is exact in fp64)
///   mean[x] = (float)acc[x] / (float)(j1 - j0)                                    (fp32 division)
/// With requantize: scale = max(amax / 448, 1e-10) (fp32 division, then max), and
/// codes[x] = e4m3 satfinite(mean[x] / scale), decoded into `value`; otherwise value = mean.
struct EmulatedPool {
  std::vector<float> value;  // [d]
  float scale = 1.0f;
};
void emulate_sm90_pool(const Inputs& in, int64_t j0, int64_t j1, bool requantize, EmulatedPool* out);

/// HISA (SPEC 4) as cuda::hisa_fp8 computes it: emulated pooling with re-quantization, block
/// scores = emulate_sm90_dsa_logit on the pooled codes and scale, canonical block selection
/// (first and last forced), candidates re-scored with emulate_sm90_dsa_logit, canonical top-K.
/// Fills index, score, logits (on opt.want_logits); bound and ambiguous stay empty.
Status emulate_sm90_hisa(const Inputs& in, const Options& opt, Result* out);
Status emulate_sm90_hisa_paged(const PagedInputs& in, const Options& opt, Result* out);

/// MISA (SPEC 5) as cuda::misa_fp8 computes it: emulated fp32 pooling (no re-quantization), the
/// router's fp32 order (see emulate_sm90_misa.cc), top-h heads (ties: lower head), routed scores =
/// emulate_sm90_dsa_logit over the active heads in ascending head order, padded with zero heads
/// to the kernel's head count; canonical top-K. Also fills active_heads.
Status emulate_sm90_misa(const Inputs& in, const Options& opt, Result* out);
Status emulate_sm90_misa_paged(const PagedInputs& in, const Options& opt, Result* out);

/// MISA-dagger (SPEC 6) as cuda::misa_dagger_fp8 computes it: emulated MISA scores, top-K1,
/// candidates re-scored with emulate_sm90_dsa_logit over all heads, canonical top-K.
Status emulate_sm90_misa_dagger(const Inputs& in, const Options& opt, Result* out);
Status emulate_sm90_misa_dagger_paged(const PagedInputs& in, const Options& opt, Result* out);

}  // namespace indexlab::ref
