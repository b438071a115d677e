// CPU reference paths at H = 64, D = 128, K = 2048, with FLOP counters and the machine's Eigen
// fp64 GEMM rate measured in the same binary (counter of_gemm = oracle rate / GEMM rate).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <chrono>
#include <map>
#include <memory>
#include <random>

#include "reference/problem.h"

namespace indexlab::bench {
namespace {

using ref::Inputs;
using ref::Path;
using ref::Precision;

constexpr int kH = 64, kD = 128, kK = 2048;

/// fp64 GEMM rate of this machine through Eigen, all OpenMP threads each running an
/// oracle-shaped product ([256 x 128] x [128 x 512]), in FLOP/s: the best of three trials of
/// about 0.2 s. Measured again for every benchmark case, right before it, so that the ratio
/// of_gemm compares two rates taken under the same load.
double eigen_gemm_rate() {
  return [] {
    using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const int nt = omp_get_max_threads();
    const int reps = 100;
    double best = 0.0;
    for (int trial = 0; trial < 3; ++trial) {
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nt)
      {
        RowMat a = RowMat::Random(256, kD), c(256, 512);
        Eigen::MatrixXd b = Eigen::MatrixXd::Random(kD, 512);
        for (int r = 0; r < reps; ++r) {
          c.noalias() = a * b;
          a(0, 0) += c(1, 1) * 1e-30;  // keep the products live
        }
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, 2.0 * 256 * kD * 512 * reps * nt / s);
    }
    return best;
  }();
}

void BM_EigenGemmFp64(benchmark::State& state) {
  double rate = 0.0;
  for (auto _ : state) rate = eigen_gemm_rate();
  state.counters["GFLOP/s"] = rate * 1e-9;
}
BENCHMARK(BM_EigenGemmFp64)->Iterations(1)->Unit(benchmark::kMillisecond);

/// Causal single-sequence prefill of s queries over s keys, cached per (size, precision).
const Inputs& prefill(int64_t s, Precision p) {
  static std::map<std::pair<int64_t, int>, std::unique_ptr<Inputs>> cache;
  auto& slot = cache[{s, static_cast<int>(p)}];
  if (!slot) {
    std::mt19937_64 rng(1234 + s);
    std::normal_distribution<float> g(0.0f, 1.0f);
    ref::RawInputs raw;
    raw.shape = ref::Shape{s, s, kH, kD, kK};
    raw.q.resize(s * kH * kD);
    raw.k.resize(s * kD);
    raw.w.resize(s * kH);
    for (auto& x : raw.q) x = g(rng);
    for (auto& x : raw.k) x = g(rng);
    for (auto& x : raw.w) x = 0.5f * g(rng) + 0.25f;
    raw.ks.assign(s, 0);
    raw.ke.resize(s);
    for (int64_t i = 0; i < s; ++i) raw.ke[i] = static_cast<int32_t>(i + 1);
    slot = std::make_unique<Inputs>();
    if (!ref::quantize_inputs(raw, p, {}, slot.get()).ok()) std::abort();
  }
  return *slot;
}

/// Decode: `batch` queries (next_n = 1), each seeing its own `ctx` keys, as a flat problem.
const Inputs& decode(int64_t ctx, int64_t batch) {
  static std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Inputs>> cache;
  auto& slot = cache[{ctx, batch}];
  if (!slot) {
    std::mt19937_64 rng(99 + ctx);
    std::normal_distribution<float> g(0.0f, 1.0f);
    ref::RawInputs raw;
    raw.shape = ref::Shape{batch, ctx * batch, kH, kD, kK};
    raw.q.resize(batch * kH * kD);
    raw.k.resize(ctx * batch * kD);
    raw.w.resize(batch * kH);
    for (auto& x : raw.q) x = g(rng);
    for (auto& x : raw.k) x = g(rng);
    for (auto& x : raw.w) x = 0.5f * g(rng) + 0.25f;
    for (int64_t b = 0; b < batch; ++b) {
      raw.ks.push_back(static_cast<int32_t>(b * ctx));
      raw.ke.push_back(static_cast<int32_t>((b + 1) * ctx));
    }
    slot = std::make_unique<Inputs>();
    if (!ref::quantize_inputs(raw, Precision::kFp8, {}, slot.get()).ok()) std::abort();
  }
  return *slot;
}

void run_case(benchmark::State& state, Path path, const Inputs& in) {
  ref::Options o;  // HISA B=128 m=64, MISA h=8 Br=1024, MISA-dagger K1=8192: the defaults
  int64_t pairs = 0;
  for (int64_t i = 0; i < in.shape.nq; ++i) pairs += in.ke[i] - in.ks[i];
  const double gemm = eigen_gemm_rate();  // measured right before the timed runs
  double total = 0.0;
  int64_t iters = 0;
  for (auto _ : state) {
    ref::Result r;
    const auto t0 = std::chrono::steady_clock::now();
    Status st = ref::run(path, in, o, &r);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!st.ok()) {
      state.SkipWithError(st.message().c_str());
      return;
    }
    benchmark::DoNotOptimize(r.index.data());
    state.SetIterationTime(sec);
    total += sec;
    ++iters;
  }
  // FLOPs over unmasked pairs only (2 H D each), whatever the path computes.
  const double rate = 2.0 * kH * kD * static_cast<double>(pairs) * iters / total;
  state.counters["dsa_GFLOP/s"] = rate * 1e-9;
  // Fraction of the fp64 GEMM rate (same binary, same threads): the oracle's roofline ratio.
  state.counters["of_gemm"] = rate / gemm;
  state.counters["gemm_GFLOP/s"] = gemm * 1e-9;
  state.counters["pairs"] = static_cast<double>(pairs);
}

void BM_RefPrefill(benchmark::State& state, Path path, Precision p) {
  run_case(state, path, prefill(state.range(0), p));
}
void BM_RefDecode(benchmark::State& state, Path path) {
  run_case(state, path, decode(state.range(0), state.range(1)));
}

#define INDEXLAB_PREFILL(name, path, prec)                                         \
  BENCHMARK_CAPTURE(BM_RefPrefill, name, path, prec)                               \
      ->RangeMultiplier(2)->Range(1024, 8192)->Unit(benchmark::kMillisecond)       \
      ->UseManualTime()->Iterations(1)

INDEXLAB_PREFILL(dsa_fp8, Path::kDsa, Precision::kFp8);
INDEXLAB_PREFILL(dsa_bf16, Path::kDsa, Precision::kBf16);
INDEXLAB_PREFILL(dsa_fp32, Path::kDsa, Precision::kFp32);
INDEXLAB_PREFILL(hisa_fp8, Path::kHisa, Precision::kFp8);
INDEXLAB_PREFILL(misa_fp8, Path::kMisa, Precision::kFp8);
INDEXLAB_PREFILL(misa_dagger_fp8, Path::kMisaDagger, Precision::kFp8);

#define INDEXLAB_DECODE(name, path)                                                        \
  BENCHMARK_CAPTURE(BM_RefDecode, name, path)                                              \
      ->ArgsProduct({{8192, 16384, 32768, 65536}, {4}})->Unit(benchmark::kMillisecond)     \
      ->UseManualTime()->Iterations(3)

INDEXLAB_DECODE(dsa_fp8, Path::kDsa);
INDEXLAB_DECODE(hisa_fp8, Path::kHisa);
INDEXLAB_DECODE(misa_fp8, Path::kMisa);
INDEXLAB_DECODE(misa_dagger_fp8, Path::kMisaDagger);

}  // namespace
}  // namespace indexlab::bench

BENCHMARK_MAIN();
