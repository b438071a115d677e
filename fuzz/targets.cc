/// Fuzz targets: the reference identities (CPU against itself), the exact oracle against the sm90
/// kernel emulation, and candidates of a registry (see campaign.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "fuzz/campaign.h"
#include "reference/emulate_sm90_dsa.h"
#include "reference/scoring.h"

namespace indexlab::fuzz {
namespace {

using compare::CandidateOutput;
using compare::Problem;

Status reference_output(const Problem& p, CandidateOutput* out) {
  ref::Options o = p.options;
  o.want_logits = true;
  ref::Result r;
  INDEXLAB_RETURN_IF_ERROR(compare::run_reference(p, o, &r));
  *out = compare::to_candidate_output(std::move(r), p.options.index_base);
  return Status::Ok();
}

/// Longest visible range of any row.
Status max_visible(const Problem& p, int64_t* out) {
  int64_t m = 0;
  if (p.paged) {
    const ref::PagedInputs& g = p.paged_in;
    for (int64_t b = 0; b < g.batch; ++b) m = std::max<int64_t>(m, g.context_lens[b]);
  } else {
    for (int64_t i = 0; i < p.flat.shape.nq; ++i) m = std::max<int64_t>(m, p.flat.ke[i] - p.flat.ks[i]);
  }
  *out = m;
  return Status::Ok();
}

bool is_dsa(const Problem& p, std::string* why) {
  if (p.path == ref::Path::kDsa) return true;
  if (why) *why = "identity targets take DSA problems";
  return false;
}

Target identity_base(const std::string& name, const std::string& description) {
  Target t;
  t.name = name;
  t.candidate.name = name;
  t.candidate.description = description;
  t.candidate.tolerance = "exact";
  t.candidate.supports = is_dsa;
  t.gen = tiny_config();
  t.gen.paths = {ref::Path::kDsa};
  t.require_exact = true;
  t.max_logit_ulp = 0;
  t.isolate = false;
  return t;
}

/// HISA with at most m eligible blocks equals DSA (SPEC 4.7).
Target hisa_few_blocks() {
  Target t = identity_base("identity.hisa_few_blocks", "HISA with every block kept (<= m blocks) against DSA");
  t.candidate.run = [](const Problem& p, CandidateOutput* out) {
    int64_t len = 0;
    INDEXLAB_RETURN_IF_ERROR(max_visible(p, &len));
    Problem h = p;
    h.path = ref::Path::kHisa;
    const int64_t m = 2 + (len + p.k()) % 5;
    int64_t b = std::max<int64_t>({1, (len + m - 1) / m, (p.k() + m - 1) / m});
    h.options.hisa_m = static_cast<int>(m);
    h.options.hisa_block = static_cast<int>(b);
    h.options.align = ref::BlockAlign::kSequence;
    h.options.hisa_topm_plus_ends = false;
    return reference_output(h, out);
  };
  return t;
}

/// own_key routing is defined for paged problems with next_n = 1 only: elsewhere a routed
/// identity falls back to pooled routing.
void keep_routing_legal(Problem* m) {
  if (m->paged && m->paged_in.next_n != 1 && m->options.routing == ref::Routing::kOwnKey)
    m->options.routing = ref::Routing::kPooled;
}

/// MISA with h = H equals DSA (SPEC 5.7).
Target misa_all_heads() {
  Target t = identity_base("identity.misa_all_heads", "MISA with every head active against DSA");
  t.candidate.run = [](const Problem& p, CandidateOutput* out) {
    Problem m = p;
    m.path = ref::Path::kMisa;
    m.options.misa_heads = p.h();
    keep_routing_legal(&m);
    return reference_output(m, out);
  };
  return t;
}

/// MISA-dagger with K1 >= the visible keys equals DSA (SPEC 6).
Target dagger_large_k1() {
  Target t = identity_base("identity.dagger_large_k1", "MISA-dagger with K1 >= visible keys against DSA");
  t.candidate.run = [](const Problem& p, CandidateOutput* out) {
    int64_t len = 0;
    INDEXLAB_RETURN_IF_ERROR(max_visible(p, &len));
    Problem m = p;
    m.path = ref::Path::kMisaDagger;
    m.options.dagger_k1 = std::max<int64_t>(p.k(), len) + len % 3;
    m.options.misa_heads = std::clamp(m.options.misa_heads, 1, p.h());
    keep_routing_legal(&m);
    return reference_output(m, out);
  };
  return t;
}

/// A paged problem decoded by the fuzzer's own reader and run flat equals the paged reference.
Target paged_vs_flat() {
  Target t = identity_base("identity.paged_vs_flat", "paged decode laid out flat by an independent reader");
  t.gen.paths = {ref::Path::kDsa, ref::Path::kHisa, ref::Path::kMisa, ref::Path::kMisaDagger};
  t.gen.flat = false;
  t.gen.paged = true;
  t.candidate.supports = [](const Problem& p, std::string* why) {
    if (p.paged) return true;
    if (why) *why = "takes paged problems";
    return false;
  };
  t.candidate.run = [](const Problem& p, CandidateOutput* out) {
    const ref::PagedInputs& g = p.paged_in;
    INDEXLAB_RETURN_IF_ERROR(ref::validate(g, p.options));
    PagedParts parts;
    INDEXLAB_RETURN_IF_ERROR(unpack_paged(g, &parts));
    ref::Inputs f;
    f.precision = g.precision;
    int64_t total = 0;
    for (const auto& s : parts.scales) total += static_cast<int64_t>(s.size());
    f.shape = ref::Shape{g.rows(), total, g.h, g.d, g.k};
    f.q = g.q;
    f.w = g.w;
    f.q_scale = g.q_scale;
    std::vector<int64_t> off(g.batch + 1, 0);
    for (int64_t b = 0; b < g.batch; ++b) {
      f.k.insert(f.k.end(), parts.keys[b].begin(), parts.keys[b].end());
      f.k_scale.insert(f.k_scale.end(), parts.scales[b].begin(), parts.scales[b].end());
      off[b + 1] = off[b] + static_cast<int64_t>(parts.scales[b].size());
    }
    for (int64_t row = 0; row < g.rows(); ++row) {
      const int64_t b = row / g.next_n, r = row % g.next_n, ctx = g.context_lens[b];
      const int64_t last = ctx - g.next_n + r;  // the last position this row sees
      const int64_t vis = std::clamp<int64_t>(last + 1, 0, ctx);
      f.ks.push_back(static_cast<int32_t>(off[b]));
      f.ke.push_back(static_cast<int32_t>(off[b] + vis));
      f.seq_end.push_back(static_cast<int32_t>(off[b + 1]));
      f.block_origin.push_back(static_cast<int32_t>(off[b]));  // release blocks restart per sequence
    }
    ref::Options o = p.options;
    o.index_base = ref::IndexBase::kRelative;
    o.want_logits = true;
    ref::Result r;
    INDEXLAB_RETURN_IF_ERROR(ref::run(p.path, f, o, &r));
    out->nq = r.nq;
    out->k = r.k;
    out->index_base = p.options.index_base;
    out->index = r.index;
    if (p.options.index_base == ref::IndexBase::kAbsolute) {
      for (int64_t row = 0; row < r.nq; ++row)
        for (int s = 0; s < r.k; ++s) {
          int32_t& x = out->index[row * r.k + s];
          if (x < 0) continue;
          const int64_t b = row / g.next_n;
          x = static_cast<int32_t>(static_cast<int64_t>(g.block_table[b * g.max_pages + x / g.page_tokens]) *
                                       g.page_tokens + x % g.page_tokens);
        }
    }
    // Logits by position: column t of row i is flat key ks[i] + t.
    out->logits_cols = p.logits_cols();
    out->logits.assign(static_cast<size_t>(r.nq * out->logits_cols), -std::numeric_limits<float>::infinity());
    for (int64_t row = 0; row < r.nq; ++row)
      for (int64_t j = f.ks[row]; j < f.ke[row]; ++j)
        out->logits[row * out->logits_cols + (j - f.ks[row])] = r.logits[row * f.shape.nk + j];
    return Status::Ok();
  };
  return t;
}

/// True when some nonzero weight is below 2^-60 or some nonzero q or k value below 2^-100.
bool has_tiny_values(const Problem& p) {
  auto tiny = [](const std::vector<float>& v, float lim) {
    for (float x : v)
      if (x != 0.0f && std::fabs(x) < lim) return true;
    return false;
  };
  const float kW = 0x1p-60f, kV = 0x1p-100f;
  if (p.paged) {
    if (tiny(p.paged_in.w, kW) || tiny(p.paged_in.q, kV)) return true;
    PagedParts parts;
    if (!unpack_paged(p.paged_in, &parts).ok()) return false;
    for (const auto& k : parts.keys)
      if (tiny(k, kV)) return true;
    return false;
  }
  return tiny(p.flat.w, kW) || tiny(p.flat.q, kV) || tiny(p.flat.k, kV);
}

template <typename F>
void for_each_row_heads(Problem* p, F f) {
  std::vector<float>& q = p->paged ? p->paged_in.q : p->flat.q;
  std::vector<float>& w = p->paged ? p->paged_in.w : p->flat.w;
  std::vector<float>& qs = p->paged ? p->paged_in.q_scale : p->flat.q_scale;
  f(q, w, qs);
}

/// Permuting heads changes nothing (up to the reference's own rounding bound).
Target permute_heads() {
  Target t = identity_base("identity.permute_heads", "heads reversed and rotated against the original order");
  t.require_exact = false;          // the fp64 head sum is reordered: bound-aware
  t.max_logit_ulp = UINT64_MAX;
  t.candidate.run = [](const Problem& p, CandidateOutput* out) {
    Problem m = p;
    const int H = p.h(), D = p.d();
    const int64_t rows = p.rows();
    std::vector<int> perm(H);
    for (int h = 0; h < H; ++h) perm[h] = (H - 1 - h + static_cast<int>(rows % H)) % H;
    for_each_row_heads(&m, [&](std::vector<float>& q, std::vector<float>& w, std::vector<float>& qs) {
      const std::vector<float> q0 = q, w0 = w, qs0 = qs;
      for (int64_t i = 0; i < rows; ++i)
        for (int h = 0; h < H; ++h) {
          const int src = perm[h];
          std::copy(q0.begin() + (i * H + src) * D, q0.begin() + (i * H + src + 1) * D, q.begin() + (i * H + h) * D);
          w[i * H + h] = w0[i * H + src];
          if (!qs0.empty()) qs[i * H + h] = qs0[i * H + src];
        }
    });
    return reference_output(m, out);
  };
  return t;
}

/// Scaling w by 2 keeps the selection (and doubles the scores, exactly away from under/overflow).
Target scale_w() {
  Target t = identity_base("identity.scale_w", "w scaled by 2 against the original (all paths)");
  t.gen.paths = {ref::Path::kDsa, ref::Path::kHisa, ref::Path::kMisa, ref::Path::kMisaDagger};
  // Underflow breaks the identity: routing scores E and block scores J are rounded to fp32 before
  // ranking, and tiny weights or values make them subnormal, where doubling changes ties.
  t.candidate.supports = [](const Problem& p, std::string* why) {
    if (has_tiny_values(p)) {
      if (why) *why = "weights or values near the fp32 underflow range";
      return false;
    }
    return true;
  };
  t.require_exact = false;  // fp32 subnormal scores may round differently once doubled
  t.max_logit_ulp = 1;
  t.candidate.run = [](const Problem& p, CandidateOutput* out) {
    Problem m = p;
    for_each_row_heads(&m, [](std::vector<float>&, std::vector<float>& w, std::vector<float>&) {
      for (auto& x : w) x *= 2.0f;
    });
    INDEXLAB_RETURN_IF_ERROR(reference_output(m, out));
    for (auto& x : out->logits) x *= 0.5f;
    return Status::Ok();
  };
  return t;
}

/// The bit-exact emulation of the sm90 fp8 DSA kernel, judged against the exact oracle with the
/// tensor-core tolerance (bound-aware); the -inf pattern must match exactly.
Target oracle_vs_emulation() {
  Target t = identity_base("oracle_vs_emulation", "sm90 fp8 DSA kernel emulation against the exact oracle");
  t.candidate.tolerance = "tensor_core";
  t.require_exact = false;
  t.max_logit_ulp = UINT64_MAX;
  t.gen.precisions = {ref::Precision::kFp8};
  t.gen.h_choices = {8, 16};
  t.gen.max_d = 128;
  t.candidate.supports = [](const Problem& p, std::string* why) {
    if (p.path != ref::Path::kDsa || p.precision() != ref::Precision::kFp8 || p.h() % 8 != 0) {
      if (why) *why = "fp8 DSA with h a multiple of 8 only";
      return false;
    }
    return true;
  };
  t.candidate.run = [](const Problem& p, CandidateOutput* out) {
    std::vector<float> logits;
    compare::FlatView fv;
    INDEXLAB_RETURN_IF_ERROR(compare::flat_view(p, &fv));
    if (p.paged) {
      INDEXLAB_RETURN_IF_ERROR(ref::emulate_sm90_paged_logits(p.paged_in, &logits, p.options.threads));
    } else {
      INDEXLAB_RETURN_IF_ERROR(ref::emulate_sm90_dsa_logits(p.flat, &logits, p.options.threads));
    }
    const int64_t rows = p.rows(), cols = p.logits_cols();
    const int K = p.k();
    if (static_cast<int64_t>(logits.size()) != rows * cols) return error("emulation returned ", logits.size(), " logits");
    out->nq = rows;
    out->k = K;
    out->index_base = p.options.index_base;
    out->index.assign(static_cast<size_t>(rows * K), -1);
    std::vector<ref::Scored> cand;
    std::vector<int32_t> idx(K);
    std::vector<float> sc(K), bd(K);
    for (int64_t i = 0; i < rows; ++i) {
      cand.clear();
      const int64_t ks = fv.in.ks[i], ke = fv.in.ke[i];
      for (int64_t j = ks; j < ke; ++j) {
        const int64_t col = j - fv.col_base[i];
        cand.push_back(ref::Scored{logits[i * cols + col], 0.0f, static_cast<int32_t>(j), 0});
      }
      ref::select_top_k(&cand, K, 0, idx.data(), sc.data(), bd.data());
      for (int s = 0; s < K; ++s) {
        const int32_t j = idx[s];
        if (j < 0) continue;
        int64_t v = j - ks;
        if (p.options.index_base == ref::IndexBase::kAbsolute) v = p.paged ? fv.slot_of_key[j] : j;
        out->index[i * K + s] = static_cast<int32_t>(v);
      }
    }
    out->logits_cols = cols;
    out->logits = std::move(logits);
    return Status::Ok();
  };
  return t;
}

}  // namespace

const std::vector<std::string>& identity_target_names() {
  static const std::vector<std::string> v = {"identity.hisa_few_blocks", "identity.misa_all_heads",
                                             "identity.dagger_large_k1", "identity.paged_vs_flat",
                                             "identity.permute_heads",   "identity.scale_w",
                                             "oracle_vs_emulation"};
  return v;
}

Status make_target(const std::string& name, const compare::Registry& reg, Target* out) {
  if (name == "identity.hisa_few_blocks") *out = hisa_few_blocks();
  else if (name == "identity.misa_all_heads") *out = misa_all_heads();
  else if (name == "identity.dagger_large_k1") *out = dagger_large_k1();
  else if (name == "identity.paged_vs_flat") *out = paged_vs_flat();
  else if (name == "identity.permute_heads") *out = permute_heads();
  else if (name == "identity.scale_w") *out = scale_w();
  else if (name == "oracle_vs_emulation") *out = oracle_vs_emulation();
  else {
    const compare::Candidate* c = reg.find(name);
    if (!c) {
      std::string known;
      for (const std::string& n : reg.names()) known += " " + n;
      for (const std::string& n : identity_target_names()) known += " " + n;
      return error("fuzz: no target named '", name, "' (known:", known, ")");
    }
    Target t;
    t.name = name;
    t.candidate = *c;
    t.reruns = 2;
    t.isolate = true;
    // The reference candidates compute one path each: draw only that path.
    for (ref::Path p : {ref::Path::kDsa, ref::Path::kHisa, ref::Path::kMisa, ref::Path::kMisaDagger})
      if (name == std::string("ref.") + ref::path_name(p)) t.gen.paths = {p};
    if (c->needs_gpu) {
      t.gen.paths = {ref::Path::kDsa};
      t.gen.precisions = {ref::Precision::kFp8};
    }
    *out = std::move(t);
  }
  return Status::Ok();
}

}  // namespace indexlab::fuzz
