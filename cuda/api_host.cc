/// Host-side capability checks of the Hopper kernels, shared by CUDA and non-CUDA builds.
#include "cuda/api.h"

namespace indexlab::cuda {

Status can_implement(int h, int d, int k) {
  if (h != 8 && h != 16 && h != 32 && h != 64 && h != 128)
    return error("h = ", h, " is not supported by the sm90 DSA kernels (need 8, 16, 32, 64 or 128)");
  if (d != 64 && d != 128)
    return error("d = ", d, " is not supported by the sm90 DSA kernels (need 64 or 128)");
  if (k < 1 || k > kMaxTopK)
    return error("k = ", k, " is not supported by the sm90 top-k (need 1 <= k <= ", kMaxTopK, ")");
  return Status::Ok();
}

Status can_implement(const ref::Inputs& in, const ref::Options& opt) {
  if (in.precision != ref::Precision::kFp8)
    return error("precision = ", ref::precision_name(in.precision),
                 " is not supported by the sm90 DSA kernels (need fp8)");
  INDEXLAB_RETURN_IF_ERROR(can_implement(in.shape.h, in.shape.d, in.shape.k));
  if (in.shape.nk > INT32_MAX - 64) return error("nk = ", in.shape.nk, " is too large");
  return ref::validate(in, opt);
}

Status can_implement(const ref::PagedInputs& in, const ref::Options& opt) {
  if (in.precision != ref::Precision::kFp8)
    return error("precision = ", ref::precision_name(in.precision),
                 " is not supported by the sm90 paged kernels (need fp8)");
  if (in.page_tokens != 64)
    return error("page_tokens = ", in.page_tokens, " is not supported (need 64)");
  INDEXLAB_RETURN_IF_ERROR(can_implement(in.h, in.d, in.k));
  if (in.next_n < 1) return error("next_n = ", in.next_n, " must be >= 1");
  if (in.max_pages > (INT32_MAX / 64) - 1) return error("max_pages = ", in.max_pages, " is too large");
  return ref::validate(in, opt);
}

}  // namespace indexlab::cuda
