/// Host-side capability checks of the sparse-path kernels, shared by CUDA and non-CUDA builds.
#include "cuda/sparse.h"

namespace indexlab::cuda {
namespace {

constexpr int64_t kMaxHisaCandidates = 1 << 16;  // (m or m + 2) * B per query
constexpr int kMaxHisaBlocksKept = 1024;

Status check_path_options(ref::Path path, const ref::Options& opt) {
  if (path == ref::Path::kDsa) return Status::Ok();
  if (opt.strict_pooling)
    return error("strict_pooling is not implemented by the sm90 ", ref::path_name(path),
                 " kernels (use the default pooling end, the sequence end)");
  if (path == ref::Path::kHisa) {
    if (opt.hisa_block % 64 != 0)
      return error("hisa_block = ", opt.hisa_block,
                   " is not supported by the sm90 HISA kernels (need a multiple of 64)");
    if (opt.hisa_m > kMaxHisaBlocksKept)
      return error("hisa_m = ", opt.hisa_m, " is not supported by the sm90 HISA kernels (need <= ",
                   kMaxHisaBlocksKept, ")");
    const int64_t kept = static_cast<int64_t>(opt.hisa_m) + (opt.hisa_topm_plus_ends ? 2 : 0);
    if (kept * opt.hisa_block > kMaxHisaCandidates)
      return error("hisa_m * hisa_block = ", kept * opt.hisa_block,
                   " candidates per query is more than the sm90 HISA kernels take (", kMaxHisaCandidates, ")");
  }
  if (path == ref::Path::kMisaDagger && opt.dagger_k1 > kMaxTopK)
    return error("dagger_k1 = ", opt.dagger_k1, " is not supported by the sm90 top-k (need <= ", kMaxTopK, ")");
  return Status::Ok();
}

}  // namespace

Status can_implement_sparse(ref::Path path, const ref::Inputs& in, const ref::Options& opt) {
  INDEXLAB_RETURN_IF_ERROR(can_implement(in, opt));
  INDEXLAB_RETURN_IF_ERROR(ref::validate_options(path, in.shape, opt));
  return check_path_options(path, opt);
}

Status can_implement_sparse(ref::Path path, const ref::PagedInputs& in, const ref::Options& opt) {
  INDEXLAB_RETURN_IF_ERROR(can_implement(in, opt));
  ref::Shape shape;
  shape.nq = in.rows();
  shape.h = in.h;
  shape.d = in.d;
  shape.k = in.k;
  INDEXLAB_RETURN_IF_ERROR(ref::validate_options(path, shape, opt));
  if ((path == ref::Path::kMisa || path == ref::Path::kMisaDagger) &&
      opt.routing == ref::Routing::kOwnKey && in.next_n != 1)
    return error("routing own_key is defined for paged decode with next_n = 1 only (got next_n = ",
                 in.next_n, ")");
  return check_path_options(path, opt);
}

}  // namespace indexlab::cuda
