/// `indexlab bench`: times a registered candidate on a built-in workload.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "compare/registry.h"
#include "compare/workloads.h"
#include "cuda/api.h"

namespace indexlab::cli {

CLI::App* add_bench(CLI::App& app, BenchArgs* a) {
  CLI::App* c = app.add_subcommand("bench", "Time a registered candidate on a built-in workload (wall clock, "
                                            "median of --repeats runs; GFLOP/s over unmasked pairs). The full "
                                            "Google Benchmark suite is the indexlab_bench binary.");
  add_workload_options(c, &a->wl);
  c->add_option("--candidate-name", a->candidate, "Registered candidate")->capture_default_str();
  c->add_option("--repeats", a->repeats, "Timed runs (after one warm-up)")->capture_default_str();
  c->add_flag("--json", a->json, "Print JSON");
  return c;
}

int run_bench(const BenchArgs& a) {
  const compare::Candidate* c = compare::Registry::global().find(a.candidate);
  if (!c) {
    std::fprintf(stderr, "indexlab: error: no candidate named '%s'\n", a.candidate.c_str());
    return kExitError;
  }
  ref::Path path;
  ref::Precision prec;
  Status st = ref::parse_path(a.wl.path, &path);
  if (st.ok()) st = ref::parse_precision(a.wl.precision, &prec);
  compare::WorkloadSpec spec{a.wl.workload.empty() ? "gaussian" : a.wl.workload, a.wl.nq, a.wl.nk, a.wl.h,
                             a.wl.d, a.wl.k, a.wl.seed};
  ref::RawInputs raw;
  compare::Problem p;
  p.path = path;
  p.name = spec.kind;
  if (st.ok()) st = compare::make_workload(spec, &raw);
  if (st.ok()) st = ref::quantize_inputs(raw, prec, {}, &p.flat);
  if (st.ok() && a.wl.paged) {
    st = compare::to_paged(p.flat, a.wl.next_n, a.wl.seed, &p.paged_in);
    p.paged = true;
  }
  std::string why;
  if (st.ok() && !c->supports(p, &why)) st = error("candidate '", c->name, "' does not support this problem: ", why);
  if (!st.ok()) {
    std::fprintf(stderr, "indexlab: error: %s\n", st.message().c_str());
    return kExitError;
  }
  compare::FlatView fv;
  st = compare::flat_view(p, &fv);
  if (!st.ok()) {
    std::fprintf(stderr, "indexlab: error: %s\n", st.message().c_str());
    return kExitError;
  }
  double pairs = 0;
  for (int64_t i = 0; i < fv.in.shape.nq; ++i) pairs += fv.in.ke[i] - fv.in.ks[i];
  std::vector<double> ms;
  for (int r = 0; r <= std::max(1, a.repeats); ++r) {
    compare::CandidateOutput out;
    const auto t0 = std::chrono::steady_clock::now();
    st = c->run(p, &out);
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!st.ok()) {
      std::fprintf(stderr, "indexlab: error: %s\n", st.message().c_str());
      return kExitError;
    }
    if (r > 0) ms.push_back(t);  // run 0 warms up
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double gflops = 2.0 * p.h() * p.d() * pairs / (med * 1e-3) * 1e-9;
  if (a.json) {
    std::cout << nlohmann::json{{"candidate", c->name}, {"workload", p.name}, {"median_ms", med},
                                {"min_ms", ms.front()}, {"max_ms", ms.back()}, {"dsa_gflops", gflops},
                                {"pairs", pairs}}.dump(2)
              << "\n";
  } else {
    std::printf("%s on %s (%s %s, %lld rows, %.0f unmasked pairs): median %.3f ms (min %.3f, max %.3f) over %zu "
                "runs (wall clock of the whole candidate call, host copies included); %.2f DSA-equivalent GFLOP/s\n",
                c->name.c_str(), p.name.c_str(), ref::path_name(path), ref::precision_name(prec),
                (long long)p.rows(), pairs, med, ms.front(), ms.back(), ms.size(), gflops);
  }
  return kExitOk;
}

}  // namespace indexlab::cli
