/// Host fallbacks used when indexlab is built without nvcc: every entry point reports so.
#include "cuda/api.h"
#include "cuda/sparse.h"

namespace indexlab::cuda {
namespace {
const char kNoCuda[] = "indexlab was built without CUDA";
Status no_cuda() { return Status::Error(kNoCuda); }
}  // namespace

bool built_with_cuda() { return false; }
bool device_available(std::string* why) {
  if (why) *why = kNoCuda;
  return false;
}
std::string device_name() { return ""; }

Status dsa_fp8(const ref::Inputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status dsa_paged_fp8(const ref::PagedInputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status mqa_logits_fp8(const ref::Inputs&, std::vector<float>*) { return no_cuda(); }
Status topk_rows(const std::vector<float>&, int64_t, int64_t, const std::vector<int32_t>&,
                 const std::vector<int32_t>&, int, ref::IndexBase, std::vector<int32_t>*,
                 std::vector<float>*, int64_t) {
  return no_cuda();
}
Status probe_wgmma_fp8(const uint8_t*, const uint8_t*, const float*, float*, bool) { return no_cuda(); }
Status launch_mqa_logits_fp8(const LogitsParams&) { return no_cuda(); }
Status launch_paged_logits_fp8(const PagedLogitsParams&) { return no_cuda(); }
Status launch_topk(const TopkParams&) { return no_cuda(); }
Status make_prefill_workload(int64_t, int, int, int, bool, uint64_t, std::unique_ptr<Workload>*) {
  return no_cuda();
}
Status make_decode_workload(int64_t, int64_t, int, int, int, int, bool, uint64_t,
                            std::unique_ptr<Workload>*) {
  return no_cuda();
}
Status make_topk_workload(int64_t, int64_t, int, uint64_t, std::unique_ptr<Workload>*) {
  return no_cuda();
}
Status make_copy_workload(int64_t, std::unique_ptr<Workload>*) { return no_cuda(); }
Status make_wgmma_peak_workload(std::unique_ptr<Workload>*) { return no_cuda(); }
Status make_fp8_gemm_workload(int64_t, int64_t, int64_t, std::unique_ptr<Workload>*) { return no_cuda(); }
// bf16
Status dsa_bf16(const ref::Inputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status dsa_paged_bf16(const ref::PagedInputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status mqa_logits_bf16(const ref::Inputs&, std::vector<float>*) { return no_cuda(); }
Status probe_wgmma_bf16(const uint16_t*, const uint16_t*, const float*, float*, bool) { return no_cuda(); }
Status launch_mqa_logits_bf16(const LogitsBf16Params&) { return no_cuda(); }
Status launch_paged_logits_bf16(const PagedLogitsBf16Params&) { return no_cuda(); }
Status make_prefill_workload_bf16(int64_t, int, int, int, bool, uint64_t, std::unique_ptr<Workload>*) {
  return no_cuda();
}
Status make_decode_workload_bf16(int64_t, int64_t, int, int, int, int, bool, uint64_t,
                                 std::unique_ptr<Workload>*) {
  return no_cuda();
}
Status make_wgmma_peak_workload_bf16(std::unique_ptr<Workload>*) { return no_cuda(); }

// sparse.h (HISA, MISA, MISA-dagger)
Status hisa_fp8(const ref::Inputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status hisa_paged_fp8(const ref::PagedInputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status misa_fp8(const ref::Inputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status misa_paged_fp8(const ref::PagedInputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status misa_dagger_fp8(const ref::Inputs&, const ref::Options&, ref::Result*) { return no_cuda(); }
Status misa_dagger_paged_fp8(const ref::PagedInputs&, const ref::Options&, ref::Result*) {
  return no_cuda();
}
Status launch_pool_fp8(const PoolParams&) { return no_cuda(); }
Status launch_gather_logits_fp8(const GatherLogitsParams&) { return no_cuda(); }
Status launch_remap_indices(const RemapParams&) { return no_cuda(); }
Status make_sparse_workload(const SparseBenchSpec&, std::unique_ptr<Workload>*) { return no_cuda(); }

}  // namespace indexlab::cuda
