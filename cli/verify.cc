/// `indexlab verify`, `replay`, `export` and `list`.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "compare/problem_io.h"
#include "compare/registry.h"
#include "compare/workloads.h"
#include "cuda/api.h"

namespace indexlab::cli {
namespace {

using compare::CandidateOutput;
using compare::Problem;
using compare::Report;

int fail(const Status& st) {
  std::fprintf(stderr, "indexlab: error: %s\n", st.message().c_str());
  return kExitError;
}

std::string f4(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4f", x);
  return b;
}

/// Builds a problem from workload arguments (one workload kind).
Status build_problem(const WorkloadArgs& a, const std::string& kind, ref::Path path, ref::Precision prec,
                     Problem* out, ref::RawInputs* raw_out = nullptr) {
  compare::WorkloadSpec spec{kind, a.nq, a.nk, a.h, a.d, a.k, a.seed};
  ref::RawInputs raw;
  INDEXLAB_RETURN_IF_ERROR(compare::make_workload(spec, &raw));
  Problem p;
  p.name = kind;
  p.path = path;
  INDEXLAB_RETURN_IF_ERROR(ref::quantize_inputs(raw, prec, {}, &p.flat));
  if (a.paged) {
    p.paged = true;
    INDEXLAB_RETURN_IF_ERROR(compare::to_paged(p.flat, a.next_n, a.seed, &p.paged_in));
    p.flat = {};
    p.name += " (paged)";
  }
  if (raw_out) *raw_out = std::move(raw);
  *out = std::move(p);
  return Status::Ok();
}

bool report_passed(const Report& r, bool require_exact) {
  return r.selection.passed(require_exact) && r.logits.inf_mismatches == 0 && r.deterministic;
}

void print_report(const Report& r, bool require_exact) {
  const auto& s = r.selection;
  std::printf("candidate %s on %s: %lld of %lld rows judged\n", r.candidate.c_str(), r.problem.c_str(),
              static_cast<long long>(s.rows_judged), static_cast<long long>(s.rows_total));
  std::printf("  selection: exact %lld, tie-tolerant %lld, bound-aware %lld, invalid %lld; recall min %s mean %s\n",
              (long long)s.exact, (long long)s.tie_tolerant, (long long)s.bound_aware, (long long)s.invalid,
              f4(s.min_recall).c_str(), f4(s.mean_recall).c_str());
  if (r.logits.present) {
    const auto& l = r.logits;
    std::printf("  logits: -inf pattern %s; max |err| %.3g, max rel %.3g, max ulp %llu, bit-exact %.2f%%, "
                "deepgemm diff %.3g\n",
                l.inf_mismatches ? ("BROKEN (" + std::to_string(l.inf_mismatches) + " cells; first: " +
                                    l.first_inf_mismatch + ")").c_str() : "ok",
                l.max_abs, l.max_rel, (unsigned long long)l.max_ulp, 100.0 * l.frac_bit_exact, l.deepgemm_diff);
    if (l.max_ulp > 0) std::printf("    largest drift at %s\n", l.worst.c_str());
    if (l.decision_cells > 0)
      std::printf("    %lld cells differ in -inf only where a key's candidate membership (HISA block kept, "
                  "dagger top K1) rests on a score within the drift bound\n", (long long)l.decision_cells);
  }
  if (r.reruns > 0) {
    std::printf("  determinism: %d reruns %s\n", r.reruns,
                r.deterministic ? "bitwise identical" : ("DIFFER: " + r.determinism_detail).c_str());
  }
  for (const auto& v : s.worst) {
    std::printf("  row %lld: recall %s%s%s: %s\n", (long long)v.row, f4(v.recall).c_str(),
                v.bound_aware ? ", within the bound" : "", v.ref_ambiguous ? ", reference rounding ambiguous" : "",
                v.diagnosis.c_str());
  }
  std::printf("  => %s\n", report_passed(r, require_exact) ? "PASS" : "FAIL");
}

/// The default job: every candidate on every built-in workload, then the quality table.
int verify_default(const VerifyArgs& a) {
  auto& reg = compare::Registry::global();
  nlohmann::json out = nlohmann::json::object();
  out["candidates"] = nlohmann::json::array();
  std::vector<std::string> kinds = compare::workload_kinds();
  if (!a.wl.workload.empty()) kinds = {a.wl.workload};
  bool all_ok = true;
  if (!a.json) {
    std::printf("indexlab verify: built-in workloads, nq=%lld nk=%lld h=%d d=%d k=%d seed=%llu\n\n",
                (long long)a.wl.nq, (long long)a.wl.nk, a.wl.h, a.wl.d, a.wl.k, (unsigned long long)a.wl.seed);
    std::printf("== candidates against the reference (same path, same quantized inputs) ==\n");
    std::printf("%-20s %-34s %-6s %8s %8s %8s %8s %9s %7s %s\n", "candidate", "workload", "prec", "rows", "exact",
                "bound", "recall", "max_ulp", "determ", "verdict");
  }
  for (const compare::Candidate* c : reg.all()) {
    std::string why;
    if (c->needs_gpu && !cuda::device_available(&why)) {
      if (!a.json) std::printf("%-20s skipped: %s\n", c->name.c_str(), why.c_str());
      out["candidates"].push_back({{"candidate", c->name}, {"skipped", why}});
      continue;
    }
    for (const std::string& kind : kinds) {
      for (bool paged : {false, true}) {
        for (ref::Precision prec : {ref::Precision::kFp8, ref::Precision::kBf16, ref::Precision::kFp32}) {
          // Built-in names end in the path they compute (ref.hisa, cuda.dsa, emu.sm90_misa_dagger);
          // any other name is offered DSA problems, and its `supports` decides.
          ref::Path path = ref::Path::kDsa;
          std::string tail = c->name.substr(c->name.find('.') + 1);
          if (tail.rfind("sm90_", 0) == 0) tail = tail.substr(5);
          if (!ref::parse_path(tail, &path).ok()) path = ref::Path::kDsa;
          WorkloadArgs wa = a.wl;
          wa.paged = paged;
          Problem p;
          Status st = build_problem(wa, kind, path, prec, &p);
          if (!st.ok()) return fail(st);
          if (!c->supports(p, &why)) continue;
          // CPU candidates are slow or self-checks (the reference judging itself exercises the
          // machinery; the emulation shows the kernel's arithmetic): two problems each suffice.
          const bool cpu_self = c->name.rfind("ref.", 0) == 0 || c->name.rfind("emu.", 0) == 0;
          const char* flat_kind = c->name.rfind("ref.", 0) == 0 ? "short_rows" : "gaussian";
          if (cpu_self && !(prec == ref::Precision::kFp8 &&
                            ((kind == "needles" && paged) || (kind == flat_kind && !paged))))
            continue;
          compare::JudgeOptions jo;
          jo.sample_rows = a.rows;
          jo.seed = a.wl.seed;
          Report rep;
          st = compare::verify_candidate(*c, p, jo, cpu_self ? std::min(a.reruns, 2) : a.reruns, &rep);
          if (!st.ok()) return fail(st);
          const bool ok = report_passed(rep, a.require_exact);
          all_ok = all_ok && ok;
          out["candidates"].push_back(rep.to_json());
          if (!a.json) {
            std::printf("%-20s %-34s %-6s %8lld %8lld %8lld %8s %9s %7s %s\n", c->name.c_str(), p.name.c_str(),
                        ref::precision_name(prec), (long long)rep.selection.rows_judged, (long long)rep.selection.exact,
                        (long long)rep.selection.bound_aware, f4(rep.selection.mean_recall).c_str(),
                        rep.logits.present ? std::to_string(rep.logits.max_ulp).c_str() : "-",
                        rep.deterministic ? "yes" : "NO", ok ? "PASS" : "FAIL");
            std::fflush(stdout);
            if (!ok)
              for (const auto& v : rep.selection.worst)
                std::printf("    row %lld: %s\n", (long long)v.row, v.diagnosis.c_str());
          }
        }
      }
    }
  }
  // Quality: each path and precision against DSA on the unquantized (fp32) inputs.
  if (!a.json) {
    std::printf("\n== selection quality: mean recall@K against fp32 DSA (min in brackets) ==\n");
    std::printf("%-18s %-12s %-18s %-18s %-18s\n", "workload", "path", "fp32", "bf16", "fp8");
  }
  out["quality"] = nlohmann::json::array();
  for (const std::string& kind : kinds) {
    Problem target;
    ref::RawInputs raw;
    WorkloadArgs wa = a.wl;
    wa.paged = false;
    Status st = build_problem(wa, kind, ref::Path::kDsa, ref::Precision::kFp32, &target, &raw);
    if (!st.ok()) return fail(st);
    // One fp32 DSA reference per workload serves every candidate below.
    compare::JudgeOptions jo;
    jo.sample_rows = a.rows;
    jo.seed = a.wl.seed;
    ref::Result target_ref;
    {
      compare::Problem sub;
      sub.flat = compare::restrict_rows(target.flat, compare::rows_to_judge(target.rows(), jo));
      ref::Options ro;
      ro.want_logits = true;
      st = compare::run_reference(sub, ro, &target_ref);
      if (!st.ok()) return fail(st);
    }
    jo.reference = &target_ref;
    for (ref::Path path : {ref::Path::kDsa, ref::Path::kHisa, ref::Path::kMisa, ref::Path::kMisaDagger}) {
      std::string line;
      char head[64];
      std::snprintf(head, sizeof head, "%-18s %-12s ", kind.c_str(), ref::path_name(path));
      line = head;
      for (ref::Precision prec : {ref::Precision::kFp32, ref::Precision::kBf16, ref::Precision::kFp8}) {
        Problem cand_p;
        cand_p.path = path;
        st = ref::quantize_inputs(raw, prec, {}, &cand_p.flat);
        if (!st.ok()) return fail(st);
        ref::Result res;
        st = compare::run_reference(cand_p, cand_p.options, &res);
        if (!st.ok()) return fail(st);
        CandidateOutput co = compare::to_candidate_output(std::move(res), ref::IndexBase::kRelative);
        Report rep;
        st = compare::judge(target, co, jo, &rep);
        if (!st.ok()) return fail(st);
        out["quality"].push_back({{"workload", kind}, {"path", ref::path_name(path)},
                                  {"precision", ref::precision_name(prec)},
                                  {"mean_recall", rep.selection.mean_recall},
                                  {"min_recall", rep.selection.min_recall},
                                  {"exact_rows", rep.selection.exact}});
        char cell[64];
        std::snprintf(cell, sizeof cell, "%.4f (%.3f)     ", rep.selection.mean_recall, rep.selection.min_recall);
        line += cell;
      }
      if (!a.json) {
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      }
    }
  }
  if (a.json) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::printf("\n%s\n", all_ok ? "all candidates PASS" : "some candidates FAIL");
  }
  return all_ok ? kExitOk : kExitFailed;
}

}  // namespace

void add_workload_options(CLI::App* app, WorkloadArgs* a) {
  app->add_option("--workload", a->workload, "Built-in workload (see `indexlab list`)");
  app->add_option("--path", a->path, "dsa | hisa | misa | misa_dagger")->capture_default_str();
  app->add_option("--precision", a->precision, "fp32 | bf16 | fp8")->capture_default_str();
  app->add_option("--nq", a->nq, "Query rows (the last nq positions of a causal prefill)")->capture_default_str();
  app->add_option("--nk", a->nk, "Keys")->capture_default_str();
  app->add_option("--heads", a->h, "Indexer heads H")->capture_default_str();
  app->add_option("--dim", a->d, "Head dim D")->capture_default_str();
  app->add_option("--topk", a->k, "Tokens selected per query K")->capture_default_str();
  app->add_option("--seed", a->seed, "Workload seed")->capture_default_str();
  app->add_flag("--paged", a->paged, "Lay the keys out as a paged decode cache (64-token pages, shuffled)");
  app->add_option("--next-n", a->next_n, "Queries per sequence in paged mode")->capture_default_str();
}

CLI::App* add_verify(CLI::App& app, VerifyArgs* a) {
  CLI::App* c = app.add_subcommand("verify", "Judge candidates against the reference (default: every candidate "
                                             "on every built-in workload, then a quality table)");
  add_workload_options(c, &a->wl);
  c->add_option("--problem", a->problem, "problem.json of a file-based verification");
  c->add_option("--inputs", a->inputs, "Inputs file (.npz, .safetensors) for --problem");
  c->add_option("--candidate", a->candidate_file, "Candidate output file: indices [nq,k] (+ optional logits)");
  c->add_option("--candidate-name", a->candidate_name, "A registered candidate to run (see `indexlab list`)");
  c->add_option("--rows", a->rows, "Judge a seeded random sample of this many rows (0: all)");
  c->add_option("--tolerance", a->tolerance, "Bound-aware drift model: exact | fp32 | tensor_core")->capture_default_str();
  c->add_option("--reruns", a->reruns, "Runs of a registered candidate compared bitwise")->capture_default_str();
  c->add_flag("--json", a->json, "Print the report as JSON");
  c->add_flag("--require-exact", a->require_exact, "Fail unless every judged row is exact");
  c->add_option("--repro-dir", a->repro_dir, "On failure, write a repro directory here (replay it later)");
  return c;
}

int run_verify(const VerifyArgs& a) {
  auto& reg = compare::Registry::global();
  Problem p;
  CandidateOutput cand;
  std::string cand_name;
  compare::JudgeOptions jo;
  jo.sample_rows = a.rows;
  jo.seed = a.wl.seed;
  Status st = compare::tolerance_by_name(a.tolerance, 1, 1, &jo.tolerance);
  if (!st.ok()) return fail(st);
  Report rep;
  if (!a.problem.empty() || !a.candidate_file.empty()) {
    if (a.problem.empty() || a.inputs.empty() || (a.candidate_file.empty() && a.candidate_name.empty())) {
      return fail(error("a file-based verification needs --problem, --inputs and --candidate (or --candidate-name)"));
    }
    st = compare::load_problem(a.problem, a.inputs, &p);
    if (!st.ok()) return fail(st);
    st = compare::tolerance_by_name(a.tolerance, p.h(), p.d(), &jo.tolerance);
    if (!st.ok()) return fail(st);
    if (!a.candidate_file.empty()) {
      compare::TensorMap t;
      st = compare::read_tensors(a.candidate_file, &t);
      if (st.ok()) st = compare::output_from_tensors(t, a.candidate_file, p, &cand);
      if (!st.ok()) return fail(st);
      st = compare::judge(p, cand, jo, &rep);
      rep.candidate = a.candidate_file;
    } else {
      const compare::Candidate* c = reg.find(a.candidate_name);
      if (!c) return fail(error("no candidate named '", a.candidate_name, "' (see `indexlab list`)"));
      st = compare::verify_candidate(*c, p, jo, a.reruns, &rep, &cand);
    }
  } else if (!a.candidate_name.empty()) {
    const compare::Candidate* c = reg.find(a.candidate_name);
    if (!c) return fail(error("no candidate named '", a.candidate_name, "' (see `indexlab list`)"));
    ref::Path path;
    ref::Precision prec;
    st = ref::parse_path(a.wl.path, &path);
    if (st.ok()) st = ref::parse_precision(a.wl.precision, &prec);
    if (st.ok()) st = build_problem(a.wl, a.wl.workload.empty() ? "gaussian" : a.wl.workload, path, prec, &p);
    if (!st.ok()) return fail(st);
    st = compare::tolerance_by_name(a.tolerance, p.h(), p.d(), &jo.tolerance);
    if (st.ok()) st = compare::verify_candidate(*c, p, jo, a.reruns, &rep, &cand);
  } else {
    return verify_default(a);
  }
  if (!st.ok()) return fail(st);
  const bool ok = report_passed(rep, a.require_exact);
  if (a.json) {
    nlohmann::json j = rep.to_json();
    j["passed"] = ok;
    std::cout << j.dump(2) << "\n";
  } else {
    print_report(rep, a.require_exact);
  }
  if (!ok && !a.repro_dir.empty()) {
    st = compare::write_repro(a.repro_dir, p, cand, &rep);
    if (!st.ok()) return fail(st);
    std::fprintf(stderr, "repro written to %s (indexlab replay %s)\n", a.repro_dir.c_str(), a.repro_dir.c_str());
  }
  return ok ? kExitOk : kExitFailed;
}

CLI::App* add_replay(CLI::App& app, ReplayArgs* a) {
  CLI::App* c = app.add_subcommand("replay", "Judge a repro directory again (problem.json, inputs.npz, candidate.npz)");
  c->add_option("dir", a->dir, "Repro directory")->required();
  c->add_option("--tolerance", a->tolerance, "exact | fp32 | tensor_core")->capture_default_str();
  c->add_flag("--json", a->json, "Print the report as JSON");
  return c;
}

int run_replay(const ReplayArgs& a) {
  Problem p;
  CandidateOutput c;
  Status st = compare::read_repro(a.dir, &p, &c);
  if (!st.ok()) return fail(st);
  compare::JudgeOptions jo;
  st = compare::tolerance_by_name(a.tolerance, p.h(), p.d(), &jo.tolerance);
  Report rep;
  if (st.ok()) st = compare::judge(p, c, jo, &rep);
  if (!st.ok()) return fail(st);
  rep.candidate = a.dir + "/candidate.npz";
  const bool ok = report_passed(rep, false);
  if (a.json) {
    nlohmann::json j = rep.to_json();
    j["passed"] = ok;
    std::cout << j.dump(2) << "\n";
  } else {
    print_report(rep, false);
  }
  return ok ? kExitOk : kExitFailed;
}

CLI::App* add_export(CLI::App& app, ExportArgs* a) {
  CLI::App* c = app.add_subcommand("export", "Write a built-in workload as problem.json + inputs.npz, for a "
                                             "kernel in another framework to read");
  add_workload_options(c, &a->wl);
  c->add_option("--out", a->out, "Output directory")->required();
  return c;
}

int run_export(const ExportArgs& a) {
  ref::Path path;
  ref::Precision prec;
  Status st = ref::parse_path(a.wl.path, &path);
  if (st.ok()) st = ref::parse_precision(a.wl.precision, &prec);
  Problem p;
  if (st.ok()) st = build_problem(a.wl, a.wl.workload.empty() ? "gaussian" : a.wl.workload, path, prec, &p);
  if (st.ok()) st = compare::save_problem(p, a.out);
  if (!st.ok()) return fail(st);
  std::printf("wrote %s/problem.json and %s/inputs.npz (%s, %s, %lld rows)\n", a.out.c_str(), a.out.c_str(),
              ref::path_name(path), ref::precision_name(prec), (long long)p.rows());
  return kExitOk;
}

int run_list() {
  std::printf("candidates:\n");
  for (const compare::Candidate* c : compare::Registry::global().all()) {
    std::string why;
    const bool usable = !c->needs_gpu || cuda::device_available(&why);
    std::printf("  %-20s %s%s\n", c->name.c_str(), c->description.c_str(),
                usable ? "" : (" [unavailable here: " + why + "]").c_str());
  }
  std::printf("workloads:\n");
  for (const std::string& k : compare::workload_kinds())
    std::printf("  %-18s %s\n", k.c_str(), compare::workload_description(k).c_str());
  return kExitOk;
}

}  // namespace indexlab::cli
