/// `indexlab quality`: recall@K of HISA, MISA and MISA-dagger against DSA over context lengths
/// and active-head counts, on the built-in structured workloads (CPU reference, sampled rows).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "compare/judge.h"
#include "compare/workloads.h"

namespace indexlab::cli {
namespace {

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoll(item));
  return v;
}

}  // namespace

CLI::App* add_quality(CLI::App& app, QualityArgs* a) {
  CLI::App* c = app.add_subcommand("quality", "Recall@K of HISA, MISA (h active heads) and MISA-dagger against DSA "
                                              "over context lengths, on structured workloads (CPU reference)");
  c->add_option("--workloads", a->workloads, "Comma-separated workload kinds")->capture_default_str();
  c->add_option("--contexts", a->contexts, "Comma-separated context lengths")->capture_default_str();
  c->add_option("--active-heads", a->active_heads, "Comma-separated MISA h values")->capture_default_str();
  c->add_option("--rows", a->rows, "Query rows: the last positions of each context")->capture_default_str();
  c->add_option("--heads", a->h, "Indexer heads H")->capture_default_str();
  c->add_option("--dim", a->d, "Head dim D")->capture_default_str();
  c->add_option("--topk", a->k, "K")->capture_default_str();
  c->add_option("--precision", a->precision, "fp32 | bf16 | fp8")->capture_default_str();
  c->add_option("--seed", a->seed, "Workload seed")->capture_default_str();
  c->add_option("--csv", a->csv, "Also write the table as CSV here");
  return c;
}

int run_quality(const QualityArgs& a) {
  ref::Precision prec;
  Status st = ref::parse_precision(a.precision, &prec);
  if (!st.ok()) {
    std::fprintf(stderr, "indexlab: error: %s\n", st.message().c_str());
    return kExitError;
  }
  std::vector<std::string> kinds;
  {
    std::stringstream ss(a.workloads);
    std::string item;
    while (std::getline(ss, item, ',')) kinds.push_back(item);
  }
  std::vector<int64_t> contexts, hs;
  try {
    contexts = parse_list(a.contexts);
    hs = parse_list(a.active_heads);
  } catch (const std::exception&) {
    std::fprintf(stderr, "indexlab: error: --contexts and --active-heads take comma-separated integers\n");
    return kExitError;
  }
  std::ostringstream csv;
  csv << "workload,context,path,active_heads,mean_recall,min_recall\n";
  std::printf("%-18s %8s %-12s %5s %12s %12s\n", "workload", "context", "path", "h", "mean_recall", "min_recall");
  for (const std::string& kind : kinds) {
    for (int64_t ctx : contexts) {
      compare::WorkloadSpec spec{kind, a.rows, ctx, a.h, a.d, a.k, a.seed};
      ref::RawInputs raw;
      compare::Problem target;
      st = compare::make_workload(spec, &raw);
      if (st.ok()) st = ref::quantize_inputs(raw, prec, {}, &target.flat);
      ref::Result dsa;
      ref::Options ro;
      ro.want_logits = true;
      if (st.ok()) st = compare::run_reference(target, ro, &dsa);
      if (!st.ok()) {
        std::fprintf(stderr, "indexlab: error: %s\n", st.message().c_str());
        return kExitError;
      }
      compare::JudgeOptions jo;
      jo.reference = &dsa;
      auto emit = [&](const char* path, int64_t h, const ref::Options& o, ref::Path p) -> Status {
        compare::Problem cp = target;
        cp.path = p;
        ref::Result r;
        INDEXLAB_RETURN_IF_ERROR(compare::run_reference(cp, o, &r));
        compare::Report rep;
        INDEXLAB_RETURN_IF_ERROR(
            compare::judge(target, compare::to_candidate_output(std::move(r), ref::IndexBase::kRelative), jo, &rep));
        std::printf("%-18s %8lld %-12s %5lld %12.4f %12.4f\n", kind.c_str(), (long long)ctx, path, (long long)h,
                    rep.selection.mean_recall, rep.selection.min_recall);
        std::fflush(stdout);
        csv << kind << "," << ctx << "," << path << "," << h << "," << rep.selection.mean_recall << ","
            << rep.selection.min_recall << "\n";
        return Status::Ok();
      };
      ref::Options o;
      st = emit("hisa", 0, o, ref::Path::kHisa);
      for (int64_t h : hs) {
        if (!st.ok()) break;
        if (h < 1 || h > a.h) continue;
        o.misa_heads = static_cast<int>(h);
        st = emit("misa", h, o, ref::Path::kMisa);
        if (st.ok()) st = emit("misa_dagger", h, o, ref::Path::kMisaDagger);
      }
      if (!st.ok()) {
        std::fprintf(stderr, "indexlab: error: %s\n", st.message().c_str());
        return kExitError;
      }
    }
  }
  if (!a.csv.empty()) {
    std::ofstream f(a.csv);
    f << csv.str();
    if (!f) {
      std::fprintf(stderr, "indexlab: error: cannot write %s\n", a.csv.c_str());
      return kExitError;
    }
  }
  return kExitOk;
}

}  // namespace indexlab::cli
