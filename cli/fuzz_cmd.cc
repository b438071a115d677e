/// `indexlab fuzz`: a sharded, time-bounded campaign of generated problems against one target.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "compare/registry.h"
#include "fuzz/campaign.h"

namespace indexlab::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) v.push_back(item);
  return v;
}

Status parse_int_list(const std::string& s, const char* what, std::vector<int>* out) {
  for (const std::string& x : split_list(s)) {
    try {
      size_t used = 0;
      const int v = std::stoi(x, &used);
      if (used != x.size() || v < 1) throw std::invalid_argument("bad");
      out->push_back(v);
    } catch (const std::exception&) {
      return error("--", what, ": '", x, "' is not a positive integer");
    }
  }
  return Status::Ok();
}

/// --shard auto: Slurm job arrays, Kubernetes indexed jobs (INDEXLAB_SHARDS gives the count).
Status resolve_shard(const std::string& s, int* shard, int* shards) {
  if (s != "auto") return fuzz::parse_shard(s, shard, shards);
  auto env = [](const char* n) -> const char* { return std::getenv(n); };
  if (env("SLURM_ARRAY_TASK_ID") && env("SLURM_ARRAY_TASK_COUNT")) {
    const long min = env("SLURM_ARRAY_TASK_MIN") ? std::atol(env("SLURM_ARRAY_TASK_MIN")) : 0;
    return fuzz::parse_shard(std::to_string(std::atol(env("SLURM_ARRAY_TASK_ID")) - min) + "/" +
                                 env("SLURM_ARRAY_TASK_COUNT"),
                             shard, shards);
  }
  if (env("JOB_COMPLETION_INDEX") && env("INDEXLAB_SHARDS"))
    return fuzz::parse_shard(std::string(env("JOB_COMPLETION_INDEX")) + "/" + env("INDEXLAB_SHARDS"), shard, shards);
  return error("--shard auto needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX and ",
               "INDEXLAB_SHARDS");
}

Status build(const FuzzArgs& a, fuzz::Target* t, fuzz::CampaignOptions* o) {
  if (a.target.empty()) return error("fuzz: --target is required (see --list)");
  INDEXLAB_RETURN_IF_ERROR(fuzz::make_target(a.target, compare::Registry::global(), t));
  fuzz::GenConfig& g = t->gen;
  g.generators = split_list(a.generators);
  for (const std::string& n : g.generators) {
    const auto& all = fuzz::generator_names();
    if (std::find(all.begin(), all.end(), n) == all.end()) return error("fuzz: unknown generator '", n, "'");
  }
  if (!a.paths.empty()) {
    g.paths.clear();
    for (const std::string& n : split_list(a.paths)) {
      ref::Path p;
      INDEXLAB_RETURN_IF_ERROR(ref::parse_path(n, &p).with_context("--paths: "));
      g.paths.push_back(p);
    }
  }
  if (!a.precisions.empty()) {
    g.precisions.clear();
    for (const std::string& n : split_list(a.precisions)) {
      ref::Precision p;
      INDEXLAB_RETURN_IF_ERROR(ref::parse_precision(n, &p).with_context("--precisions: "));
      g.precisions.push_back(p);
    }
  }
  if (!a.heads.empty()) {
    g.h_choices.clear();
    INDEXLAB_RETURN_IF_ERROR(parse_int_list(a.heads, "heads", &g.h_choices));
  }
  if (!a.dims.empty()) {
    g.d_choices.clear();
    INDEXLAB_RETURN_IF_ERROR(parse_int_list(a.dims, "dims", &g.d_choices));
  }
  if (a.max_nk > 0) g.max_nk = a.max_nk;
  g.allow_long = a.long_rows;
  g.nonfinite = a.nonfinite;
  if (g.paths.empty() || g.precisions.empty()) return error("fuzz: no path or precision left to draw");
  o->seed = a.seed;
  INDEXLAB_RETURN_IF_ERROR(resolve_shard(a.shard, &o->shard, &o->shards));
  INDEXLAB_RETURN_IF_ERROR(fuzz::parse_duration(a.time, &o->time_budget_s).with_context("--time: "));
  if (a.max_cases < 0) return error("--max-cases must be >= 0");
  o->max_cases = a.max_cases;
  o->keep_going = a.keep_going;
  o->shrink = !a.no_shrink;
  o->shrink_options.max_evals = a.shrink_evals;
  o->out_dir = a.out;
  if (!a.ledger.empty()) INDEXLAB_RETURN_IF_ERROR(fuzz::load_ledger(a.ledger, &o->ledger));
  if (a.isolate == "on") o->eval.isolate = true;
  else if (a.isolate == "off") o->eval.isolate = false;
  else if (a.isolate == "auto") o->eval.isolate = t->isolate;
  else return error("--isolate must be auto, on or off");
  if (!(a.timeout > 0)) return error("--timeout must be positive");
  o->eval.timeout_s = a.timeout;
  return Status::Ok();
}

void print_summary(const fuzz::Target& t, const fuzz::CampaignOptions& o, const fuzz::CampaignResult& r) {
  std::printf("fuzz %s: seed %llu shard %d/%d: %lld cases in %.1f s (%.0f cases/s): %lld passed, %lld skipped, "
              "%lld known failures, %lld new failures\n",
              t.name.c_str(), static_cast<unsigned long long>(o.seed), o.shard, o.shards,
              static_cast<long long>(r.cases), r.seconds, r.seconds > 0 ? r.cases / r.seconds : 0.0,
              static_cast<long long>(r.passed), static_cast<long long>(r.skipped),
              static_cast<long long>(r.known_failures), static_cast<long long>(r.new_failures));
  for (const fuzz::FailureRecord& f : r.failures) {
    std::printf("  %s case %lld [%s/%s] %s: %s\n", f.known ? "known" : "NEW", static_cast<long long>(f.case_index),
                f.generator.c_str(), f.values.c_str(), fuzz::failure_kind_name(f.kind), f.detail.c_str());
    if (f.known) std::printf("    cause: %s\n", f.cause.c_str());
    if (!f.known) {
      std::printf("    shrunk from size %lld to %lld in %d runs\n", static_cast<long long>(f.size_before),
                  static_cast<long long>(f.size_after), f.shrink_evals);
      if (!f.repro_dir.empty()) std::printf("    repro: indexlab replay %s\n", f.repro_dir.c_str());
    }
  }
}

int run_one(const FuzzArgs& a, const fuzz::Target& t, fuzz::CampaignOptions o) {
  if (!a.json) o.log = [](const std::string& line) { std::fprintf(stderr, "[fuzz] %s\n", line.c_str()); };
  fuzz::CampaignResult r;
  Status st = fuzz::run_campaign(t, o, &r);
  if (!st.ok()) {
    std::fprintf(stderr, "indexlab: %s\n", st.message().c_str());
    return kExitError;
  }
  nlohmann::json j = r.to_json();
  j["target"] = t.name;
  j["seed"] = o.seed;
  j["shard"] = std::to_string(o.shard) + "/" + std::to_string(o.shards);
  if (!o.out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.out_dir, ec);
    std::ofstream f(std::filesystem::path(o.out_dir) /
                    ("summary-" + t.name + "-shard" + std::to_string(o.shard) + "of" + std::to_string(o.shards) + ".json"));
    if (f) f << j.dump(2) << "\n";
  }
  if (a.json) std::cout << j.dump(2) << std::endl;
  else print_summary(t, o, r);
  return r.new_failures > 0 ? kExitFailed : kExitOk;
}

}  // namespace

CLI::App* add_fuzz(CLI::App& app, FuzzArgs* a) {
  CLI::App* c = app.add_subcommand(
      "fuzz",
      "Fuzz a candidate against the reference (or a reference identity) on generated problems until a\n"
      "new failure or the time budget; failures are shrunk and written as repro directories that\n"
      "`indexlab replay` judges again.");
  c->add_option("--target,-t", a->target, "Candidate (ref.dsa, cuda.dsa, ...) or identity target (see --list)");
  c->add_option("--time", a->time, "Time budget: 90s, 10m, 2h (0: none)")->capture_default_str();
  c->add_option("--seed", a->seed, "Campaign seed; case i is replayable from (seed, i)")->capture_default_str();
  c->add_option("--shard", a->shard,
                "i/n: run case indices congruent to i mod n; 'auto' reads SLURM_ARRAY_TASK_ID/COUNT or "
                "JOB_COMPLETION_INDEX + INDEXLAB_SHARDS")
      ->capture_default_str();
  c->add_option("--workers", a->workers,
                "Local worker processes, each a sub-shard (GPU targets: one per GPU via CUDA_VISIBLE_DEVICES)")
      ->capture_default_str();
  c->add_option("--out", a->out, "Directory for repro directories and shard summaries")->capture_default_str();
  c->add_option("--ledger", a->ledger, "JSON ledger of known failures (counted, not stopped on)");
  c->add_option("--max-cases", a->max_cases, "Stop after this many cases per shard (0: no limit)");
  c->add_flag("--keep-going", a->keep_going, "Go on after a new failure");
  c->add_flag("--no-shrink", a->no_shrink, "Keep failing cases as drawn");
  c->add_option("--shrink-evals", a->shrink_evals, "Candidate runs spent shrinking one failure")->capture_default_str();
  c->add_option("--isolate", a->isolate, "auto | on | off: run the candidate in a forked child (auto: on for "
                                         "candidates, off for reference identities)")
      ->capture_default_str();
  c->add_option("--timeout", a->timeout, "Seconds per isolated candidate run before it counts as a hang")
      ->capture_default_str();
  c->add_option("--generators", a->generators, "Comma list of generators (default: all enabled)");
  c->add_option("--paths", a->paths, "Comma list of paths to draw: dsa,hisa,misa,misa_dagger");
  c->add_option("--precisions", a->precisions, "Comma list of precisions to draw: fp32,bf16,fp8");
  c->add_option("--heads", a->heads, "Comma list of head counts to draw (e.g. 64 for kernels that need it)");
  c->add_option("--dims", a->dims, "Comma list of head dims to draw (e.g. 128)");
  c->add_option("--max-nk", a->max_nk, "Key cap of the generators (long_rows excepted)");
  c->add_flag("--long", a->long_rows, "Enable the long_rows generator (1M+ keys, judged on sampled rows)");
  c->add_flag("--nonfinite", a->nonfinite, "Enable the NaN / Inf value class (sets allow_nonfinite)");
  c->add_flag("--list", a->list, "List targets, generators and value classes");
  c->add_flag("--json", a->json, "Print the summary as JSON");
  return c;
}

int run_fuzz(const FuzzArgs& a) {
  if (a.list) {
    std::printf("targets:\n");
    for (const std::string& n : compare::Registry::global().names()) std::printf("  %s\n", n.c_str());
    for (const std::string& n : fuzz::identity_target_names()) std::printf("  %s\n", n.c_str());
    std::printf("generators:\n");
    for (const std::string& n : fuzz::generator_names())
      std::printf("  %-18s %s\n", n.c_str(), fuzz::generator_reaches(n).c_str());
    std::printf("value classes:\n");
    for (const std::string& n : fuzz::value_class_names()) std::printf("  %s\n", n.c_str());
    return kExitOk;
  }
  fuzz::Target t;
  fuzz::CampaignOptions o;
  Status st = build(a, &t, &o);
  if (!st.ok()) {
    std::fprintf(stderr, "indexlab: %s\n", st.message().c_str());
    return kExitError;
  }
  if (a.workers < 1) {
    std::fprintf(stderr, "indexlab fuzz: --workers must be >= 1\n");
    return kExitError;
  }
  if (a.workers == 1) return run_one(a, t, o);
  // Worker w of shard i/n runs sub-shard i * W + w of n * W.
  std::vector<pid_t> pids;
  std::fflush(nullptr);
  for (int w = 0; w < a.workers; ++w) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("fork");
      return kExitError;
    }
    if (pid == 0) {
      if (t.candidate.needs_gpu) ::setenv("CUDA_VISIBLE_DEVICES", std::to_string(w).c_str(), 1);
      fuzz::CampaignOptions wo = o;
      wo.shard = o.shard * a.workers + w;
      wo.shards = o.shards * a.workers;
      std::fflush(nullptr);
      const int code = run_one(a, t, wo);
      std::fflush(nullptr);
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  int rc = kExitOk;
  for (pid_t pid : pids) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : kExitError;
    if (code == kExitError) rc = kExitError;
    else if (code == kExitFailed && rc == kExitOk) rc = kExitFailed;
  }
  // Totals over the workers, from their summaries.
  if (!o.out_dir.empty() && !a.json) {
    int64_t cases = 0, passed = 0, known = 0, fresh = 0, skipped = 0;
    double seconds = 0;
    for (int w = 0; w < a.workers; ++w) {
      const int shard = o.shard * a.workers + w, shards = o.shards * a.workers;
      std::ifstream f(std::filesystem::path(o.out_dir) /
                      ("summary-" + t.name + "-shard" + std::to_string(shard) + "of" + std::to_string(shards) + ".json"));
      nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
      if (j.is_discarded()) continue;
      cases += j.value("cases", int64_t{0});
      passed += j.value("passed", int64_t{0});
      known += j.value("known_failures", int64_t{0});
      fresh += j.value("new_failures", int64_t{0});
      skipped += j.value("skipped", int64_t{0});
      seconds = std::max(seconds, j.value("seconds", 0.0));
    }
    std::printf("fuzz %s: %d workers: %lld cases in %.1f s (%.0f cases/s): %lld passed, %lld skipped, %lld known "
                "failures, %lld new failures\n",
                t.name.c_str(), a.workers, static_cast<long long>(cases), seconds, seconds > 0 ? cases / seconds : 0.0,
                static_cast<long long>(passed), static_cast<long long>(skipped), static_cast<long long>(known),
                static_cast<long long>(fresh));
  }
  return rc;
}

}  // namespace indexlab::cli
