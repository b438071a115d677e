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

// ---- MISA router helpers (shared by the emulation and the cuda/sm90_misa.cu host code) ------

namespace indexlab::ref {

/// Router blocks of one flat query row (SPEC 5.1 with block size Br = opt.misa_block), in block
/// order: each is the key range [begin, end) that is pooled. Rows with ks >= ke have none.
/// end_of_keys is seq_end[i] (nk when absent), origin block_origin[i] (0 when absent); the
/// sequence alignment grids from ks, the release alignment from origin; a block's pooled end is
/// min(block end, end_of_keys), or min(block end, ke) with opt.strict_pooling.
struct RouterBlock {
  int64_t begin = 0, end = 0;
};
void misa_router_blocks(int64_t ks, int64_t ke, int64_t end_of_keys, int64_t origin,
                        const Options& opt, std::vector<RouterBlock>* out);

/// The padded head count of the routed scoring: the smallest of 8, 16, 32, 64, 128 that is >= h
/// (0 when h > 128).
int misa_padded_heads(int h);

/// The sm90 router's fp32 operation order (cuda/sm90_misa.cu, router_kernel), per row and head g:
///   dot(a, b)   = fma chain over x = 0..d-1 ascending from +0: acc = fmaf(a[x], b[x], acc)
///   relu(x)     = x <= 0 ? +0 : x           (NaN passes through; -0 becomes +0)
///   pooled:  E  = +0; for each router block in block order: E = E + (|w[g]| * relu(dot(q_g, p_b)))
///            (p_b: the fp32 pooled key of emulate_sm90_pool without re-quantization; one fmul and
///            one fadd, no fma)
///   own_key: E  = w[g] * relu(s[j] * dot(q_g, k[j]))   (j = ke - 1; E = +0 for every head when
///            the row sees no key)
///   q_norm:  E  = q_scale[g] * sqrtf(dot(q_g, q_g))     (q_scale empty: 1; sqrtf correctly rounded)
/// q, k hold e4m3 values (decoded). Active heads: the h largest E, ties to the lower head, NaN
/// below every number; written ascending.
float misa_router_dot(const float* a, const float* b, int d);
inline float misa_router_relu(float x) { return x <= 0.0f ? 0.0f : x; }
/// Router scores E[H] of flat row i (pools computed with emulate_sm90_pool, no re-quantization).
void emulate_sm90_misa_router(const Inputs& in, const Options& opt, int64_t i, std::vector<float>* e);
/// The h active heads of router scores e (ascending) written to heads[0..h-1].
void misa_top_heads(const std::vector<float>& e, int h, int* heads);

}  // namespace indexlab::ref
