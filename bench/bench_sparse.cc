// Google Benchmark cases of the sparse paths on the GPU (HISA, MISA, MISA-dagger), each timed side
// by side with our DSA on the same synthetic problem in the same process (counter x_dsa).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda/api.h"
#include "cuda/sparse.h"

namespace {

using indexlab::Status;
using indexlab::cuda::SparseBenchSpec;
using indexlab::cuda::Workload;
namespace ref = indexlab::ref;

// Median time of `runs` runs of the DSA workload of the same spec (after one warm-up).
Status dsa_median_ms(SparseBenchSpec spec, int runs, float* ms) {
  spec.path = ref::Path::kDsa;
  std::unique_ptr<Workload> w;
  INDEXLAB_RETURN_IF_ERROR(indexlab::cuda::make_sparse_workload(spec, &w));
  std::vector<float> t(static_cast<size_t>(runs) + 1);
  for (auto& x : t) INDEXLAB_RETURN_IF_ERROR(w->run(&x));
  t.erase(t.begin());
  std::sort(t.begin(), t.end());
  *ms = t[t.size() / 2];
  return Status::Ok();
}

// Times the spec's path under manual time; counters: TFLOP/s (flops the workload counts),
// <stage>_ms (mean per run), router_share where there is a router, and x_dsa = DSA median time on
// the same spec / this path's mean time.
void run_sparse(benchmark::State& state, const SparseBenchSpec& spec, bool compare_dsa) {
  std::string why;
  if (!indexlab::cuda::device_available(&why)) {
    state.SkipWithError(("no GPU: " + why).c_str());
    return;
  }
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_sparse_workload(spec, &w);
  if (!s.ok()) {
    state.SkipWithError(s.message().c_str());
    return;
  }
  float ms = 0;
  for (int i = 0; i < 2; ++i) {  // warm-up
    s = w->run(&ms);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
  }
  std::map<std::string, double> stage_sum;
  std::vector<std::string> order;
  double total = 0;
  for (auto _ : state) {
    s = w->run(&ms);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
    state.SetIterationTime(ms * 1e-3);
    total += ms;
    for (const auto& st : w->stages) {
      if (!stage_sum.count(st.first)) order.push_back(st.first);
      stage_sum[st.first] += st.second;
    }
  }
  const double n = static_cast<double>(state.iterations());
  if (w->flops > 0)
    state.counters["TFLOP/s"] = benchmark::Counter(w->flops * 1e-12 * n, benchmark::Counter::kIsRate);
  for (const auto& name : order) state.counters[name + "_ms"] = stage_sum[name] / n;
  if (stage_sum.count("router") && total > 0) state.counters["router_share"] = stage_sum["router"] / total;
  if (compare_dsa && spec.path != ref::Path::kDsa) {
    w.reset();  // free the path's buffers before the DSA ones
    float dsa = 0;
    s = dsa_median_ms(spec, 3, &dsa);
    if (!s.ok()) {
      state.SkipWithError(("DSA baseline: " + s.message()).c_str());
      return;
    }
    state.counters["dsa_ms"] = dsa;
    state.counters["x_dsa"] = total > 0 ? dsa / (total / n) : 0.0;
  }
}

// Registered by name so each case says its path and shape.
struct Case {
  std::string name;
  SparseBenchSpec spec;
  bool vs_dsa;
  bool fixed_iterations;  // the long prefill cases run 3 iterations
};

std::vector<Case> cases() {
  std::vector<Case> v;
  auto prefill = [&](ref::Path path, int64_t s, bool vs) {
    Case c;
    c.spec.path = path;
    c.spec.sq = c.spec.sk = s;
    c.spec.seed = 42;
    c.name = std::string("BM_SparsePrefill/") + ref::path_name(path) + "/S:" + std::to_string(s);
    c.vs_dsa = vs;
    c.fixed_iterations = true;
    v.push_back(c);
  };
  // Causal prefill (H = 64, D = 128, K = 2048; HISA B = 128, m = 64).
  prefill(ref::Path::kHisa, 32768, true);
  prefill(ref::Path::kHisa, 65536, true);
  prefill(ref::Path::kHisa, 131072, false);
  prefill(ref::Path::kDsa, 131072, false);
  // The last SQ = 1024 queries of an SK = 64K sequence: MISA with h of 64 heads active (Br = 1024),
  // MISA-dagger (K1 = 8192) and HISA, each beside DSA.
  auto chunk = [&](ref::Path path, int h) {
    Case c;
    c.spec.path = path;
    c.spec.sq = 1024;
    c.spec.sk = 65536;
    c.spec.opt.misa_heads = h;
    c.spec.seed = 43;
    c.name = std::string("BM_SparseChunk/") + ref::path_name(path) + "/SQ:1024/SK:65536" +
             (path == ref::Path::kHisa ? "" : "/h:" + std::to_string(h));
    c.vs_dsa = true;
    c.fixed_iterations = false;
    v.push_back(c);
  };
  chunk(ref::Path::kMisa, 8);
  chunk(ref::Path::kMisa, 4);
  chunk(ref::Path::kMisa, 16);
  chunk(ref::Path::kMisaDagger, 8);
  chunk(ref::Path::kHisa, 8);
  // Paged decode: 64 sequences of ctx tokens, next_n = 1.
  auto decode = [&](ref::Path path, int64_t ctx) {
    Case c;
    c.spec.path = path;
    c.spec.batch = 64;
    c.spec.sk = ctx;
    c.spec.seed = 44;
    c.name = std::string("BM_SparseDecode/") + ref::path_name(path) + "/B:64/ctx:" + std::to_string(ctx);
    c.vs_dsa = true;
    c.fixed_iterations = false;
    v.push_back(c);
  };
  for (int64_t ctx : {8192, 32768, 65536, 131072}) decode(ref::Path::kHisa, ctx);
  decode(ref::Path::kMisa, 65536);
  decode(ref::Path::kMisaDagger, 65536);
  return v;
}

// Top-k over many short rows: the shape of HISA's and MISA-dagger's candidate rows (8192 columns),
// and of a causal prefill's rows up to 49152 columns (the short-row kernel's length classes).
void BM_TopkShortRows(benchmark::State& state) {
  std::string why;
  if (!indexlab::cuda::device_available(&why)) {
    state.SkipWithError(("no GPU: " + why).c_str());
    return;
  }
  std::unique_ptr<Workload> w;
  Status s = indexlab::cuda::make_topk_workload(state.range(0), state.range(1), 2048, 12, &w);
  if (!s.ok()) {
    state.SkipWithError(s.message().c_str());
    return;
  }
  float ms = 0;
  for (auto _ : state) {
    s = w->run(&ms);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
    state.SetIterationTime(ms * 1e-3);
  }
  state.counters["GB/s"] = benchmark::Counter(w->bytes * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TopkShortRows)
    ->ArgNames({"rows", "cols"})
    ->Args({16384, 8192})
    ->Args({4096, 16384})
    ->Args({2048, 32768})
    ->Args({1024, 49152})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

const int kRegistered = [] {
  for (const Case& c : cases()) {
    auto* b = benchmark::RegisterBenchmark(c.name.c_str(), [c](benchmark::State& st) {
      run_sparse(st, c.spec, c.vs_dsa);
    });
    b->UseManualTime()->Unit(benchmark::kMillisecond);
    if (c.fixed_iterations) {
      b->Iterations(3);
    } else {
      b->MinTime(0.3);
    }
  }
  return 0;
}();

}  // namespace
