/// Subcommands of the indexlab command line: each has an argument struct, a function that adds
/// it to the CLI11 app, and a function that runs it and returns the process exit code.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace indexlab::cli {

/// Exit codes: 0 success, 1 the candidate failed its checks, 2 bad usage or input.
constexpr int kExitOk = 0, kExitFailed = 1, kExitError = 2;

struct WorkloadArgs {
  std::string workload;          // empty: all built-in workloads (verify) / gaussian (others)
  std::string path = "dsa";
  std::string precision = "fp8";
  int64_t nq = 8, nk = 16384;
  int h = 64, d = 128, k = 2048;
  uint64_t seed = 1;
  bool paged = false;
  int next_n = 1;
};
void add_workload_options(CLI::App* app, WorkloadArgs* a);

struct VerifyArgs {
  WorkloadArgs wl;
  std::string problem, inputs, candidate_file, candidate_name;
  int64_t rows = 0;
  std::string tolerance = "exact";
  int reruns = 3;
  bool json = false, require_exact = false;
  std::string repro_dir;
};
CLI::App* add_verify(CLI::App& app, VerifyArgs* a);
int run_verify(const VerifyArgs& a);

struct ReplayArgs {
  std::string dir;
  std::string tolerance = "exact";
  bool json = false;
};
CLI::App* add_replay(CLI::App& app, ReplayArgs* a);
int run_replay(const ReplayArgs& a);

struct ExportArgs {
  WorkloadArgs wl;
  std::string out;
};
CLI::App* add_export(CLI::App& app, ExportArgs* a);
int run_export(const ExportArgs& a);

int run_list();

struct FuzzArgs {
  std::string target;
  std::string time = "60s";
  uint64_t seed = 1;
  std::string shard = "0/1";
  std::string out = "fuzz-out";
  std::string ledger;
  int64_t max_cases = 0;
  bool json = false;
  // Added with the fuzzer (issue 4):
  bool keep_going = false;         // go on after a new failure
  bool no_shrink = false;          // write the failing case as drawn
  int shrink_evals = 400;          // candidate runs spent shrinking one failure
  std::string isolate = "auto";    // auto | on | off: run the candidate in a forked child
  double timeout = 60.0;           // seconds per isolated candidate run (a hang past it)
  int workers = 1;                 // local worker processes (one per GPU for GPU targets)
  std::string generators;          // comma list (default: all enabled)
  std::string paths;               // comma list of dsa,hisa,misa,misa_dagger (default: all)
  std::string precisions;          // comma list of fp32,bf16,fp8 (default: all)
  std::string heads, dims;         // comma lists of fixed h / d values (default: random)
  int64_t max_nk = 0;              // key cap of the generators (0: the target's default)
  bool long_rows = false;          // enable the 1M+ key generator
  bool nonfinite = false;          // enable the NaN / Inf value class
  bool list = false;               // list targets, generators and value classes, then exit
};
CLI::App* add_fuzz(CLI::App& app, FuzzArgs* a);
int run_fuzz(const FuzzArgs& a);

struct BenchArgs {
  WorkloadArgs wl;
  std::string candidate = "ref.dsa";
  int repeats = 5;
  bool json = false;
};
CLI::App* add_bench(CLI::App& app, BenchArgs* a);
int run_bench(const BenchArgs& a);

struct QualityArgs {
  std::string workloads = "sinks_local,needles,specialized_heads,gaussian";
  std::string contexts = "4096,8192,16384,32768,65536,131072";
  std::string active_heads = "2,4,8,16,32";
  int64_t rows = 8;
  int h = 64, d = 128, k = 2048;
  std::string precision = "fp8";
  uint64_t seed = 1;
  std::string csv;
};
CLI::App* add_quality(CLI::App& app, QualityArgs* a);
int run_quality(const QualityArgs& a);

}  // namespace indexlab::cli
