/// One-case evaluation with crash isolation, the ledger and the campaign loop (see campaign.h).
#include "fuzz/campaign.h"

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "compare/problem_io.h"

namespace indexlab::fuzz {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// What the candidate produced: its status, first output and the determinism check.
struct RunOut {
  bool ok = true;
  std::string message;
  compare::CandidateOutput out;
  bool deterministic = true;
  std::string determinism_detail;
};

RunOut run_candidate(const Target& t, const compare::Problem& p) {
  RunOut r;
  Status st = t.candidate.run(p, &r.out);
  if (!st.ok()) {
    r.ok = false;
    r.message = st.message();
    return r;
  }
  for (int k = 1; k < t.reruns && r.deterministic; ++k) {
    compare::CandidateOutput again;
    st = t.candidate.run(p, &again);
    if (!st.ok()) {
      r.ok = false;
      r.message = "rerun " + std::to_string(k) + ": " + st.message();
      return r;
    }
    std::string detail;
    if (!compare::bitwise_equal(r.out, again, &detail)) {
      r.deterministic = false;
      r.determinism_detail = "rerun " + std::to_string(k) + ": " + detail;
    }
  }
  return r;
}

// ---- A tiny binary encoding of RunOut for the pipe ----------------------------------------------

template <typename T>
void put(std::string* s, const T& v) {
  s->append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_str(std::string* s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s->append(v);
}
template <typename T>
void put_vec(std::string* s, const std::vector<T>& v) {
  put<uint64_t>(s, v.size());
  s->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

struct Reader {
  const std::string& s;
  size_t pos = 0;
  bool bad = false;
  template <typename T>
  T get() {
    T v{};
    if (pos + sizeof(T) > s.size()) {
      bad = true;
      return v;
    }
    std::memcpy(&v, s.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string get_str() {
    const uint64_t n = get<uint64_t>();
    if (bad || n > s.size() - pos) {
      bad = true;
      return {};
    }
    std::string v = s.substr(pos, n);
    pos += n;
    return v;
  }
  template <typename T>
  std::vector<T> get_vec() {
    const uint64_t n = get<uint64_t>();
    if (bad || n > (s.size() - pos) / sizeof(T)) {
      bad = true;
      return {};
    }
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), s.data() + pos, n * sizeof(T));
    pos += n * sizeof(T);
    return v;
  }
};

std::string encode(const RunOut& r) {
  std::string s;
  put<uint32_t>(&s, 0x1D3A1AB5u);
  put<uint8_t>(&s, r.ok);
  put_str(&s, r.message);
  put<int64_t>(&s, r.out.nq);
  put<int32_t>(&s, r.out.k);
  put<uint8_t>(&s, r.out.index_base == ref::IndexBase::kAbsolute);
  put_vec(&s, r.out.index);
  put<int64_t>(&s, r.out.logits_cols);
  put_vec(&s, r.out.logits);
  put<uint8_t>(&s, r.deterministic);
  put_str(&s, r.determinism_detail);
  put<uint32_t>(&s, 0xE0D0E0D0u);
  return s;
}

bool decode(const std::string& s, RunOut* r) {
  Reader rd{s};
  if (rd.get<uint32_t>() != 0x1D3A1AB5u) return false;
  r->ok = rd.get<uint8_t>() != 0;
  r->message = rd.get_str();
  r->out.nq = rd.get<int64_t>();
  r->out.k = rd.get<int32_t>();
  r->out.index_base = rd.get<uint8_t>() ? ref::IndexBase::kAbsolute : ref::IndexBase::kRelative;
  r->out.index = rd.get_vec<int32_t>();
  r->out.logits_cols = rd.get<int64_t>();
  r->out.logits = rd.get_vec<float>();
  r->deterministic = rd.get<uint8_t>() != 0;
  r->determinism_detail = rd.get_str();
  return rd.get<uint32_t>() == 0xE0D0E0D0u && !rd.bad;
}

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

/// Runs the candidate in a forked child. On return `kind` is kNone (ran; *r filled), kCrash or
/// kHang (detail says which signal / how long), or kError when the child could not be run.
FailureKind run_isolated(const Target& t, const compare::Problem& p, double timeout_s, RunOut* r,
                         std::string* detail) {
  int fds[2];
  if (::pipe(fds) != 0) {
    *detail = std::string("pipe() failed: ") + std::strerror(errno);
    return FailureKind::kError;
  }
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    *detail = std::string("fork() failed: ") + std::strerror(errno);
    return FailureKind::kError;
  }
  if (pid == 0) {
    ::close(fds[0]);
    struct rlimit no_core {0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    // The parent's OpenMP pool does not exist here: keep the child single-threaded.
    compare::Problem pc = p;
    pc.options.threads = 1;
    const RunOut out = run_candidate(t, pc);
    const bool ok = write_all(fds[1], encode(out));
    ::close(fds[1]);
    ::_exit(ok ? 0 : 3);
  }
  ::close(fds[1]);
  const auto t0 = Clock::now();
  std::string buf;
  char chunk[1 << 16];
  bool timed_out = false;
  for (;;) {
    const double left = timeout_s - seconds_since(t0);
    if (left <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd pf {fds[0], POLLIN, 0};
    const int pr = ::poll(&pf, 1, static_cast<int>(std::min(left * 1000.0, 1000.0)) + 1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    const ssize_t n = ::read(fds[0], chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  if (!timed_out) {
    // The pipe closed: the child exits (or died) now; give it the rest of the timeout.
    for (;;) {
      const pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) break;
      if (w < 0 && errno != EINTR) break;
      if (seconds_since(t0) > timeout_s) {
        timed_out = true;
        break;
      }
      ::usleep(200);
    }
  }
  if (timed_out) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::ostringstream os;
    os << "the candidate ran past the " << timeout_s << " s timeout and was killed";
    *detail = os.str();
    return FailureKind::kHang;
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    *detail = "the candidate died on signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")";
    return FailureKind::kCrash;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !decode(buf, r)) {
    *detail = "the candidate's child exited with status " +
              std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + " without a complete output";
    return FailureKind::kCrash;
  }
  return FailureKind::kNone;
}

std::string first_bad_row(const compare::Report& rep) {
  for (const compare::RowVerdict& v : rep.selection.worst) {
    if (!v.valid || !v.bound_aware || !v.exact)
      return "row " + std::to_string(v.row) + ": " + v.diagnosis;
  }
  return {};
}

bool glob_match(const std::string& pat, const std::string& s) {
  if (pat.empty() || pat == "*") return true;
  if (pat.back() == '*') return s.compare(0, pat.size() - 1, pat, 0, pat.size() - 1) == 0;
  return pat == s;
}

}  // namespace

const char* failure_kind_name(FailureKind k) {
  switch (k) {
    case FailureKind::kNone: return "none";
    case FailureKind::kError: return "error";
    case FailureKind::kInvalid: return "invalid";
    case FailureKind::kSelection: return "selection";
    case FailureKind::kLogitsInf: return "logits_inf";
    case FailureKind::kLogitsValue: return "logits_value";
    case FailureKind::kNondeterministic: return "nondeterministic";
    case FailureKind::kCrash: return "crash";
    case FailureKind::kHang: return "hang";
  }
  return "?";
}

Status parse_failure_kind(const std::string& s, FailureKind* out) {
  for (FailureKind k : {FailureKind::kNone, FailureKind::kError, FailureKind::kInvalid, FailureKind::kSelection,
                        FailureKind::kLogitsInf, FailureKind::kLogitsValue, FailureKind::kNondeterministic,
                        FailureKind::kCrash, FailureKind::kHang}) {
    if (s == failure_kind_name(k)) {
      *out = k;
      return Status::Ok();
    }
  }
  return error("failure kind '", s, "' is not one of error, invalid, selection, logits_inf, logits_value, ",
               "nondeterministic, crash, hang");
}

Verdict evaluate(const Target& t, const compare::Problem& p, int64_t sample_rows, const EvalOptions& eo) {
  Verdict v;
  std::string why;
  if (t.candidate.supports && !t.candidate.supports(p, &why)) {
    v.unsupported = true;
    v.detail = why;
    return v;
  }
  RunOut r;
  if (eo.isolate) {
    std::string detail;
    const FailureKind k = run_isolated(t, p, eo.timeout_s, &r, &detail);
    if (k != FailureKind::kNone) {
      v.kind = k;
      v.detail = detail;
      return v;
    }
  } else {
    r = run_candidate(t, p);
  }
  if (!r.ok) {
    v.kind = FailureKind::kError;
    v.detail = "the candidate returned an error: " + r.message;
    return v;
  }
  compare::JudgeOptions jo;
  jo.sample_rows = sample_rows;
  const std::string tol = t.tolerance.empty() ? t.candidate.tolerance : t.tolerance;
  Status st = compare::tolerance_by_name(tol.empty() ? "exact" : tol, p.h(), p.d(), &jo.tolerance);
  if (st.ok()) st = compare::judge(p, r.out, jo, &v.report);
  v.output = std::move(r.out);
  if (!st.ok()) {
    v.kind = FailureKind::kError;
    v.detail = "judging failed: " + st.message();
    return v;
  }
  v.have_report = true;
  v.report.candidate = t.name;
  const compare::SelectionSummary& ss = v.report.selection;
  const compare::LogitsSummary& ls = v.report.logits;
  if (ss.invalid > 0) {
    v.kind = FailureKind::kInvalid;
    v.detail = std::to_string(ss.invalid) + " invalid rows; " + first_bad_row(v.report);
  } else if (!ss.passed(t.require_exact)) {
    v.kind = FailureKind::kSelection;
    v.detail = std::to_string(ss.rows_judged - (t.require_exact ? ss.exact : ss.bound_aware)) + " rows rejected (" +
               (t.require_exact ? "exact" : "bound-aware") + "); " + first_bad_row(v.report);
  } else if (t.check_logits && ls.present && ls.inf_mismatches > 0) {
    v.kind = FailureKind::kLogitsInf;
    v.detail = std::to_string(ls.inf_mismatches) + " -inf pattern mismatches; first: " + ls.first_inf_mismatch;
  } else if (ls.present && t.max_logit_ulp != UINT64_MAX && ls.max_ulp > t.max_logit_ulp) {
    v.kind = FailureKind::kLogitsValue;
    v.detail = "logits " + std::to_string(ls.max_ulp) + " ulps from the reference (allowed " +
               std::to_string(t.max_logit_ulp) + "); " + ls.worst;
  } else if (!r.deterministic) {
    v.kind = FailureKind::kNondeterministic;
    v.detail = r.determinism_detail;
  }
  if (!r.deterministic) {
    v.report.reruns = t.reruns - 1;
    v.report.deterministic = false;
    v.report.determinism_detail = r.determinism_detail;
  }
  return v;
}

// ---- Ledger ------------------------------------------------------------------------------------

const KnownFailure* Ledger::match(const std::string& target, FailureKind kind, const std::string& generator,
                                  const std::string& detail, const std::string& values) const {
  for (const KnownFailure& k : known) {
    if (!glob_match(k.target, target)) continue;
    if (!glob_match(k.values, values)) continue;
    if (!glob_match(k.kind, failure_kind_name(kind))) continue;
    if (!glob_match(k.generator, generator)) continue;
    if (!k.detail_contains.empty() && detail.find(k.detail_contains) == std::string::npos) continue;
    return &k;
  }
  return nullptr;
}

Status ledger_from_json(const std::string& text, Ledger* out) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return error("ledger: not valid JSON");
  if (!j.is_object() || !j.contains("known") || !j["known"].is_array())
    return error("ledger: expected an object with an array 'known'");
  Ledger l;
  size_t n = 0;
  for (const auto& e : j["known"]) {
    if (!e.is_object()) return error("ledger: known[", n, "] is not an object");
    KnownFailure k;
    for (auto [field, dst] : {std::pair<const char*, std::string*>{"target", &k.target}, {"kind", &k.kind},
                              {"generator", &k.generator}, {"values", &k.values},
                              {"detail_contains", &k.detail_contains},
                              {"cause", &k.cause}}) {
      if (!e.contains(field)) continue;
      if (!e[field].is_string()) return error("ledger: known[", n, "].", field, " must be a string");
      *dst = e[field].get<std::string>();
    }
    if (k.cause.empty()) return error("ledger: known[", n, "] needs a 'cause'");
    if (!k.kind.empty() && k.kind != "*") {
      FailureKind fk;
      INDEXLAB_RETURN_IF_ERROR(parse_failure_kind(k.kind, &fk).with_context("ledger: known[" + std::to_string(n) + "]: "));
    }
    l.known.push_back(std::move(k));
    ++n;
  }
  *out = std::move(l);
  return Status::Ok();
}

Status load_ledger(const std::string& path, Ledger* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return error(path, ": cannot open the ledger");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ledger_from_json(ss.str(), out).with_context(path + ": ");
}

// ---- Campaigns ---------------------------------------------------------------------------------

Status parse_shard(const std::string& s, int* shard, int* shards) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos) return error("shard '", s, "' is not of the form i/n");
  try {
    size_t a = 0, b = 0;
    const long i = std::stol(s.substr(0, slash), &a);
    const long n = std::stol(s.substr(slash + 1), &b);
    if (a != slash || b != s.size() - slash - 1) throw std::invalid_argument("trailing");
    if (n < 1 || i < 0 || i >= n || n > (1 << 30)) return error("shard '", s, "' needs 0 <= i < n");
    *shard = static_cast<int>(i);
    *shards = static_cast<int>(n);
  } catch (const std::exception&) {
    return error("shard '", s, "' is not of the form i/n");
  }
  return Status::Ok();
}

Status parse_duration(const std::string& s, double* seconds) {
  if (s.empty()) return error("empty duration");
  double mult = 1.0;
  std::string num = s;
  const char u = s.back();
  if (u == 's' || u == 'm' || u == 'h') {
    mult = u == 's' ? 1.0 : (u == 'm' ? 60.0 : 3600.0);
    num = s.substr(0, s.size() - 1);
  }
  try {
    size_t used = 0;
    const double v = std::stod(num, &used);
    if (used != num.size() || !(v >= 0.0) || !std::isfinite(v)) throw std::invalid_argument("bad");
    *seconds = v * mult;
  } catch (const std::exception&) {
    return error("duration '", s, "' is not a number with an optional s, m or h suffix");
  }
  return Status::Ok();
}

nlohmann::json CampaignResult::to_json() const {
  nlohmann::json j;
  j["cases"] = cases;
  j["passed"] = passed;
  j["skipped"] = skipped;
  j["known_failures"] = known_failures;
  j["new_failures"] = new_failures;
  j["seconds"] = seconds;
  j["cases_per_second"] = seconds > 0 ? cases / seconds : 0.0;
  j["stopped_on_failure"] = stopped_on_failure;
  j["by_generator"] = by_generator;
  j["failures"] = nlohmann::json::array();
  for (const FailureRecord& f : failures) {
    j["failures"].push_back({{"case", f.case_index}, {"generator", f.generator}, {"values", f.values},
                             {"kind", failure_kind_name(f.kind)}, {"detail", f.detail}, {"known", f.known},
                             {"cause", f.cause}, {"repro", f.repro_dir}, {"size_before", f.size_before},
                             {"size_after", f.size_after}, {"shrink_evals", f.shrink_evals}});
  }
  return j;
}

Status write_fuzz_repro(const std::string& dir, const Target& t, const compare::Problem& p, const Verdict& v,
                        const nlohmann::json& info) {
  compare::CandidateOutput out = v.output;
  if (out.nq != p.rows() || out.k != p.k() || static_cast<int64_t>(out.index.size()) != p.rows() * p.k()) {
    out = compare::CandidateOutput();
    out.nq = p.rows();
    out.k = p.k();
    out.index_base = p.options.index_base;
    out.index.assign(static_cast<size_t>(p.rows() * p.k()), -1);
  }
  // Logits of the wrong width are kept (replay then reports the same shape error); only an
  // internally inconsistent buffer is dropped.
  if (!out.logits.empty() && static_cast<int64_t>(out.logits.size()) != out.nq * out.logits_cols) {
    out.logits.clear();
    out.logits_cols = 0;
  }
  INDEXLAB_RETURN_IF_ERROR(compare::write_repro(dir, p, out, v.have_report ? &v.report : nullptr));
  nlohmann::json j = info;
  j["target"] = t.name;
  j["kind"] = failure_kind_name(v.kind);
  j["detail"] = v.detail;
  const std::string tol = t.tolerance.empty() ? t.candidate.tolerance : t.tolerance;
  j["tolerance"] = tol.empty() ? "exact" : tol;
  j["require_exact"] = t.require_exact;
  j["replay"] = "indexlab replay " + dir + " --tolerance " + j["tolerance"].get<std::string>();
  std::ofstream f(std::filesystem::path(dir) / "fuzz.json", std::ios::binary);
  if (!f) return error(dir, ": cannot write fuzz.json");
  f << j.dump(2) << "\n";
  return Status::Ok();
}

Status run_campaign(const Target& t, const CampaignOptions& o, CampaignResult* out) {
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards) return error("campaign: bad shard ", o.shard, "/", o.shards);
  CampaignResult res;
  const auto t0 = Clock::now();
  auto last_log = t0;
  std::map<std::string, bool> known_seen;
  for (int64_t n = 0;; ++n) {
    if (o.max_cases > 0 && n >= o.max_cases) break;
    if (o.time_budget_s > 0 && seconds_since(t0) >= o.time_budget_s) break;
    const int64_t index = o.shard + n * static_cast<int64_t>(o.shards);
    // Problems the candidate does not support are redrawn (attempt a > 0 uses seed + a).
    Case c;
    Verdict v;
    bool supported = false;
    int attempt = 0;
    for (; attempt < 8; ++attempt) {
      INDEXLAB_RETURN_IF_ERROR(make_case(t.gen, o.seed + static_cast<uint64_t>(attempt) * 0x100000001ull, index, &c));
      v = evaluate(t, c.problem, c.sample_rows, o.eval);
      if (!v.unsupported) {
        supported = true;
        break;
      }
    }
    ++res.cases;
    if (!supported) {
      ++res.skipped;
      continue;
    }
    ++res.by_generator[c.generator];
    if (!v.failed()) {
      ++res.passed;
    } else {
      FailureRecord f;
      f.case_index = index;
      f.generator = c.generator;
      f.values = c.values;
      f.kind = v.kind;
      f.detail = v.detail;
      const KnownFailure* k = o.ledger.match(t.name, v.kind, c.generator, v.detail, c.values);
      if (k) {
        ++res.known_failures;
        f.known = true;
        f.cause = k->cause;
        const std::string key = std::string(failure_kind_name(v.kind)) + "/" + c.generator;
        if (!known_seen[key]) {
          known_seen[key] = true;
          res.failures.push_back(f);
        }
      } else {
        ++res.new_failures;
        compare::Problem final_p = c.problem;
        Verdict final_v = v;
        f.size_before = f.size_after = problem_size(c.problem);
        if (o.shrink) {
          ShrinkResult sr = shrink(t, c.problem, v, o.eval, o.shrink_options);
          final_p = sr.problem;
          final_v = sr.verdict;
          f.size_after = sr.size_after;
          f.shrink_evals = sr.evals;
          f.detail = final_v.detail;
        }
        f.shrunk = final_p;
        if (!o.out_dir.empty()) {
          std::ostringstream name;
          name << t.name << "-s" << o.seed << "-c" << index;
          f.repro_dir = (std::filesystem::path(o.out_dir) / name.str()).string();
          nlohmann::json info = {{"seed", o.seed}, {"case", index}, {"attempt", attempt},
                                 {"generator", c.generator}, {"values", c.values},
                                 {"original_detail", v.detail}, {"size_before", f.size_before},
                                 {"size_after", f.size_after}, {"shrink_evals", f.shrink_evals},
                                 {"sample_rows", c.sample_rows}};
          Status st = write_fuzz_repro(f.repro_dir, t, final_p, final_v, info);
          if (!st.ok()) {
            if (o.log) o.log("could not write the repro: " + st.message());
            f.repro_dir.clear();
          }
        }
        if (o.log) {
          o.log("NEW FAILURE case " + std::to_string(index) + " [" + c.label() + "] " + failure_kind_name(v.kind) +
                ": " + f.detail + (f.repro_dir.empty() ? "" : " -> " + f.repro_dir));
        }
        res.failures.push_back(std::move(f));
        if (!o.keep_going) {
          res.stopped_on_failure = true;
          break;
        }
      }
    }
    if (o.log && std::chrono::duration<double>(Clock::now() - last_log).count() >= 10.0) {
      last_log = Clock::now();
      const double s = seconds_since(t0);
      std::ostringstream os;
      os << res.cases << " cases in " << static_cast<int64_t>(s) << " s (" << static_cast<int64_t>(res.cases / s)
         << "/s), " << res.new_failures << " new and " << res.known_failures << " known failures, " << res.skipped
         << " skipped";
      o.log(os.str());
    }
  }
  res.seconds = seconds_since(t0);
  *out = std::move(res);
  return Status::Ok();
}

}  // namespace indexlab::fuzz
