/// MISA router scores for judging kernels whose router computes them in fp32.
#pragma once
#include <cstdint>
#include <vector>

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

}  // namespace indexlab::ref
