/// Bit-exact CPU emulation of indexlab's sm90 fp8 and bf16 DSA logits kernel (cuda/sm90_logits.cu).
#pragma once
#include <cstdint>
#include <vector>

#include "reference/problem.h"
#include "reference/status.h"

namespace indexlab::ref {

/// The kernel's fp32 logit of one (query, key) pair, following its epilogue order exactly:
///   dot[h] = wgmma_fp8_dot(q[h,:], k[:], d, +0)    (tc_emulation.h: the measured model)
///   r[h]   = max(dot[h], 0)
///   for each quad lane l = 0..3 and i = 0..h/8-1, with h0 = 8i + 2l:
///     u_i  = fma(r[h0+1], w[h0+1], r[h0] * w[h0])
///   p_l    = pairwise tree over i (stride 1, 2, 4, ...: u_i += u_{i+stride} for i % 2stride == 0)
///   total  = (p_0 + p_1) + (p_2 + p_3)
///   logit  = total * s + 0        (the +0 turns a -0 product into +0)
/// q: [h, d] and k: [d] hold e4m3 values (decoded), w: [h]; h in {8, 16, ..., 128}.
float emulate_sm90_dsa_logit(const float* q, const float* w, int h, int d, const float* k, float s);
/// The same for the bf16 kernel: dot[h] = wgmma_bf16_dot(q[h,:], k[:], d, +0) (16-wide chunks,
/// tc_emulation.h), then the identical epilogue. q and k hold bf16 values.
float emulate_sm90_dsa_logit_bf16(const float* q, const float* w, int h, int d, const float* k, float s);

/// Logits [nq, nk] of cuda::dsa_fp8 on fp8 Inputs (cuda::dsa_bf16 on bf16 Inputs): the pair
/// logit inside [ks, ke), -inf outside.
/// threads: OpenMP threads (0: default).
Status emulate_sm90_dsa_logits(const Inputs& in, std::vector<float>* logits, int threads = 0);

/// Logits [rows, max_pages * 64] of cuda::dsa_paged_fp8 (dsa_paged_bf16 on bf16 PagedInputs,
/// whose pages hold bf16 elements) by position: the pair logit for visible
/// positions t < min(ctx, ctx - next_n + r + 1), -inf elsewhere.
Status emulate_sm90_paged_logits(const PagedInputs& in, std::vector<float>* logits, int threads = 0);

}  // namespace indexlab::ref
