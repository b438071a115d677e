/// The scores behind HISA's and MISA's discrete decisions (blocks kept, heads routed), with the
/// pieces of their drift bounds, for judging kernels that compute them in lower precision.
#pragma once
#include <cstdint>
#include <vector>

#include "reference/blocks.h"
#include "reference/problem.h"
#include "reference/status.h"

namespace indexlab::ref {

/// The router scores E[g] of query i (SPEC 5.2-5.5: pooled, own_key or q_norm routing, per
/// opt.routing) in fp64, as the reference ranks them (rounded to fp32 there), and for each a
/// drift bound for a kernel that computes them in fp32 (dot products as fma chains over d, one
/// rounding per multiply, block sums in order; pooled keys rounded once):
///   pooled:  |w| (gamma_d + 3u) sum_b sum_x |q_x p_bx| + (nb + 2) u E
///   own_key: |w| s gamma_d sum_x |q_x k_x| + 3u |E|
///   q_norm:  E (gamma_d / 2 + 3u)
/// with u = 2^-24, gamma_d = d u / (1 - d u), plus 2^-140.
Status misa_router_scores(const Inputs& in, const Options& opt, int64_t i, std::vector<double>* e,
                          std::vector<double>* bound);

/// HISA block scores of query i (SPEC 4.4, fp8 problems) as the reference ranks them, with the
/// pieces of a drift bound for a kernel that scores the pooled blocks on tensor cores:
///   abs_dot[b]   = sum_h |w_h| s_b sum_x |q_hx c_bx|   (c: re-quantized pooled codes, s_b their scale)
///   relu_sum[b]  = sum_h |w_h| relu(s_b dot_hb)
///   pool_flip[b] = sum_h |w_h| sum_x |q_hx| dmax_x: how far a re-quantized pooled value can move
///                  when the kernel sums the block's keys in fp64 rather than exactly
/// so that a tolerance (dot_rel, epi_rel, abs_floor) bounds score[b] by
/// dot_rel abs_dot + epi_rel relu_sum + pool_flip + abs_floor.
struct HisaBlockScores {
  std::vector<Block> blocks;
  std::vector<float> score;
  std::vector<double> abs_dot, relu_sum, pool_flip;
};
Status hisa_block_scores(const Inputs& in, const Options& opt, int64_t i, HisaBlockScores* out);

}  // namespace indexlab::ref
