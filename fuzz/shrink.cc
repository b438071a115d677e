/// Greedy shrinking of a failing problem to a small one that fails the same way (see campaign.h).
#include <algorithm>
#include <cmath>
#include <functional>
#include <cstring>
#include <numeric>

#include "fuzz/campaign.h"
#include "reference/numerics.h"

namespace indexlab::fuzz {
namespace {

using compare::Problem;

/// Simplicity of a value: 0 (+0), 1 (+-1 or -0), 2 (anything else). Edits only ever lower it,
/// so value shrinking terminates.
int rank(float x) {
  if (x == 0.0f && !std::signbit(x)) return 0;
  if (x == 0.0f || x == 1.0f || x == -1.0f) return 1;
  return 2;
}

/// The simpler stand-in of x that keeps its sign: +-1 (exact in every precision).
float simple_value(float x, ref::Precision) {
  if (rank(x) < 2) return x;
  return std::signbit(x) ? -1.0f : 1.0f;
}

// ---- Flat edits ----------------------------------------------------------------------------------

void keep_rows(ref::Inputs* in, const std::vector<int64_t>& rows) {
  ref::Inputs r = compare::restrict_rows(*in, rows);
  *in = std::move(r);
}

/// Removes the keys whose mask entry is set; ranges shift so every row sees the same kept keys.
void remove_keys(ref::Inputs* in, const std::vector<char>& drop) {
  const int64_t nk = in->shape.nk, D = in->shape.d;
  std::vector<int64_t> before(nk + 1, 0);  // dropped keys below j
  for (int64_t j = 0; j < nk; ++j) before[j + 1] = before[j] + (drop[j] ? 1 : 0);
  std::vector<float> k, s;
  for (int64_t j = 0; j < nk; ++j) {
    if (drop[j]) continue;
    k.insert(k.end(), in->k.begin() + j * D, in->k.begin() + (j + 1) * D);
    if (!in->k_scale.empty()) s.push_back(in->k_scale[j]);
  }
  in->k = std::move(k);
  in->k_scale = std::move(s);
  for (int64_t i = 0; i < in->shape.nq; ++i) {
    in->ks[i] = static_cast<int32_t>(in->ks[i] - before[in->ks[i]]);
    in->ke[i] = static_cast<int32_t>(in->ke[i] - before[in->ke[i]]);
    if (!in->seq_end.empty()) in->seq_end[i] = static_cast<int32_t>(in->seq_end[i] - before[in->seq_end[i]]);
    if (!in->block_origin.empty())
      in->block_origin[i] = static_cast<int32_t>(in->block_origin[i] - before[in->block_origin[i]]);
  }
  in->shape.nk = nk - before[nk];
}

template <typename T>
std::vector<T> select_inner(const std::vector<T>& v, int64_t outer, int64_t inner, int64_t tail,
                            const std::vector<int>& keep) {
  // v is [outer, inner, tail]; keeps the listed inner indices.
  std::vector<T> r;
  r.reserve(static_cast<size_t>(outer) * keep.size() * tail);
  for (int64_t o = 0; o < outer; ++o)
    for (int x : keep) r.insert(r.end(), v.begin() + (o * inner + x) * tail, v.begin() + (o * inner + x + 1) * tail);
  return r;
}

void keep_heads_flat(ref::Inputs* in, ref::Options* o, const std::vector<int>& heads) {
  const int64_t nq = in->shape.nq;
  const int H = in->shape.h, D = in->shape.d;
  in->q = select_inner(in->q, nq, H, D, heads);
  in->w = select_inner(in->w, nq, H, 1, heads);
  if (!in->q_scale.empty()) in->q_scale = select_inner(in->q_scale, nq, H, 1, heads);
  in->shape.h = static_cast<int>(heads.size());
  o->misa_heads = std::min(o->misa_heads, in->shape.h);
}

void keep_dims_flat(ref::Inputs* in, const std::vector<int>& dims) {
  const int H = in->shape.h, D = in->shape.d;
  in->q = select_inner(in->q, in->shape.nq * H, D, 1, dims);
  in->k = select_inner(in->k, in->shape.nk, D, 1, dims);
  in->shape.d = static_cast<int>(dims.size());
}

// ---- The shrinker --------------------------------------------------------------------------------

class Shrinker {
 public:
  Shrinker(const Target& t, const EvalOptions& eo, const ShrinkOptions& so, const Problem& p, const Verdict& v)
      : t_(t), eo_(eo), so_(so), cur_(p), curv_(v), kind_(v.kind) {}

  ShrinkResult run() {
    ShrinkResult r;
    r.size_before = problem_size(cur_);
    bool progress = true;
    while (progress && budget()) {
      progress = false;
      progress |= pass_rows();
      progress |= pass_k();
      progress |= pass_keys();
      progress |= pass_heads();
      progress |= pass_dims();
      progress |= pass_options();
      progress |= pass_values_bulk();
      if (!progress) progress |= pass_values();
    }
    r.problem = cur_;
    r.verdict = curv_;
    r.evals = evals_;
    r.steps = steps_;
    r.size_after = problem_size(cur_);
    return r;
  }

 private:
  bool budget() const { return evals_ < so_.max_evals; }

  /// Accepts `p` if it still fails the same way.
  bool attempt(Problem p) {
    if (!budget()) return false;
    ++evals_;
    Verdict v = evaluate(t_, p, 0, eo_);
    if (v.unsupported || v.kind != kind_) return false;
    cur_ = std::move(p);
    curv_ = std::move(v);
    ++steps_;
    return true;
  }

  /// Edits on the paged form go through unpack / pack (pages re-laid out without spares).
  bool attempt_paged(const PagedParts& parts) {
    Problem p = cur_;
    if (!pack_paged(parts, 1, 0, 0, &p.paged_in).ok()) return false;
    return attempt(std::move(p));
  }

  PagedParts parts() const {
    PagedParts pp;
    (void)unpack_paged(cur_.paged_in, &pp);
    return pp;
  }

  int64_t nrows() const { return cur_.rows(); }

  bool pass_rows() {
    bool any = false;
    if (nrows() <= 1) return false;
    // One row first: the worst row of the report, then each row in turn (at most 8 tries).
    std::vector<int64_t> order;
    if (curv_.have_report)
      for (const auto& w : curv_.report.selection.worst) order.push_back(w.row);
    for (int64_t i = 0; i < nrows() && order.size() < 8; ++i)
      if (std::find(order.begin(), order.end(), i) == order.end()) order.push_back(i);
    for (int64_t i : order) {
      if (i < nrows() && try_keep_rows({i})) return true;
    }
    // Halves, then single rows dropped.
    const int64_t n = nrows();
    std::vector<int64_t> lo(n / 2), hi(n - n / 2);
    std::iota(lo.begin(), lo.end(), 0);
    std::iota(hi.begin(), hi.end(), n / 2);
    if (try_keep_rows(lo) || try_keep_rows(hi)) any = true;
    for (int64_t i = nrows() - 1; i >= 0 && nrows() > 1 && budget(); --i) {
      std::vector<int64_t> keep;
      for (int64_t r = 0; r < nrows(); ++r)
        if (r != i) keep.push_back(r);
      any |= try_keep_rows(keep);
    }
    return any;
  }

  bool try_keep_rows(const std::vector<int64_t>& rows) {
    if (rows.empty() || static_cast<int64_t>(rows.size()) >= nrows()) return false;
    if (!cur_.paged) {
      Problem p = cur_;
      keep_rows(&p.flat, rows);
      return attempt(std::move(p));
    }
    // Paged: rows are (sequence, r). A single row becomes a sequence of next_n = 1 whose context
    // ends where the row's visibility ends; several rows keep whole sequences.
    PagedParts pp = parts();
    const int nn = pp.next_n;
    if (rows.size() == 1) {
      const int64_t b = rows[0] / nn, r = rows[0] % nn;
      const int64_t ctx = static_cast<int64_t>(pp.scales[b].size());
      const int64_t vis = std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - nn + r + 1));
      PagedParts q = pp;
      q.next_n = 1;
      q.keys = {std::vector<float>(pp.keys[b].begin(), pp.keys[b].begin() + vis * pp.d)};
      q.scales = {std::vector<float>(pp.scales[b].begin(), pp.scales[b].begin() + vis)};
      const int64_t row = rows[0];
      q.q.assign(pp.q.begin() + row * pp.h * pp.d, pp.q.begin() + (row + 1) * pp.h * pp.d);
      q.w.assign(pp.w.begin() + row * pp.h, pp.w.begin() + (row + 1) * pp.h);
      if (!pp.q_scale.empty()) q.q_scale.assign(pp.q_scale.begin() + row * pp.h, pp.q_scale.begin() + (row + 1) * pp.h);
      return attempt_paged(q);
    }
    std::vector<int64_t> seqs;
    for (int64_t r : rows)
      if (seqs.empty() || seqs.back() != r / nn) seqs.push_back(r / nn);
    if (static_cast<int64_t>(seqs.size()) * nn >= nrows()) return false;
    return attempt_paged(keep_sequences(pp, seqs));
  }

  static PagedParts keep_sequences(const PagedParts& pp, const std::vector<int64_t>& seqs) {
    PagedParts q = pp;
    q.keys.clear();
    q.scales.clear();
    q.q.clear();
    q.w.clear();
    q.q_scale.clear();
    const int64_t HD = static_cast<int64_t>(pp.h) * pp.d;
    for (int64_t b : seqs) {
      q.keys.push_back(pp.keys[b]);
      q.scales.push_back(pp.scales[b]);
      const int64_t r0 = b * pp.next_n, r1 = r0 + pp.next_n;
      q.q.insert(q.q.end(), pp.q.begin() + r0 * HD, pp.q.begin() + r1 * HD);
      q.w.insert(q.w.end(), pp.w.begin() + r0 * pp.h, pp.w.begin() + r1 * pp.h);
      if (!pp.q_scale.empty()) q.q_scale.insert(q.q_scale.end(), pp.q_scale.begin() + r0 * pp.h, pp.q_scale.begin() + r1 * pp.h);
    }
    return q;
  }

  bool try_k(int k) {
    if (k < 1 || k >= cur_.k()) return false;
    Problem p = cur_;
    if (p.paged) p.paged_in.k = k;
    else p.flat.shape.k = k;
    if (p.path == ref::Path::kHisa) {
      // Smaller K keeps m * B >= K; also try the smallest m that is still valid.
      p.options.hisa_m = std::max(p.options.hisa_m, 2);
    }
    return attempt(std::move(p));
  }

  bool pass_k() {
    bool any = false;
    // Small K first (a tie-group boundary may sit at any K), then halving, then K - 1.
    for (int k = 1; k < std::min(cur_.k(), 17) && budget(); ++k)
      if (try_k(k)) return true;
    while (budget() && try_k(cur_.k() / 2)) any = true;
    while (budget() && try_k(cur_.k() - 1)) any = true;
    return any;
  }

  /// Delta debugging over n items: tries removing chunks of n/2, n/4, ... (down to single items
  /// when n <= 128, else to n/64), each at every offset. drop(a, b) attempts removing [a, b).
  bool ddmin(std::function<int64_t()> count, std::function<bool(int64_t, int64_t)> drop) {
    bool any = false;
    const int64_t n0 = count();
    const int64_t finest = n0 <= 128 ? 1 : std::max<int64_t>(1, n0 / 64);
    for (int64_t chunk = std::max<int64_t>(1, n0 / 2); budget(); chunk /= 2) {
      for (int64_t a = 0; a < count() && budget();) {
        const int64_t b = std::min(count(), a + chunk);
        if (b - a < count() && drop(a, b)) {
          any = true;  // the items after a moved down: try the same offset again
        } else {
          a = b;
        }
      }
      if (chunk <= finest) break;
    }
    return any;
  }

  bool pass_keys() {
    return cur_.paged ? pass_keys_paged() : pass_keys_flat();
  }

  bool try_drop_keys(const std::vector<char>& drop) {
    if (std::none_of(drop.begin(), drop.end(), [](char c) { return c != 0; })) return false;
    Problem p = cur_;
    remove_keys(&p.flat, drop);
    return attempt(std::move(p));
  }

  bool pass_keys_flat() {
    bool any = false;
    auto nk = [&] { return cur_.flat.shape.nk; };
    // Keys past every row's ke and seq_end matter to nobody: try dropping them first.
    {
      int64_t hi = 0;
      for (int64_t i = 0; i < cur_.flat.shape.nq; ++i) {
        hi = std::max<int64_t>(hi, cur_.flat.ke[i]);
        if (!cur_.flat.seq_end.empty()) hi = std::max<int64_t>(hi, cur_.flat.seq_end[i]);
      }
      std::vector<char> drop(nk(), 0);
      for (int64_t j = hi; j < nk(); ++j) drop[j] = 1;
      any |= try_drop_keys(drop);
    }
    // Chunks of keys, halving in size (delta debugging); a lone key last.
    any |= ddmin(nk, [&](int64_t a, int64_t b) {
      std::vector<char> drop(nk(), 0);
      std::fill(drop.begin() + a, drop.begin() + b, 1);
      return try_drop_keys(drop);
    });
    if (nk() == 1) any |= try_drop_keys({1});
    if (!cur_.flat.block_origin.empty()) {
      Problem p = cur_;
      p.flat.block_origin.clear();
      any |= attempt(std::move(p));
    }
    if (!cur_.flat.seq_end.empty()) {
      Problem p = cur_;
      p.flat.seq_end.clear();
      any |= attempt(std::move(p));
    }
    return any;
  }

  bool pass_keys_paged() {
    bool any = false;
    PagedParts pp = parts();
    // Drop sequences one at a time.
    for (int64_t b = static_cast<int64_t>(pp.keys.size()) - 1; b >= 0 && pp.keys.size() > 1 && budget(); --b) {
      std::vector<int64_t> keep;
      for (int64_t s = 0; s < static_cast<int64_t>(pp.keys.size()); ++s)
        if (s != b) keep.push_back(s);
      if (attempt_paged(keep_sequences(pp, keep))) {
        any = true;
        pp = parts();
      }
    }
    // next_n down by one: dropping row 0 of every sequence keeps the others' visibility.
    while (pp.next_n > 1 && budget()) {
      PagedParts q = pp;
      q.next_n = pp.next_n - 1;
      q.q.clear();
      q.w.clear();
      q.q_scale.clear();
      const int64_t HD = static_cast<int64_t>(pp.h) * pp.d;
      for (size_t b = 0; b < pp.keys.size(); ++b)
        for (int r = 1; r < pp.next_n; ++r) {
          const int64_t row = static_cast<int64_t>(b) * pp.next_n + r;
          q.q.insert(q.q.end(), pp.q.begin() + row * HD, pp.q.begin() + (row + 1) * HD);
          q.w.insert(q.w.end(), pp.w.begin() + row * pp.h, pp.w.begin() + (row + 1) * pp.h);
          if (!pp.q_scale.empty())
            q.q_scale.insert(q.q_scale.end(), pp.q_scale.begin() + row * pp.h, pp.q_scale.begin() + (row + 1) * pp.h);
        }
      if (!attempt_paged(q)) break;
      any = true;
      pp = parts();
    }
    // Contexts: chunks of tokens of each sequence, halving in size (delta debugging).
    for (size_t b = 0; b < pp.keys.size() && budget(); ++b) {
      auto ctx = [&] { return static_cast<int64_t>(pp.scales[b].size()); };
      auto drop = [&](int64_t a, int64_t e) {
        PagedParts q = pp;
        q.keys[b].erase(q.keys[b].begin() + a * pp.d, q.keys[b].begin() + e * pp.d);
        q.scales[b].erase(q.scales[b].begin() + a, q.scales[b].begin() + e);
        if (!attempt_paged(q)) return false;
        pp = parts();
        return true;
      };
      any |= ddmin(ctx, drop);
      if (ctx() == 1) any |= drop(0, 1);
    }
    return any;
  }

  bool try_heads(const std::vector<int>& heads) {
    if (heads.empty() || static_cast<int>(heads.size()) >= cur_.h()) return false;
    if (!cur_.paged) {
      Problem p = cur_;
      keep_heads_flat(&p.flat, &p.options, heads);
      return attempt(std::move(p));
    }
    PagedParts pp = parts();
    const int64_t rows = static_cast<int64_t>(pp.w.size()) / pp.h;
    pp.q = select_inner(pp.q, rows, pp.h, pp.d, heads);
    pp.w = select_inner(pp.w, rows, pp.h, 1, heads);
    if (!pp.q_scale.empty()) pp.q_scale = select_inner(pp.q_scale, rows, pp.h, 1, heads);
    pp.h = static_cast<int>(heads.size());
    Problem p = cur_;
    p.options.misa_heads = std::min(p.options.misa_heads, pp.h);
    if (!pack_paged(pp, 1, 0, 0, &p.paged_in).ok()) return false;
    return attempt(std::move(p));
  }

  bool try_dims(const std::vector<int>& dims) {
    if (dims.empty() || static_cast<int>(dims.size()) >= cur_.d()) return false;
    if (!cur_.paged) {
      Problem p = cur_;
      keep_dims_flat(&p.flat, dims);
      return attempt(std::move(p));
    }
    PagedParts pp = parts();
    const int64_t rows = static_cast<int64_t>(pp.w.size()) / pp.h;
    pp.q = select_inner(pp.q, rows * pp.h, pp.d, 1, dims);
    for (auto& kv : pp.keys) kv = select_inner(kv, static_cast<int64_t>(kv.size()) / pp.d, pp.d, 1, dims);
    pp.d = static_cast<int>(dims.size());
    return attempt_paged(pp);
  }

  /// Shared by heads and dims: one index alone, halves, then single indices dropped.
  bool pass_axis(std::function<int()> size, std::function<bool(const std::vector<int>&)> keep) {
    bool any = false;
    const int n = size();
    if (n <= 1) return false;
    for (int x = 0; x < std::min(n, 16) && budget(); ++x)
      if (keep({x})) return true;
    for (bool progress = true; progress && budget() && size() > 1;) {
      progress = false;
      const int m = size(), half = m / 2;
      std::vector<int> lo(m - half), hi(half);
      std::iota(lo.begin(), lo.end(), 0);
      std::iota(hi.begin(), hi.end(), m - half);
      if (keep(lo) || keep(hi)) progress = any = true;
    }
    for (int x = size() - 1; x >= 0 && size() > 1 && size() <= 64 && budget(); --x) {
      std::vector<int> rest;
      for (int y = 0; y < size(); ++y)
        if (y != x) rest.push_back(y);
      any |= keep(rest);
    }
    return any;
  }

  bool pass_heads() {
    return pass_axis([&] { return cur_.h(); }, [&](const std::vector<int>& v) { return try_heads(v); });
  }
  bool pass_dims() {
    return pass_axis([&] { return cur_.d(); }, [&](const std::vector<int>& v) { return try_dims(v); });
  }

  bool pass_options() {
    bool any = false;
    auto tryo = [&](std::function<void(ref::Options*)> f) {
      Problem p = cur_;
      f(&p.options);
      if (nlohmann::json(compare::options_to_json(p.options)) == compare::options_to_json(cur_.options)) return;
      any |= attempt(std::move(p));
    };
    tryo([](ref::Options* o) { o->index_base = ref::IndexBase::kRelative; });
    tryo([](ref::Options* o) { o->align = ref::BlockAlign::kSequence; });
    tryo([](ref::Options* o) { o->strict_pooling = false; });
    if (cur_.path == ref::Path::kHisa) {
      tryo([](ref::Options* o) { o->hisa_topm_plus_ends = false; });
      tryo([](ref::Options* o) { o->hisa_bf16_block_scores = false; });
    }
    if (cur_.path == ref::Path::kMisa || cur_.path == ref::Path::kMisaDagger) {
      tryo([](ref::Options* o) { o->routing = ref::Routing::kPooled; });
      tryo([](ref::Options* o) { o->misa_heads = 1; });
    }
    return any;
  }

  /// Whole tensors at once: q, then k, to 0 and then to +-1 (by sign).
  bool pass_values_bulk() {
    bool any = false;
    for (int mode = 0; mode < 2; ++mode) {
      auto simplify = [&](std::vector<float>* v) {
        bool changed = false;
        for (auto& x : *v) {
          const float y = mode == 0 ? 0.0f : simple_value(x, cur_.precision());
          if (rank(y) < rank(x)) {
            x = y;
            changed = true;
          }
        }
        return changed;
      };
      {
        Problem p = cur_;
        if (simplify(p.paged ? &p.paged_in.q : &p.flat.q)) any |= attempt(std::move(p));
      }
      if (!cur_.paged) {
        Problem p = cur_;
        if (simplify(&p.flat.k)) any |= attempt(std::move(p));
      } else {
        PagedParts pp = parts();
        bool changed = false;
        for (auto& kv : pp.keys) changed |= simplify(&kv);
        if (changed) any |= attempt_paged(pp);
      }
    }
    return any;
  }

  /// Values: w to +-1, scales to 1, then single values to 0 and to +-1.
  bool pass_values() {
    bool any = false;
    Problem p = cur_;
    std::vector<float>* w = p.paged ? &p.paged_in.w : &p.flat.w;
    bool changed = false;
    for (auto& x : *w) {
      const float y = simple_value(x, p.precision());
      if (x != y) {
        x = y;
        changed = true;
      }
    }
    if (changed) any |= attempt(p);
    if (!cur_.paged) {
      if (!cur_.flat.k_scale.empty()) {
        Problem s = cur_;
        s.flat.k_scale.clear();
        any |= attempt(std::move(s));
      }
      if (!cur_.flat.q_scale.empty()) {
        Problem s = cur_;
        s.flat.q_scale.clear();
        any |= attempt(std::move(s));
      }
      any |= simplify_each(&ref::Inputs::q);
      any |= simplify_each(&ref::Inputs::k);
      any |= simplify_each(&ref::Inputs::w);
    } else {
      PagedParts pp = parts();
      bool sc = false;
      for (auto& s : pp.scales)
        for (auto& x : s) {
          sc |= x != 1.0f;
          x = 1.0f;
        }
      if (sc) any |= attempt_paged(pp);
      pp = parts();
      if (!pp.q_scale.empty()) {
        pp.q_scale.clear();
        any |= attempt_paged(pp);
      }
      const size_t n = cur_.paged_in.q.size();
      for (size_t t = 0; t < n && n <= 256 && budget(); ++t) {
        const float x = cur_.paged_in.q[t];
        for (float y : {0.0f, simple_value(x, cur_.precision())}) {
          if (rank(y) >= rank(x)) continue;
          Problem p = cur_;
          p.paged_in.q[t] = y;
          if (attempt(std::move(p))) break;
        }
      }
    }
    return any;
  }

  bool simplify_each(std::vector<float> ref::Inputs::*field) {
    bool any = false;
    const size_t n = (cur_.flat.*field).size();
    if (n == 0 || n > 256) return false;
    for (size_t t = 0; t < n && budget(); ++t) {
      const float x = (cur_.flat.*field)[t];
      for (float y : {0.0f, simple_value(x, cur_.precision())}) {
        if (rank(y) >= rank(x)) continue;
        Problem p = cur_;
        (p.flat.*field)[t] = y;
        if (attempt(std::move(p))) {
          any = true;
          break;
        }
      }
    }
    return any;
  }

  const Target& t_;
  EvalOptions eo_;
  ShrinkOptions so_;
  Problem cur_;
  Verdict curv_;
  FailureKind kind_;
  int evals_ = 0, steps_ = 0;
};

}  // namespace

int64_t problem_size(const Problem& p) {
  if (p.paged) {
    int64_t tokens = 0;
    for (int64_t b = 0; b < p.paged_in.batch; ++b) tokens += p.paged_in.context_lens[b];
    return static_cast<int64_t>(p.paged_in.q.size() + p.paged_in.w.size()) + tokens * p.paged_in.d + p.rows() + tokens +
           p.k();
  }
  const ref::Inputs& f = p.flat;
  return static_cast<int64_t>(f.q.size() + f.k.size() + f.w.size()) + f.shape.nq + f.shape.nk + f.shape.k;
}

ShrinkResult shrink(const Target& t, const compare::Problem& p, const Verdict& v, const EvalOptions& eo,
                    const ShrinkOptions& so) {
  if (!v.failed()) {
    ShrinkResult r;
    r.problem = p;
    r.verdict = v;
    r.size_before = r.size_after = problem_size(p);
    return r;
  }
  return Shrinker(t, eo, so, p, v).run();
}

}  // namespace indexlab::fuzz
