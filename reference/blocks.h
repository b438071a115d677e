/// The blocks of HISA and MISA (SPEC 4.1-4.3, 5.1): one definition shared by the reference paths,
/// the kernel emulations and the kernels' host planning.
#pragma once
#include <cstdint>
#include <vector>

#include "reference/problem.h"

namespace indexlab::ref {

/// A block of keys: [pool0, pool1) is pooled, [vis0, vis1) are its keys visible to the query.
struct Block {
  int64_t pool0, pool1, vis0, vis1;
};

/// Eligible blocks, in block order, of a query that sees keys [ks, ke): blocks of `bsize` keys
/// from ks (sequence alignment) or on the grid from `origin` (release alignment), pooled up to
/// end_of_keys (or up to ke with opt.strict_pooling). None when ks >= ke.
void eligible_blocks(int64_t ks, int64_t ke, int64_t end_of_keys, int64_t origin, int64_t bsize,
                     const Options& opt, std::vector<Block>* out);

/// The same for query i of a flat problem (end_of_keys = seq_end[i] or nk, origin =
/// block_origin[i] or 0).
void eligible_blocks(const Inputs& in, const Options& opt, int64_t i, int64_t bsize, std::vector<Block>* out);

}  // namespace indexlab::ref
