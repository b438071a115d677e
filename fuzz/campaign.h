/// Fuzz targets, one-case evaluation (crash-isolated in a child process), the ledger of known
/// failures, the shrinker and the sharded, time-bounded campaign loop.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "compare/judge.h"
#include "compare/registry.h"
#include "fuzz/generators.h"

namespace indexlab::fuzz {

/// What went wrong with one case. "Same failure" (shrinking, ledger) means the same kind.
enum class FailureKind {
  kNone,
  kError,             // the candidate returned an error, or an output of the wrong shape
  kInvalid,           // an index that is out of range, not visible or repeated
  kSelection,         // a valid selection the rule (exact or bound-aware) rejects
  kLogitsInf,         // the -inf pattern of the logits differs
  kLogitsValue,       // logits further than the target allows (max_logit_ulp)
  kNondeterministic,  // reruns not bitwise identical
  kCrash,             // the candidate died on a signal (isolated runs only)
  kHang,              // the candidate ran past the timeout (isolated runs only)
};
const char* failure_kind_name(FailureKind k);
Status parse_failure_kind(const std::string& s, FailureKind* out);

/// A candidate plus how the campaign feeds and judges it.
struct Target {
  std::string name;
  compare::Candidate candidate;
  GenConfig gen;
  bool require_exact = false;       // the selection must equal the reference's set
  bool check_logits = true;         // the -inf pattern must match when logits are returned
  uint64_t max_logit_ulp = UINT64_MAX;  // finite logits within this many ulps (max: unchecked)
  std::string tolerance;            // empty: the candidate's own tolerance model
  int reruns = 1;                   // > 1: determinism is checked too
  bool isolate = true;              // default of EvalOptions::isolate for this target
};

/// The built-in identity targets (CPU reference against itself, SPEC 4.7, 5.7, 6 and the
/// permutation / scaling identities) and oracle_vs_emulation when the sm90 emulator is built.
const std::vector<std::string>& identity_target_names();
/// A target by name: an identity target, or a candidate of `reg` (generated problems are then
/// limited to those it supports).
Status make_target(const std::string& name, const compare::Registry& reg, Target* out);

struct EvalOptions {
  bool isolate = true;       // run the candidate in a forked child
  double timeout_s = 60.0;   // isolated runs: a child running longer is killed (a hang)
};

/// The verdict on one case.
struct Verdict {
  FailureKind kind = FailureKind::kNone;
  std::string detail;               // one line: the first bad row, the signal, the error
  bool unsupported = false;         // the candidate does not support the problem (skipped)
  bool have_report = false;
  compare::Report report;
  compare::CandidateOutput output;  // the candidate's output (empty on crash / hang / error)
  bool failed() const { return kind != FailureKind::kNone; }
};

/// Runs the target's candidate on a problem (isolated if asked) and judges it.
Verdict evaluate(const Target& t, const compare::Problem& p, int64_t sample_rows, const EvalOptions& eo);

// ---- Ledger ------------------------------------------------------------------------------------

/// A known failure: matched on target, kind and (optionally) generator, value class and a detail
/// substring.
/// "*" or empty matches anything; a trailing '*' matches a prefix.
struct KnownFailure {
  std::string target, kind, generator, values, detail_contains;
  std::string cause;  // why it fails (an issue, a peer bug, a documented limitation)
};
struct Ledger {
  std::vector<KnownFailure> known;
  /// The first entry matching, or nullptr.
  const KnownFailure* match(const std::string& target, FailureKind kind, const std::string& generator,
                            const std::string& detail, const std::string& values = "") const;
};
/// {"known": [{"target": "cuda.dsa", "kind": "selection", "generator": "long_rows",
///             "values": "*", "detail_contains": "", "cause": "..."}]}
Status load_ledger(const std::string& path, Ledger* out);
Status ledger_from_json(const std::string& text, Ledger* out);

// ---- Shrinking ---------------------------------------------------------------------------------

struct ShrinkOptions {
  int max_evals = 400;  // candidate runs spent on shrinking
};
struct ShrinkResult {
  compare::Problem problem;  // the smallest problem found that fails the same way
  Verdict verdict;           // its verdict
  int evals = 0;
  int steps = 0;             // accepted reductions
  int64_t size_before = 0, size_after = 0;
};
/// Size of a problem: stored values of q, k and w plus rows, keys and K (what shrinking lowers).
int64_t problem_size(const compare::Problem& p);
/// Greedy shrinking: keep one failing row, drop rows, halve keys / heads / dims / K, drop single
/// keys, heads and dims, then simplify values (w to +-1, scales to 1, values to 0 or +-1) while
/// the problem still fails with `kind`. Deterministic for a deterministic candidate.
ShrinkResult shrink(const Target& t, const compare::Problem& p, const Verdict& v, const EvalOptions& eo,
                    const ShrinkOptions& so);

// ---- Campaigns ---------------------------------------------------------------------------------

struct CampaignOptions {
  uint64_t seed = 1;
  int shard = 0, shards = 1;     // this worker runs case indices congruent to shard mod shards
  double time_budget_s = 60.0;   // <= 0: no time limit
  int64_t max_cases = 0;         // 0: no case limit (this shard's cases)
  bool keep_going = false;       // go on after a new failure
  bool shrink = true;
  ShrinkOptions shrink_options;
  std::string out_dir;           // repro directories go under it (empty: none written)
  Ledger ledger;
  EvalOptions eval;
  std::function<void(const std::string&)> log;  // progress lines (optional)
};

struct FailureRecord {
  int64_t case_index = 0;
  std::string generator, values;
  FailureKind kind = FailureKind::kNone;
  std::string detail;
  bool known = false;
  std::string cause;       // the ledger's cause when known
  std::string repro_dir;   // written for new failures when out_dir is set
  int64_t size_before = 0, size_after = 0;
  int shrink_evals = 0;
  compare::Problem shrunk; // the shrunk problem (new failures)
};

struct CampaignResult {
  int64_t cases = 0, passed = 0, skipped = 0, known_failures = 0, new_failures = 0;
  double seconds = 0.0;
  std::vector<FailureRecord> failures;            // every new failure, the first known of each kind
  std::map<std::string, int64_t> by_generator;    // cases run per generator
  bool stopped_on_failure = false;
  nlohmann::json to_json() const;
};

/// Parses "i/n" (0 <= i < n).
Status parse_shard(const std::string& s, int* shard, int* shards);
/// Parses a duration: "90", "90s", "10m", "2h", "1.5m".
Status parse_duration(const std::string& s, double* seconds);

/// Runs cases shard, shard + shards, ... until the time or case budget runs out, or (unless
/// keep_going) the first new failure, which is shrunk and written as a repro directory.
Status run_campaign(const Target& t, const CampaignOptions& o, CampaignResult* out);

/// Writes a repro directory for `p` (compare::write_repro: problem.json, inputs.npz, candidate.npz,
/// report.json) plus fuzz.json (seed, case, generator, kind, detail). Crash and hang repros hold
/// an all -1 candidate.npz, since the candidate produced nothing.
Status write_fuzz_repro(const std::string& dir, const Target& t, const compare::Problem& p, const Verdict& v,
                        const nlohmann::json& info);

}  // namespace indexlab::fuzz
