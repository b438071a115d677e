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

namespace {
// The sm90 kernels exist for fp8 and bf16; `want` is the entry point's precision.
Status check_precision(ref::Precision have, ref::Precision want, const char* kind) {
  if (want != ref::Precision::kFp8 && want != ref::Precision::kBf16)
    return error("precision = ", ref::precision_name(want), " has no sm90 ", kind,
                 " kernel (need fp8 or bf16)");
  if (have != want)
    return error("precision = ", ref::precision_name(have), " is not supported by the sm90 ",
                 ref::precision_name(want), " ", kind, " kernels (need ", ref::precision_name(want),
                 " inputs", have == ref::Precision::kBf16   ? "; bf16 inputs go to the bf16 entry points"
                            : have == ref::Precision::kFp8 ? "; fp8 inputs go to the fp8 entry points"
                                                           : "",
                 ")");
  return Status::Ok();
}
}  // namespace

Status can_implement(const ref::Inputs& in, const ref::Options& opt) {
  return can_implement(in, opt, ref::Precision::kFp8);
}

Status can_implement(const ref::PagedInputs& in, const ref::Options& opt) {
  return can_implement(in, opt, ref::Precision::kFp8);
}

Status can_implement(const ref::Inputs& in, const ref::Options& opt, ref::Precision precision) {
  INDEXLAB_RETURN_IF_ERROR(check_precision(in.precision, precision, "DSA"));
  INDEXLAB_RETURN_IF_ERROR(can_implement(in.shape.h, in.shape.d, in.shape.k));
  if (in.shape.nk > INT32_MAX - 64) return error("nk = ", in.shape.nk, " is too large");
  return ref::validate(in, opt);
}

Status can_implement(const ref::PagedInputs& in, const ref::Options& opt, ref::Precision precision) {
  INDEXLAB_RETURN_IF_ERROR(check_precision(in.precision, precision, "paged"));
  if (in.page_tokens != 64)
    return error("page_tokens = ", in.page_tokens, " is not supported (need 64)");
  INDEXLAB_RETURN_IF_ERROR(can_implement(in.h, in.d, in.k));
  if (in.next_n < 1) return error("next_n = ", in.next_n, " must be >= 1");
  if (in.max_pages > (INT32_MAX / 64) - 1) return error("max_pages = ", in.max_pages, " is too large");
  return ref::validate(in, opt);
}

}  // namespace indexlab::cuda
