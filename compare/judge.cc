/// Judging a candidate against the reference (see judge.h).
#include "compare/judge.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <cmath>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#include "reference/numerics.h"
#include "reference/routing.h"
#include "reference/scoring.h"

namespace indexlab::compare {
namespace {

std::string fmt(double x) {
  std::ostringstream os;
  os.precision(9);
  os << x;
  return os.str();
}

/// Per-key drift bound of one row under a tolerance model (0 for the exact model). abs_sub is
/// `sub` with |q| and |k| (so its dots are sum_d |q_d k_d|), built once by the caller.
std::vector<double> row_bounds(const ref::Inputs& sub, const ref::Inputs& abs_sub, int64_t t,
                               const Tolerance& tol, const int32_t* heads = nullptr, int nh = 0) {
  const int64_t ks = sub.ks[t], ke = sub.ke[t];
  std::vector<double> b(static_cast<size_t>(ke - ks), 0.0);
  if ((tol.dot_rel == 0.0 && tol.epi_rel == 0.0 && tol.abs_floor == 0.0) || ke <= ks) return b;
  const int H = sub.shape.h;
  ref::RowScorer scorer(sub), abs_scorer(abs_sub);
  std::vector<double> dots, absdots;
  scorer.head_dots(t, ks, ke - ks, &dots);
  abs_scorer.head_dots(t, ks, ke - ks, &absdots);
  for (int64_t j = ks; j < ke; ++j) {
    const double s = sub.k_scale.empty() ? 1.0 : sub.k_scale[j];
    double acc = 0.0;
    for (int hi = 0; hi < (heads ? nh : H); ++hi) {  // all heads, or the listed ones (MISA)
      const int h = heads ? heads[hi] : hi;
      const double aw = std::fabs(static_cast<double>(sub.w[t * H + h]));
      const double dot = dots[(j - ks) * H + h];
      acc += aw * (tol.dot_rel * s * absdots[(j - ks) * H + h] + tol.epi_rel * std::max(0.0, s * dot));
    }
    b[j - ks] = acc + tol.abs_floor;
  }
  return b;
}

}  // namespace

CandidateOutput to_candidate_output(ref::Result&& r, ref::IndexBase base) {
  CandidateOutput c;
  c.nq = r.nq;
  c.k = r.k;
  c.index_base = base;
  c.index = std::move(r.index);
  c.logits_cols = r.logits_cols;
  c.logits = std::move(r.logits);
  if (r.nq > 0 && !r.active_heads.empty()) {
    c.heads = static_cast<int>(r.active_heads.size() / r.nq);
    c.active_heads = std::move(r.active_heads);
  }
  return c;
}

Status tolerance_by_name(const std::string& name, int h, int d, Tolerance* out) {
  Tolerance t;
  t.name = name;
  if (name == "exact") {
  } else if (name == "fp32") {
    t.dot_rel = d * 0x1p-24;
    t.epi_rel = (h + 3) * 0x1p-24;
    t.abs_floor = (2.0 * h + d + 4) * 0x1p-149;
  } else if (name == "tensor_core") {
    t.dot_rel = ((d + 31) / 32) * 34 * 0x1p-13;
    t.epi_rel = (h + 3) * 0x1p-24;
    t.abs_floor = (2.0 * h + d + 4) * 0x1p-149;
  } else {
    return error("tolerance '", name, "' is not one of exact, fp32, tensor_core");
  }
  *out = t;
  return Status::Ok();
}

std::vector<int64_t> rows_to_judge(int64_t nq, const JudgeOptions& o) {
  std::vector<int64_t> rows;
  if (o.sample_rows <= 0 || o.sample_rows >= nq) {
    rows.resize(nq);
    for (int64_t i = 0; i < nq; ++i) rows[i] = i;
    return rows;
  }
  std::mt19937_64 rng(o.seed);
  std::set<int64_t> pick;
  // Floyd's algorithm: a uniform sample without replacement.
  for (int64_t j = nq - o.sample_rows; j < nq; ++j) {
    std::uniform_int_distribution<int64_t> u(0, j);
    const int64_t t = u(rng);
    if (!pick.insert(t).second) pick.insert(j);
  }
  return std::vector<int64_t>(pick.begin(), pick.end());
}

bool bitwise_equal(const CandidateOutput& a, const CandidateOutput& b, std::string* detail) {
  if (a.index.size() != b.index.size() || a.logits.size() != b.logits.size()) {
    if (detail) *detail = "output sizes differ between runs";
    return false;
  }
  for (size_t t = 0; t < a.index.size(); ++t) {
    if (a.index[t] != b.index[t]) {
      if (detail) {
        *detail = "index[" + std::to_string(t / std::max(1, a.k)) + "," + std::to_string(t % std::max(1, a.k)) +
                  "] = " + std::to_string(a.index[t]) + " then " + std::to_string(b.index[t]);
      }
      return false;
    }
  }
  if (a.active_heads != b.active_heads) {
    if (detail) *detail = "active heads differ between runs";
    return false;
  }
  if (!a.logits.empty() &&
      std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)) != 0) {
    for (size_t t = 0; t < a.logits.size(); ++t) {
      if (std::memcmp(&a.logits[t], &b.logits[t], sizeof(float)) != 0) {
        if (detail) {
          *detail = "logits[" + std::to_string(t / a.logits_cols) + "," + std::to_string(t % a.logits_cols) +
                    "] = " + fmt(a.logits[t]) + " then " + fmt(b.logits[t]);
        }
        break;
      }
    }
    return false;
  }
  return true;
}

Status judge(const Problem& p, const CandidateOutput& cand, const JudgeOptions& o, Report* out) {
  FlatView fv;
  INDEXLAB_RETURN_IF_ERROR(flat_view(p, &fv));
  const ref::Inputs& in = fv.in;
  const int64_t nq = in.shape.nq;
  const int K = in.shape.k;
  if (cand.nq != nq || cand.k != K) {
    return error("candidate output is [", cand.nq, ", ", cand.k, "] but the problem needs [", nq, ", ", K, "]");
  }
  if (static_cast<int64_t>(cand.index.size()) != nq * K) {
    return error("candidate index has ", cand.index.size(), " elements but [nq, k] needs ", nq * K);
  }
  const int64_t cols = p.logits_cols();
  if (!cand.logits.empty() &&
      (cand.logits_cols != cols || static_cast<int64_t>(cand.logits.size()) != nq * cols)) {
    return error("candidate logits are [", cand.logits.size() / std::max<int64_t>(1, cand.logits_cols), ", ",
                 cand.logits_cols, "] but the problem needs [", nq, ", ", cols, "]");
  }
  const std::vector<int64_t> rows = rows_to_judge(nq, o);
  ref::Inputs sub = restrict_rows(in, rows);
  ref::Inputs abs_sub;  // built on the first non-exact row that needs drift bounds
  ref::Options ro = p.options;
  ro.index_base = ref::IndexBase::kRelative;
  ro.want_logits = true;
  ref::Result rr;
  if (o.reference != nullptr) {
    if (o.reference->nq != static_cast<int64_t>(rows.size()) || o.reference->k != K ||
        o.reference->logits_cols != in.shape.nk) {
      return error("the precomputed reference does not match the judged rows (", o.reference->nq, " rows of ",
                   o.reference->logits_cols, " logits, need ", rows.size(), " of ", in.shape.nk, ")");
    }
    rr = *o.reference;
  } else {
    Problem sp;
    sp.path = p.path;
    sp.flat = sub;
    INDEXLAB_RETURN_IF_ERROR(run_reference(sp, ro, &rr).with_context("reference: "));
  }
  // MISA-dagger: its stage 1 keeps the top K1 by MISA score, a decision made on scores that
  // carry the candidate's drift. A key whose MISA score lies within the bound of the K1-th may
  // fall on either side, so the judge needs every key's MISA score (stage 1) and DSA score
  // (stage 2), not only the reference's own candidate set.
  const bool dagger = p.path == ref::Path::kMisaDagger;
  // HISA (fp8): the blocks kept are decided on block scores that carry the kernel's drift; the
  // same construction as dagger's stage 1, with "key in a kept block" for "key in the top K1".
  const bool hisa_dec = p.path == ref::Path::kHisa && in.precision == ref::Precision::kFp8;
  const bool staged = dagger || hisa_dec;
  // Computed on the first row that needs them (a row that is not exact, or a logit cell whose -inf
  // differs), so exact candidates cost no extra reference runs.
  ref::Result r_misa, r_dsa;
  const int64_t k1 = dagger ? std::min<int64_t>(p.options.dagger_k1, std::max<int64_t>(1, in.shape.nk)) : 0;
  bool stage_refs_ready = false;
  auto stage_refs = [&]() -> Status {
    if (stage_refs_ready) return Status::Ok();
    stage_refs_ready = true;
    Problem sp;
    sp.flat = sub;
    sp.path = ref::Path::kDsa;
    INDEXLAB_RETURN_IF_ERROR(run_reference(sp, ro, &r_dsa).with_context("reference (every key's DSA score): "));
    if (dagger) {
      sp.path = ref::Path::kMisa;
      sp.flat.shape.k = static_cast<int>(k1);
      INDEXLAB_RETURN_IF_ERROR(run_reference(sp, ro, &r_misa).with_context("reference (dagger stage 1): "));
    }
    return Status::Ok();
  };
  // Drift bounds of row t's keys (over the listed heads, or all), with |q| and |k| built once.
  auto bounds = [&](size_t t, const int32_t* heads = nullptr, int nheads = 0) {
    if (abs_sub.q.empty() && !sub.q.empty()) {
      abs_sub = sub;
      for (auto& x : abs_sub.q) x = std::fabs(x);
      for (auto& x : abs_sub.k) x = std::fabs(x);
    }
    return row_bounds(sub, abs_sub, static_cast<int64_t>(t), o.tolerance, heads, nheads);
  };
  Report rep;
  rep.problem = p.name;
  SelectionSummary& ss = rep.selection;
  ss.rows_total = nq;
  ss.rows_judged = static_cast<int64_t>(rows.size());
  std::vector<RowVerdict> verdicts;
  double recall_sum = 0.0;
  LogitsSummary& ls = rep.logits;
  ls.present = !cand.logits.empty();
  double sxy = 0.0, sxx = 0.0;
  int64_t bit_exact = 0;

  // MISA and MISA-dagger: the candidate's heads, where it reports them.
  const bool routed = p.path == ref::Path::kMisa || p.path == ref::Path::kMisaDagger;
  const int nh = p.options.misa_heads;
  const bool cand_heads = routed && cand.heads == nh && static_cast<int64_t>(cand.active_heads.size()) == nq * nh;
  std::unique_ptr<ref::RowScorer> scorer;

  for (size_t t = 0; t < rows.size(); ++t) {
    const int64_t i = rows[t];
    const int64_t ks = in.ks[i], ke = in.ke[i];
    const float* lrow = &rr.logits[t * rr.logits_cols];
    const int32_t* r_index = &rr.index[t * K];
    const float* r_score = &rr.score[t * K];
    const float* r_bound = &rr.bound[t * K];
    RowVerdict v;
    v.row = i;
    v.ref_ambiguous = rr.ambiguous[t] != 0;
    std::ostringstream diag;
    // Routing: when the candidate chose other heads than the reference, each must be within the
    // router scores' drift bound of the reference's choice; the row is then judged under the
    // candidate's heads (MISA: the scores and selection; MISA-dagger: its stage 1).
    bool routing_ok = true;
    const int32_t* heads_used = routed ? &rr.active_heads[t * nh] : nullptr;
    std::vector<float> alt_logits, alt_score, alt_bound, alt1_logits, alt1_score, alt1_bound;
    std::vector<int32_t> alt_index, alt1_index;
    // Dagger stage 1 of this row: the reference's (set on first use) or, rerouted, the candidate heads'.
    const float* m_logits = nullptr;
    const int32_t* m_index = nullptr;
    const float* m_score = nullptr;
    const float* m_bound = nullptr;
    if (cand_heads && !std::equal(&cand.active_heads[i * nh], &cand.active_heads[i * nh] + nh, heads_used)) {
      std::vector<double> e, eb;
      INDEXLAB_RETURN_IF_ERROR(ref::misa_router_scores(sub, p.options, static_cast<int64_t>(t), &e, &eb));
      const int H = in.shape.h;
      std::vector<int> order(static_cast<size_t>(H));
      for (int g = 0; g < H; ++g) order[g] = g;
      std::sort(order.begin(), order.end(), [&](int a, int b) {
        return ref::ranks_before(static_cast<float>(e[a]), a, static_cast<float>(e[b]), b);
      });
      std::vector<int> rank(static_cast<size_t>(H));
      for (int r = 0; r < H; ++r) rank[order[r]] = r;
      const int last_in = order[nh - 1];
      const int first_out = nh < H ? order[nh] : -1;
      std::set<int> chosen;
      for (int s = 0; s < nh; ++s) {
        const int g = cand.active_heads[i * nh + s];
        if (g < 0 || g >= H || !chosen.insert(g).second) {
          routing_ok = false;
          diag << "active head slot " << s << " holds " << g << ", not a distinct head in [0, " << H << "); ";
          break;
        }
        // May g be among the top h? Its score plus its bound reaches the h-th minus that one's.
        if (rank[g] >= nh && e[g] + eb[g] < e[last_in] - eb[last_in]) {
          routing_ok = false;
          diag << "head " << g << " chosen, but its router score " << fmt(e[g]) << " is below the " << nh
               << "-th (" << fmt(e[last_in]) << ", head " << last_in << ") by more than the drift bound; ";
        }
      }
      for (int r = 0; r < nh && routing_ok; ++r) {
        // A head that beats the best left-out one by more than both bounds must be chosen.
        const int g = order[r];
        if (!chosen.count(g) && (first_out < 0 || e[g] - eb[g] > e[first_out] + eb[first_out])) {
          routing_ok = false;
          diag << "head " << g << " (router score " << fmt(e[g]) << ") must be chosen; ";
        }
      }
      if (routing_ok) {
        heads_used = &cand.active_heads[i * nh];
        if (!scorer) scorer = std::make_unique<ref::RowScorer>(sub);
        std::vector<int> hs(heads_used, heads_used + nh);
        std::vector<ref::Scored> row;
        scorer->score_range(static_cast<int64_t>(t), ks, ke, hs.data(), nh, &row);
        auto select = [&](int kk, std::vector<float>* lg, std::vector<int32_t>* ix, std::vector<float>* sc,
                          std::vector<float>* bd) {
          lg->assign(static_cast<size_t>(in.shape.nk), -INFINITY);
          for (const ref::Scored& x : row) (*lg)[x.key] = x.score;
          ix->assign(static_cast<size_t>(kk), -1);
          sc->assign(static_cast<size_t>(kk), -INFINITY);
          bd->assign(static_cast<size_t>(kk), 0.0f);
          std::vector<ref::Scored> copy = row;
          ref::select_top_k(&copy, kk, static_cast<int32_t>(ks), ix->data(), sc->data(), bd->data());
        };
        if (dagger) {
          select(static_cast<int>(k1), &alt1_logits, &alt1_index, &alt1_score, &alt1_bound);
          m_logits = alt1_logits.data();
          m_index = alt1_index.data();
          m_score = alt1_score.data();
          m_bound = alt1_bound.data();
        } else {
          select(K, &alt_logits, &alt_index, &alt_score, &alt_bound);
          lrow = alt_logits.data();
          r_index = alt_index.data();
          r_score = alt_score.data();
          r_bound = alt_bound.data();
          ++rep.rerouted_rows;
        }
        if (dagger) ++rep.rerouted_rows;
      }
    }
    // Candidate keys as flat key indices.
    std::unordered_map<int64_t, int64_t> slot_to_key;
    if (fv.paged && cand.index_base == ref::IndexBase::kAbsolute)
      for (int64_t j = ks; j < ke; ++j) slot_to_key[fv.slot_of_key[j]] = j;
    std::vector<int64_t> ckeys;
    std::set<int64_t> cset;
    for (int s = 0; s < K; ++s) {
      const int64_t x = cand.index[i * K + s];
      if (x == -1) continue;
      int64_t j;
      if (cand.index_base == ref::IndexBase::kRelative) {
        j = ks + x;
      } else if (fv.paged) {
        auto it = slot_to_key.find(x);
        j = it == slot_to_key.end() ? -1 : it->second;
      } else {
        j = x;
      }
      if (x < 0 || j < ks || j >= ke) {
        if (v.valid) diag << "slot " << s << " holds " << x << ", not a visible key (visible: [" << ks << ", " << ke << ")); ";
        v.valid = false;
        continue;
      }
      if (!cset.insert(j).second) {
        if (v.valid) diag << "slot " << s << ": key " << j - ks << " selected twice; ";
        v.valid = false;
        continue;
      }
      ckeys.push_back(j);
    }
    // Reference set and its K-th score.
    std::vector<int64_t> rkeys;
    std::vector<float> rscores;
    for (int s = 0; s < K; ++s) {
      if (r_index[s] < 0) break;
      rkeys.push_back(ks + r_index[s]);
      rscores.push_back(r_score[s]);
    }
    const std::set<int64_t> rset(rkeys.begin(), rkeys.end());
    const bool full = static_cast<int>(rkeys.size()) == K;
    const float kth = full ? rscores.back() : -INFINITY;
    int64_t hit = 0;
    for (int64_t j : ckeys) hit += rset.count(j);
    v.recall = rkeys.empty() ? 1.0 : static_cast<double>(hit) / rkeys.size();
    v.exact = v.valid && cset == rset;
    // Tie-tolerant: same multiset of reference scores.
    std::vector<float> cs;
    for (int64_t j : ckeys) cs.push_back(lrow[j]);
    std::vector<float> rs = rscores;
    std::sort(cs.begin(), cs.end());
    std::sort(rs.begin(), rs.end());
    v.tie_tolerant = v.valid && cs == rs;
    // Bound-aware: keys within the drift bound of the K-th score are interchangeable.
    // MISA-dagger: stage-1 membership within the bound of the K1-th MISA score is undecided too
    // (possible[j]: may be in the candidate's stage-1 set; certain[j]: must be).
    std::vector<char> possible, certain;
    auto hisa_classes = [&]() -> Status {
      ref::HisaBlockScores hb;
      INDEXLAB_RETURN_IF_ERROR(ref::hisa_block_scores(sub, p.options, static_cast<int64_t>(t), &hb));
      const int64_t nb = static_cast<int64_t>(hb.blocks.size());
      const int64_t m = p.options.hisa_m;
      const bool plus = p.options.hisa_topm_plus_ends;
      std::vector<char> bpos(static_cast<size_t>(nb), 1), bcert(static_cast<size_t>(nb), 1);
      if (nb > m || plus) {
        const double u = 0x1p-24;
        std::vector<double> bb(static_cast<size_t>(nb));
        for (int64_t b = 0; b < nb; ++b) {
          const double J = std::fabs(static_cast<double>(hb.score[b]));
          bb[b] = o.tolerance.dot_rel * hb.abs_dot[b] + o.tolerance.epi_rel * hb.relu_sum[b] + hb.pool_flip[b] +
                  o.tolerance.abs_floor + 2 * u * J + (p.options.hisa_bf16_block_scores ? 0x1p-8 * J : 0.0);
        }
        std::vector<int64_t> pool;
        for (int64_t b = plus ? 0 : 1; b < (plus ? nb : nb - 1); ++b) pool.push_back(b);
        const int64_t slots = plus ? m : m - 2;
        std::sort(pool.begin(), pool.end(), [&](int64_t a, int64_t b) {
          return ref::ranks_before(hb.score[a], a, hb.score[b], b);
        });
        for (int64_t r = 0; r < static_cast<int64_t>(pool.size()); ++r) {
          const int64_t b = pool[r];
          const double J = hb.score[b];
          bool pos = r < slots, cert = r < slots;
          if (static_cast<int64_t>(pool.size()) > slots) {
            if (slots > 0) {
              const int64_t last = pool[slots - 1];
              pos = pos || J + bb[b] >= hb.score[last] - bb[last];
            }
            const int64_t out = pool[slots];
            cert = cert && J - bb[b] > hb.score[out] + bb[out];
          }
          bpos[b] = pos;
          bcert[b] = cert;
        }
        if (nb > 0) bpos[0] = bcert[0] = bpos[nb - 1] = bcert[nb - 1] = 1;  // first and last: always kept
      }
      possible.assign(static_cast<size_t>(ke - ks), 0);
      certain.assign(static_cast<size_t>(ke - ks), 0);
      for (int64_t b = 0; b < nb; ++b)
        for (int64_t j = hb.blocks[b].vis0; j < hb.blocks[b].vis1; ++j) {
          possible[j - ks] = bpos[b];
          certain[j - ks] = bcert[b];
        }
      return Status::Ok();
    };
    // Which keys may (possible) and must (certain) be among the candidate's scored keys.
    auto stage_classes = [&]() -> Status {
      if (!possible.empty() || !staged) return Status::Ok();
      if (hisa_dec) return hisa_classes();
      if (!m_logits) {
        INDEXLAB_RETURN_IF_ERROR(stage_refs());
        m_logits = &r_misa.logits[t * r_misa.logits_cols];
        m_index = &r_misa.index[t * k1];
        m_score = &r_misa.score[t * k1];
        m_bound = &r_misa.bound[t * k1];
      }
      // MISA scores sum over the active heads: their drift bound covers those only.
      const std::vector<double> b = bounds(t, heads_used, nh);
      const float* mrow = m_logits;
      int64_t n1 = 0;
      while (n1 < k1 && m_index[n1] >= 0) ++n1;
      const bool full1 = n1 == k1;
      const float k1th = full1 ? m_score[n1 - 1] : -INFINITY;
      const double kb1 = full1 ? b[m_index[n1 - 1]] + m_bound[n1 - 1] : 0.0;
      const double u = 0x1p-24;
      possible.assign(static_cast<size_t>(ke - ks), 0);
      certain.assign(static_cast<size_t>(ke - ks), 0);
      for (int64_t j = ks; j < ke; ++j) {
        const double sc = mrow[j];
        if (!(sc > -INFINITY)) continue;
        const double bj = b[j - ks] + u * std::fabs(sc) + u * std::fabs(k1th) + kb1;
        possible[j - ks] = !full1 || sc + bj >= k1th;
        certain[j - ks] = !full1 || sc - bj > k1th;
      }
      return Status::Ok();
    };
    if (!routing_ok) {
      v.exact = false;
      v.tie_tolerant = false;
      v.bound_aware = false;
    } else if (v.exact) {
      v.bound_aware = true;
    } else if (staged && v.valid) {
      // Accept the selection when it is a bound-aware top K, by DSA score, of some candidate set
      // S with certain <= S <= possible (dagger: the top K1; HISA: the keys of the kept blocks).
      INDEXLAB_RETURN_IF_ERROR(stage_classes());
      INDEXLAB_RETURN_IF_ERROR(stage_refs());
      const std::vector<double> b = bounds(t);
      const float* drow = &r_dsa.logits[t * r_dsa.logits_cols];
      const double u = 0x1p-24;
      bool ok = true;
      int64_t n_certain = 0, n_possible = 0;
      for (int64_t j = ks; j < ke; ++j) {
        n_certain += certain[j - ks];
        n_possible += possible[j - ks];
      }
      const int64_t n = static_cast<int64_t>(ckeys.size());
      if (n < std::min<int64_t>(K, n_certain) || n > std::min<int64_t>(K, n_possible)) ok = false;
      double kth_c = INFINITY, kb_c = 0.0;  // the candidate's own K-th, by reference DSA score
      for (int64_t j : ckeys) {
        if (!possible[j - ks]) ok = false;
        if (drow[j] < kth_c) {
          kth_c = drow[j];
          kb_c = b[j - ks];
        }
      }
      for (int64_t j = ks; j < ke && ok; ++j) {
        if (!certain[j - ks] || cset.count(j)) continue;
        if (n < K) {
          ok = false;  // fewer than K kept, yet a certain stage-1 key is left out
        } else {
          const double sc = drow[j];
          const double bj = b[j - ks] + u * std::fabs(sc) + u * std::fabs(kth_c);
          if (sc - bj > kth_c + kb_c) ok = false;
        }
      }
      v.bound_aware = ok;
    } else if (v.valid && ckeys.size() == rkeys.size()) {
      const std::vector<double> b = bounds(t);
      const size_t kth_pos = rkeys.empty() ? 0 : rkeys.size() - 1;
      const double kb = rkeys.empty() ? 0.0 : b[rkeys[kth_pos] - ks] + r_bound[kth_pos];
      bool ok = true;
      const double u = 0x1p-24;
      for (int64_t j = ks; j < ke && ok; ++j) {
        const double sc = lrow[j];
        const double bj = b[j - ks] + u * std::fabs(sc) + u * std::fabs(kth);
        if (!full) {
          // Fewer than K qualify: every qualifying key must be chosen.
          if (sc > -INFINITY && !cset.count(j)) ok = false;
        } else if (sc - bj > kth + kb && !cset.count(j)) {
          ok = false;
        } else if (cset.count(j) && !(sc + bj >= kth - kb)) {
          ok = false;
        }
      }
      v.bound_aware = ok;
    }
    if (!v.exact) {
      std::vector<int64_t> missing, extra;
      for (int64_t j : rkeys)
        if (!cset.count(j)) missing.push_back(j);
      for (int64_t j : ckeys)
        if (!rset.count(j)) extra.push_back(j);
      if (ckeys.size() != rkeys.size())
        diag << ckeys.size() << " keys selected, reference has " << rkeys.size() << "; ";
      if (full) {
        diag << "K-th score " << fmt(kth) << "; ";
      } else {
        diag << "fewer than K keys qualify, so all " << rkeys.size() << " must be selected; ";
      }
      auto gap = [&](float sc) {
        if (!full || !(sc > -INFINITY)) return std::string();
        return ", " + std::to_string(ref::ulp_distance(sc, kth)) + " ulps from the K-th";
      };
      for (size_t m = 0; m < std::min<size_t>(3, missing.size()); ++m) {
        const float sc = lrow[missing[m]];
        diag << "missing key " << missing[m] - ks << " (score " << fmt(sc) << gap(sc) << "); ";
      }
      for (size_t m = 0; m < std::min<size_t>(3, extra.size()); ++m) {
        const float sc = lrow[extra[m]];
        if (staged && !(sc > -INFINITY)) {
          INDEXLAB_RETURN_IF_ERROR(stage_refs());
          const float d = r_dsa.logits[t * r_dsa.logits_cols + extra[m]];
          diag << "extra key " << extra[m] - ks << " (outside the reference's candidates; DSA score " << fmt(d)
               << gap(d) << "); ";
        } else {
          diag << "extra key " << extra[m] - ks << " (score " << fmt(sc) << gap(sc) << "); ";
        }
      }
      if (missing.size() > 3 || extra.size() > 3)
        diag << missing.size() << " missing and " << extra.size() << " extra in all; ";
    }
    v.diagnosis = diag.str();
    ss.exact += v.exact;
    ss.tie_tolerant += v.tie_tolerant;
    ss.bound_aware += v.bound_aware;
    ss.invalid += !v.valid;
    ss.min_recall = std::min(ss.min_recall, v.recall);
    recall_sum += v.recall;
    verdicts.push_back(std::move(v));

    if (ls.present) {
      const float* crow = &cand.logits[i * cols];
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t j = c + fv.col_base[i];
        float r = (j >= 0 && j < in.shape.nk) ? lrow[j] : -INFINITY;
        const float x = crow[c];
        const bool cand_in = x != -INFINITY, ref_in = r != -INFINITY;
        if (staged && j >= ks && j < ke && cand_in != ref_in) {
          // A key whose membership of the candidate set is undecided may be -inf on either side;
          // the candidate's value of one it kept is compared with the key's DSA score.
          INDEXLAB_RETURN_IF_ERROR(stage_classes());
          if (cand_in ? possible[j - ks] : !certain[j - ks]) {
            ++ls.decision_cells;
            if (!cand_in) continue;
            INDEXLAB_RETURN_IF_ERROR(stage_refs());
            r = r_dsa.logits[t * r_dsa.logits_cols + j];
          }
        }
        const bool rinf = r == -INFINITY, xinf = x == -INFINITY;
        if (rinf != xinf || std::isnan(x) != std::isnan(r)) {
          if (ls.inf_mismatches++ == 0) {
            ls.first_inf_mismatch = "row " + std::to_string(i) + " column " + std::to_string(c) +
                                    ": reference " + fmt(r) + ", candidate " + fmt(x);
          }
          continue;
        }
        if (rinf || std::isnan(r)) continue;
        ++ls.compared;
        const double ad = std::fabs(static_cast<double>(x) - r);
        ls.max_abs = std::max(ls.max_abs, ad);
        if (r != 0.0f) ls.max_rel = std::max(ls.max_rel, ad / std::fabs(static_cast<double>(r)));
        const uint64_t ul = ref::ulp_distance(x, r);
        if (ul > ls.max_ulp) {
          ls.max_ulp = ul;
          ls.worst = "row " + std::to_string(i) + " column " + std::to_string(c) + ": reference " +
                     fmt(r) + ", candidate " + fmt(x);
        }
        bit_exact += std::memcmp(&x, &r, sizeof(float)) == 0;
        sxy += static_cast<double>(x) * r;
        sxx += static_cast<double>(x) * x + static_cast<double>(r) * r;
      }
    }
  }
  ss.mean_recall = rows.empty() ? 1.0 : recall_sum / rows.size();
  if (ls.present) {
    ls.frac_bit_exact = ls.compared ? static_cast<double>(bit_exact) / ls.compared : 1.0;
    ls.deepgemm_diff = sxx > 0.0 ? 1.0 - 2.0 * sxy / sxx : 0.0;
  }
  std::stable_sort(verdicts.begin(), verdicts.end(), [](const RowVerdict& a, const RowVerdict& b) {
    if (a.valid != b.valid) return !a.valid;
    if (a.recall != b.recall) return a.recall < b.recall;
    return a.bound_aware < b.bound_aware;
  });
  for (const RowVerdict& v : verdicts) {
    if (static_cast<int>(ss.worst.size()) >= o.worst_rows) break;
    if (!v.exact) ss.worst.push_back(v);
  }
  *out = std::move(rep);
  return Status::Ok();
}

nlohmann::json Report::to_json() const {
  nlohmann::json j;
  j["problem"] = problem;
  j["candidate"] = candidate;
  auto& s = j["selection"];
  s["rows_total"] = selection.rows_total;
  s["rows_judged"] = selection.rows_judged;
  s["exact"] = selection.exact;
  s["tie_tolerant"] = selection.tie_tolerant;
  s["bound_aware"] = selection.bound_aware;
  s["invalid"] = selection.invalid;
  s["min_recall"] = selection.min_recall;
  s["mean_recall"] = selection.mean_recall;
  s["worst"] = nlohmann::json::array();
  for (const RowVerdict& v : selection.worst) {
    s["worst"].push_back({{"row", v.row}, {"recall", v.recall}, {"valid", v.valid},
                          {"tie_tolerant", v.tie_tolerant}, {"bound_aware", v.bound_aware},
                          {"reference_ambiguous", v.ref_ambiguous}, {"diagnosis", v.diagnosis}});
  }
  if (logits.present) {
    auto& l = j["logits"];
    l["inf_mismatches"] = logits.inf_mismatches;
    l["decision_cells"] = logits.decision_cells;
    l["first_inf_mismatch"] = logits.first_inf_mismatch;
    l["compared"] = logits.compared;
    l["max_abs"] = logits.max_abs;
    l["max_rel"] = logits.max_rel;
    l["max_ulp"] = logits.max_ulp;
    l["frac_bit_exact"] = logits.frac_bit_exact;
    l["deepgemm_diff"] = logits.deepgemm_diff;
    l["worst"] = logits.worst;
  }
  j["rerouted_rows"] = rerouted_rows;
  if (reruns > 0) {
    j["determinism"] = {{"reruns", reruns}, {"bitwise_identical", deterministic}, {"detail", determinism_detail}};
  }
  return j;
}

}  // namespace indexlab::compare
