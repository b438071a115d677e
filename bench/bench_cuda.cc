// Google Benchmark cases of the Hopper kernels (CUDA-event timings from cuda/api.h workloads).
#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "cuda/api.h"
#include "cuda/scoped_env.h"

namespace {

using indexlab::Status;
using indexlab::cuda::Workload;

// Runs a workload under manual time; counters: TFLOP/s over unmasked pairs, GB/s of minimal bytes.
void run_workload(benchmark::State& state, Status made, std::unique_ptr<Workload>& w) {
  std::string why;
  if (!indexlab::cuda::device_available(&why)) {
    state.SkipWithError(("no GPU: " + why).c_str());
    return;
  }
  if (!made.ok()) {
    state.SkipWithError(made.message().c_str());
    return;
  }
  float ms = 0;
  for (int i = 0; i < 3; ++i) {  // warm-up
    Status s = w->run(&ms);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
  }
  for (auto _ : state) {
    Status s = w->run(&ms);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
    state.SetIterationTime(ms * 1e-3);
  }
  if (w->flops > 0)
    state.counters["TFLOP/s"] = benchmark::Counter(w->flops * 1e-12 * state.iterations(),
                                                   benchmark::Counter::kIsRate);
  if (w->bytes > 0)
    state.counters["GB/s"] = benchmark::Counter(w->bytes * 1e-9 * state.iterations(),
                                                benchmark::Counter::kIsRate);
}

void BM_CudaCeilingCopy(benchmark::State& state) {
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_copy_workload(int64_t{2} << 30, &w);  // 1 GiB read + 1 GiB written
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaCeilingCopy)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);

void BM_CudaCeilingWgmmaFp8(benchmark::State& state) {
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_wgmma_peak_workload(&w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaCeilingWgmmaFp8)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);

// The card's fp8 matmul rate as BENCHMARKS.md measures it (torch._scaled_mm is cuBLASLt): an
// 8192^3 e4m3 GEMM with bf16 output. Skipped, with the reason, where cuBLASLt cannot be opened.
void BM_CudaCeilingGemmFp8(benchmark::State& state) {
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_fp8_gemm_workload(8192, 8192, 8192, &w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaCeilingGemmFp8)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);

// ws = 1: the warp-specialized prefill logits kernel (the default; fp8 keys by TMA, at h >= 32
// with an epilogue warpgroup: logits_wse_kernel), timed beside the same without the epilogue
// warpgroup (ws = 3: INDEXLAB_LOGITS=wsnoepi), its cp.async producer (ws = 2: ws1) and
// logits_kernel (ws = 0: v1). Every row sets the variable, so an exported value cannot mislabel a
// row.
const char* logits_kernel_env(const benchmark::State& state) {
  static const char* const kKernel[] = {"v1", "ws", "ws1", "wsnoepi"};
  return kKernel[state.range(2)];
}

void BM_CudaPrefillCausal(benchmark::State& state) {
  indexlab::cuda::ScopedEnv kernel("INDEXLAB_LOGITS", logits_kernel_env(state));
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_prefill_workload(state.range(0), 64, 128, 2048, state.range(1) != 0,
                                                   42, &w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaPrefillCausal)
    ->ArgNames({"S", "logits_only", "ws"})
    ->Args({8192, 1, 0})
    ->Args({8192, 1, 1})
    ->Args({8192, 1, 2})
    ->Args({8192, 1, 3})
    ->Args({8192, 0, 0})
    ->Args({8192, 0, 1})
    ->Args({8192, 0, 2})
    ->Args({8192, 0, 3})
    ->Args({32768, 1, 0})
    ->Args({32768, 1, 1})
    ->Args({32768, 1, 2})
    ->Args({32768, 1, 3})
    ->Args({32768, 0, 0})
    ->Args({32768, 0, 1})
    ->Args({32768, 0, 2})
    ->Args({32768, 0, 3})
    ->Args({65536, 1, 0})  // 16 GiB of materialized logits; 128K (64 GiB) does not fit this workload
    ->Args({65536, 0, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5);

// tma = 1: the default TMA decode kernel; tma = 0: logits_kernel (INDEXLAB_DECODE=v1); timed side
// by side.
void BM_CudaDecodePaged(benchmark::State& state) {
  static const char* const kKernel[] = {"v1", "tma"};
  indexlab::cuda::ScopedEnv kernel("INDEXLAB_DECODE", kKernel[state.range(1)]);
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_decode_workload(64, 65536, 64, 128, 2048, 1, state.range(0) != 0, 7, &w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaDecodePaged)
    ->ArgNames({"logits_only", "tma"})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({0, 0})
    ->Args({0, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

// ---- bf16 (issue 5): the same shapes on the bf16 kernels, and the bf16 wgmma ceiling ----------

void BM_CudaCeilingWgmmaBf16(benchmark::State& state) {
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_wgmma_peak_workload_bf16(&w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaCeilingWgmmaBf16)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);

void BM_CudaPrefillCausalBf16(benchmark::State& state) {
  indexlab::cuda::ScopedEnv kernel("INDEXLAB_LOGITS", logits_kernel_env(state));
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_prefill_workload_bf16(state.range(0), 64, 128, 2048,
                                                        state.range(1) != 0, 42, &w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaPrefillCausalBf16)
    ->ArgNames({"S", "logits_only", "ws"})
    ->Args({8192, 1, 0})
    ->Args({8192, 1, 1})
    ->Args({8192, 0, 0})
    ->Args({32768, 1, 0})
    ->Args({32768, 1, 1})
    ->Args({32768, 0, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5);

void BM_CudaDecodePagedBf16(benchmark::State& state) {
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_decode_workload_bf16(64, 65536, 64, 128, 2048, 1, state.range(0) != 0,
                                                       7, &w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaDecodePagedBf16)
    ->ArgNames({"logits_only"})
    ->Arg(1)
    ->Arg(0)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

void BM_CudaTopk(benchmark::State& state) {
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_topk_workload(64, 131072, 2048, 11, &w);
  run_workload(state, s, w);
}
BENCHMARK(BM_CudaTopk)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.3);

}  // namespace
