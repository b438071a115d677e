/// Host-only interface to indexlab's Hopper (sm_90a) kernels; includes no CUDA header.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "reference/problem.h"
#include "reference/status.h"

namespace indexlab::cuda {

/// True when the library was built with nvcc (the kernels exist in this binary).
bool built_with_cuda();

/// True when a CUDA device of compute capability 9.0 (Hopper) is usable; otherwise false and, if
/// `why` is given, a reason ("indexlab was built without CUDA", "no CUDA driver", ...).
bool device_available(std::string* why);

/// Name of device 0 (empty when none).
std::string device_name();

/// Which problems the DSA kernels (fp8 and bf16) support: h in {8,16,32,64,128}, d in {64,128},
/// 1 <= k <= kMaxTopK. Anything else is refused with words naming the field.
constexpr int kMaxTopK = 8192;
Status can_implement(int h, int d, int k);
/// Shape and precision check of a flat problem for the fp8 kernels (also calls ref::validate);
/// anything but fp8 inputs is refused (bf16 inputs: the three-argument form with kBf16).
Status can_implement(const ref::Inputs& in, const ref::Options& opt);
Status can_implement(const ref::PagedInputs& in, const ref::Options& opt);
/// The same check for the kernels of one precision: kFp8 (dsa_fp8, dsa_paged_fp8) or kBf16
/// (dsa_bf16, dsa_paged_bf16); the inputs must be in that precision. fp32 has no sm90 kernel.
Status can_implement(const ref::Inputs& in, const ref::Options& opt, ref::Precision precision);
Status can_implement(const ref::PagedInputs& in, const ref::Options& opt, ref::Precision precision);

// ---- Host entry points: copy inputs to the device, run, copy back ------------------------------

/// Prefill / ragged DSA (SPEC 2-3) in fp8: the fp8 logits kernel then the deterministic top-k.
/// Fills out->nq, k, index [nq,k], score [nq,k] (the kernel's own fp32 logit of each selected key,
/// -inf at -1 padding) and, when opt.want_logits, logits [nq, nk] (logits_cols = nk).
/// bound and ambiguous stay empty (they belong to the reference).
Status dsa_fp8(const ref::Inputs& in, const ref::Options& opt, ref::Result* out);

/// Paged decode DSA (SPEC 1) in fp8. Relative indices are positions in the sequence; absolute
/// ones are physical cache slots (page * page_tokens + slot). Logits on request are
/// [rows, max_pages * page_tokens] by position, -inf where not visible.
Status dsa_paged_fp8(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out);

/// Logits only (DeepGEMM fp8_mqa_logits semantics), [nq, nk] row-major.
Status mqa_logits_fp8(const ref::Inputs& in, std::vector<float>* logits);

/// Prefill / ragged DSA in bf16 (SPEC 7 bf16 mode: q and k bf16, products and sums in fp32 on
/// bf16 wgmma, per-key scales applied as in fp8, usually 1): the bf16 logits kernel then the
/// shared top-k. Outputs as dsa_fp8. Logits are bit-identical to ref::emulate_sm90_dsa_logits.
Status dsa_bf16(const ref::Inputs& in, const ref::Options& opt, ref::Result* out);
/// Paged decode DSA in bf16: a page holds 64 x d bf16 elements, then 64 fp32 scales
/// (64 * (2d + 4) bytes: 16640 at d = 128). Outputs as dsa_paged_fp8.
Status dsa_paged_bf16(const ref::PagedInputs& in, const ref::Options& opt, ref::Result* out);
/// bf16 logits only, [nq, nk] row-major, -inf outside [ks, ke).
Status mqa_logits_bf16(const ref::Inputs& in, std::vector<float>* logits);

/// Top-k of rows of fp32 logits ([rows, cols] row-major, host), over columns [ks[r], ke[r]):
/// canonical order (score descending, index ascending), -1 / -inf padding, NaN and -inf never
/// selected; indices relative to ks (or absolute columns). min_len_hint: TopkParams's (speed
/// only; tests pass right and wrong hints).
Status topk_rows(const std::vector<float>& logits, int64_t rows, int64_t cols,
                 const std::vector<int32_t>& ks, const std::vector<int32_t>& ke, int k,
                 ref::IndexBase base, std::vector<int32_t>* index, std::vector<float>* score,
                 int64_t min_len_hint = 0);

/// GPU probe of the fp8 wgmma accumulation (SPEC 8): one m64n8k32 e4m3 instruction, A [64,32]
/// and B [8,32] given as e4m3 codes (K-major), C [64,8] fp32 incoming accumulator (row-major).
/// D [64,8] receives the instruction's result. use_acc = false issues it with scale-d = 0
/// (the accumulator input is ignored, as in the first k-step of the logits kernel).
Status probe_wgmma_fp8(const uint8_t* a, const uint8_t* b, const float* c, float* d, bool use_acc = true);

/// GPU probe of the bf16 wgmma accumulation: one m64n8k16 bf16 instruction, A [64,16] and
/// B [8,16] bf16 bit patterns (K-major), C [64,8] fp32 incoming accumulator, D [64,8] result;
/// use_acc = false issues it with scale-d = 0.
Status probe_wgmma_bf16(const uint16_t* a, const uint16_t* b, const float* c, float* d, bool use_acc = true);

// ---- Device-pointer entry points (for callers that manage device memory, and benchmarks) ---

/// fp8 MQA logits on device pointers. All pointers are device memory.
struct LogitsParams {
  const uint8_t* q = nullptr;      // [nq, h, d] e4m3 codes
  const uint8_t* k = nullptr;      // [nk, d] e4m3 codes
  const float* k_scale = nullptr;  // [nk] positive per-key scales
  const float* w = nullptr;        // [nq, h] fp32 (q scales folded in)
  const int32_t* ks = nullptr;     // [nq]
  const int32_t* ke = nullptr;     // [nq]  (ks <= ke <= nk)
  float* logits = nullptr;         // [nq, ld]: columns [0, nk) written, -inf outside [ks, ke)
                                   // (see clean_logits)
  int64_t nq = 0, nk = 0, ld = 0;
  int h = 0, d = 0;
  // false: columns outside every row's [ks, ke) may be left unwritten where no key block of the
  // kernel's tile reaches (DeepGEMM's clean_logits = False): for callers that read only [ks, ke),
  // such as launch_topk with the same ks / ke. Columns inside the ranges are the same bits.
  bool clean_logits = true;
  void* stream = nullptr;          // cudaStream_t
};
Status launch_mqa_logits_fp8(const LogitsParams& p);

/// Paged fp8 logits on device pointers (SPEC 1 cache layout, page_tokens = 64).
struct PagedLogitsParams {
  const uint8_t* q = nullptr;             // [batch * next_n, h, d] e4m3 codes
  const float* w = nullptr;               // [batch * next_n, h]
  const uint8_t* cache = nullptr;         // [num_pages, 64 * (d + 4)] bytes
  const int32_t* block_table = nullptr;   // [batch, max_pages]
  const int32_t* context_lens = nullptr;  // [batch]
  float* logits = nullptr;                // [batch * next_n, ld], ld >= max_pages * 64
  int64_t batch = 0, max_pages = 0, num_pages = 0, ld = 0;
  int h = 0, d = 0, next_n = 1;
  void* stream = nullptr;
};
Status launch_paged_logits_fp8(const PagedLogitsParams& p);

/// bf16 MQA logits on device pointers (same kernel, bf16 wgmma). All pointers are device memory.
struct LogitsBf16Params {
  const uint16_t* q = nullptr;     // [nq, h, d] bf16
  const uint16_t* k = nullptr;     // [nk, d] bf16
  const float* k_scale = nullptr;  // [nk] positive per-key scales (all 1 for plain bf16 keys)
  const float* w = nullptr;        // [nq, h] fp32
  const int32_t* ks = nullptr;     // [nq]
  const int32_t* ke = nullptr;     // [nq]  (ks <= ke <= nk)
  float* logits = nullptr;         // [nq, ld]: columns [0, nk) written, -inf outside [ks, ke)
                                   // (see clean_logits)
  int64_t nq = 0, nk = 0, ld = 0;
  int h = 0, d = 0;
  // false: columns outside every row's [ks, ke) may be left unwritten where no key block of the
  // kernel's tile reaches (DeepGEMM's clean_logits = False): for callers that read only [ks, ke),
  // such as launch_topk with the same ks / ke. Columns inside the ranges are the same bits.
  bool clean_logits = true;
  void* stream = nullptr;          // cudaStream_t
};
Status launch_mqa_logits_bf16(const LogitsBf16Params& p);

/// Paged bf16 logits on device pointers (page_tokens = 64; a page is 64 x d bf16, then 64 fp32
/// scales).
struct PagedLogitsBf16Params {
  const uint16_t* q = nullptr;            // [batch * next_n, h, d] bf16
  const float* w = nullptr;               // [batch * next_n, h]
  const uint8_t* cache = nullptr;         // [num_pages, 64 * (2 * d + 4)] bytes
  const int32_t* block_table = nullptr;   // [batch, max_pages]
  const int32_t* context_lens = nullptr;  // [batch]
  float* logits = nullptr;                // [batch * next_n, ld], ld >= max_pages * 64
  int64_t batch = 0, max_pages = 0, num_pages = 0, ld = 0;
  int h = 0, d = 0, next_n = 1;
  void* stream = nullptr;
};
Status launch_paged_logits_bf16(const PagedLogitsBf16Params& p);

/// Deterministic radix top-k over rows of fp32 logits on device pointers.
struct TopkParams {
  const float* logits = nullptr;   // [rows, ld]
  const int32_t* ks = nullptr;     // [rows] first column (nullptr: 0)
  const int32_t* ke = nullptr;     // [rows] end column (nullptr: cols)
  int32_t* index = nullptr;        // [rows, k]
  float* score = nullptr;          // [rows, k] (may be nullptr)
  int64_t rows = 0, cols = 0, ld = 0;
  int k = 0;
  bool absolute = false;           // absolute column instead of column - ks
  // Paged absolute mode (block_table != nullptr and absolute): column j of row r maps to
  // block_table[(r / next_n) * max_pages + j / 64] * 64 + j % 64.
  const int32_t* block_table = nullptr;
  int64_t max_pages = 0;
  int next_n = 1;
  // Speed only: the caller knows every row's ke - ks is at least this, so the short-row length
  // classes below it are not launched (MISA's rows are all long). A wrong hint costs speed, never
  // a row: rows no launch covered go to the cluster kernel, which takes any length.
  int64_t min_len_hint = 0;
  void* stream = nullptr;
};
Status launch_topk(const TopkParams& p);

// ---- Benchmark fixtures: device buffers of a synthetic problem, timed with CUDA events -------

/// Owns the device buffers of one synthetic workload; run() times one execution.
class Workload {
 public:
  virtual ~Workload() = default;
  /// Runs once; *ms receives the elapsed device time measured with CUDA events.
  virtual Status run(float* ms) = 0;
  double flops = 0;   // useful floating-point operations of one run (unmasked pairs * 2*H*D)
  double bytes = 0;   // minimal device-memory bytes of one run
  /// Per-stage device times of the last run() (name, ms), for workloads with several kernels.
  std::vector<std::pair<std::string, float>> stages;
};
/// Causal single-sequence prefill of s tokens: logits + top-k (logits_only: the logits kernel).
Status make_prefill_workload(int64_t s, int h, int d, int k, bool logits_only, uint64_t seed,
                             std::unique_ptr<Workload>* out);
/// Paged decode: batch sequences of ctx tokens (pages shuffled), logits + top-k.
Status make_decode_workload(int64_t batch, int64_t ctx, int h, int d, int k, int next_n,
                            bool logits_only, uint64_t seed, std::unique_ptr<Workload>* out);
/// Top-k alone over rows x cols random fp32 logits.
Status make_topk_workload(int64_t rows, int64_t cols, int k, uint64_t seed,
                          std::unique_ptr<Workload>* out);
/// Ceiling: device-to-device copy of `bytes` (bytes counts read + write).
Status make_copy_workload(int64_t bytes, std::unique_ptr<Workload>* out);
/// Ceiling: back-to-back fp8 wgmma m64n256k32 from shared memory on every SM (flops counted).
Status make_wgmma_peak_workload(std::unique_ptr<Workload>* out);
/// Ceiling: the card's fp8 matmul rate, cuBLASLt's [m, k] x [n, k]^T e4m3 -> bf16 (the
/// torch._scaled_mm shape of BENCHMARKS.md); cuBLASLt is opened at run time (an error where it is
/// missing).
Status make_fp8_gemm_workload(int64_t m, int64_t n, int64_t k, std::unique_ptr<Workload>* out);
/// bf16 versions of the prefill and decode workloads (random bf16 q and k, scales 1 in prefill).
Status make_prefill_workload_bf16(int64_t s, int h, int d, int k, bool logits_only, uint64_t seed,
                                  std::unique_ptr<Workload>* out);
Status make_decode_workload_bf16(int64_t batch, int64_t ctx, int h, int d, int k, int next_n,
                                 bool logits_only, uint64_t seed, std::unique_ptr<Workload>* out);
/// Ceiling: back-to-back bf16 wgmma m64n256k16 from shared memory on every SM (flops counted).
Status make_wgmma_peak_workload_bf16(std::unique_ptr<Workload>* out);

}  // namespace indexlab::cuda
