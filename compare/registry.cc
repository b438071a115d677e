/// The candidate registry and the run-judge loop (see registry.h).
#include "compare/registry.h"

#include <algorithm>

#include "cuda/api.h"
#include "cuda/sparse.h"
#include "reference/emulate_sm90_dsa.h"
#include "reference/emulate_sm90_sparse.h"
#include "reference/scoring.h"

namespace indexlab::compare {

Registry& Registry::global() {
  static Registry r;
  return r;
}

Status Registry::add(Candidate c) {
  if (c.name.empty()) return error("registry: a candidate needs a name");
  if (!c.run) return error("registry: candidate '", c.name, "' has no run function");
  if (find(c.name)) return error("registry: a candidate named '", c.name, "' is already registered");
  if (!c.supports) c.supports = [](const Problem&, std::string*) { return true; };
  items_.push_back(std::make_unique<Candidate>(std::move(c)));
  return Status::Ok();
}

const Candidate* Registry::find(const std::string& name) const {
  for (const auto& c : items_)
    if (c->name == name) return c.get();
  return nullptr;
}

std::vector<const Candidate*> Registry::all() const {
  std::vector<const Candidate*> v;
  for (const auto& c : items_) v.push_back(c.get());
  return v;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> v;
  for (const auto& c : items_) v.push_back(c->name);
  return v;
}

namespace {

/// What the sm90 DSA kernels (and their emulation) handle: fp8 DSA, the head counts, dims and K
/// of cuda::can_implement, and 64-token pages.
bool sm90_dsa_supports(const Problem& p, std::string* why) {
  Status st = Status::Ok();
  if (p.path != ref::Path::kDsa) {
    st = error("computes dsa only");
  } else if (p.precision() != ref::Precision::kFp8) {
    st = error("fp8 only");
  } else if (p.paged && p.paged_in.page_tokens != 64) {
    st = error("page_tokens = ", p.paged_in.page_tokens, " is not supported (need 64)");
  } else {
    st = cuda::can_implement(p.h(), p.d(), p.k());
  }
  if (!st.ok() && why) *why = st.message();
  return st.ok();
}

/// What the sm90 HISA / MISA / MISA-dagger kernels (and their emulations) handle: fp8 problems of
/// their own path that cuda::can_implement_sparse accepts.
bool sm90_sparse_supports(ref::Path path, const Problem& p, std::string* why) {
  Status st = Status::Ok();
  if (p.path != path) {
    st = error("computes ", ref::path_name(path), " only, the problem asks for ", ref::path_name(p.path));
  } else if (p.precision() != ref::Precision::kFp8) {
    st = error("fp8 only");
  } else {
    st = p.paged ? cuda::can_implement_sparse(path, p.paged_in, p.options)
                 : cuda::can_implement_sparse(path, p.flat, p.options);
  }
  if (!st.ok() && why) *why = st.message();
  return st.ok();
}

using FlatFn = Status (*)(const ref::Inputs&, const ref::Options&, ref::Result*);
using PagedFn = Status (*)(const ref::PagedInputs&, const ref::Options&, ref::Result*);

/// A candidate that runs one flat / paged pair of entry points with want_logits.
Candidate sparse_candidate(ref::Path path, const std::string& name, const std::string& what, FlatFn flat,
                           PagedFn paged) {
  Candidate c;
  c.name = name;
  c.description = what;
  c.tolerance = "tensor_core";
  c.supports = [path](const Problem& p, std::string* why) { return sm90_sparse_supports(path, p, why); };
  c.run = [flat, paged](const Problem& p, CandidateOutput* out) {
    ref::Result res;
    ref::Options o = p.options;
    o.want_logits = true;
    INDEXLAB_RETURN_IF_ERROR(p.paged ? paged(p.paged_in, o, &res) : flat(p.flat, o, &res));
    *out = to_candidate_output(std::move(res), p.options.index_base);
    return Status::Ok();
  };
  return c;
}

}  // namespace

void register_builtin(Registry* r) {
  for (ref::Path path : {ref::Path::kDsa, ref::Path::kHisa, ref::Path::kMisa, ref::Path::kMisaDagger}) {
    const std::string name = std::string("ref.") + ref::path_name(path);
    if (r->find(name)) continue;
    Candidate c;
    c.name = name;
    c.description = std::string("CPU reference of ") + ref::path_name(path) + " (exact fp64 oracle)";
    c.supports = [path](const Problem& p, std::string* why) {
      if (p.path == path) return true;
      if (why) *why = std::string("computes ") + ref::path_name(path) + ", the problem asks for " + ref::path_name(p.path);
      return false;
    };
    c.run = [](const Problem& p, CandidateOutput* out) {
      ref::Result res;
      ref::Options o = p.options;
      o.want_logits = true;
      INDEXLAB_RETURN_IF_ERROR(run_reference(p, o, &res));
      *out = to_candidate_output(std::move(res), p.options.index_base);
      return Status::Ok();
    };
    (void)r->add(std::move(c));
  }
  if (!r->find("emu.sm90_dsa")) {
    // The Hopper kernel's arithmetic, emulated bit for bit on the CPU: runs anywhere, and shows
    // what the tensor-core truncation does to the selection against the exact oracle.
    Candidate c;
    c.name = "emu.sm90_dsa";
    c.description = "CPU emulation of cuda.dsa's fp8 arithmetic (measured wgmma model, kernel epilogue order)";
    c.tolerance = "tensor_core";
    c.supports = sm90_dsa_supports;
    c.run = [](const Problem& p, CandidateOutput* out) {
      FlatView fv;
      INDEXLAB_RETURN_IF_ERROR(flat_view(p, &fv));
      std::vector<float> logits;
      INDEXLAB_RETURN_IF_ERROR(p.paged ? ref::emulate_sm90_paged_logits(p.paged_in, &logits)
                                       : ref::emulate_sm90_dsa_logits(p.flat, &logits));
      const int64_t nq = fv.in.shape.nq, cols = p.logits_cols();
      const int K = p.k();
      CandidateOutput c;
      c.nq = nq;
      c.k = K;
      c.index_base = p.options.index_base;
      c.index.assign(nq * K, -1);
      std::vector<ref::Scored> row;
      std::vector<float> score(K), bound(K);
      for (int64_t i = 0; i < nq; ++i) {
        row.clear();
        for (int64_t col = 0; col < cols; ++col) {
          const float x = logits[i * cols + col];
          if (x > -INFINITY) row.push_back(ref::Scored{x, 0.0f, static_cast<int32_t>(col), 0});
        }
        // Columns are keys (flat) or positions (paged); relative indices subtract ks (flat only).
        const int32_t off = (!p.paged && p.options.index_base == ref::IndexBase::kRelative) ? fv.in.ks[i] : 0;
        ref::select_top_k(&row, K, off, &c.index[i * K], score.data(), bound.data());
        if (p.paged && p.options.index_base == ref::IndexBase::kAbsolute)
          for (int t = 0; t < K; ++t)
            if (c.index[i * K + t] >= 0)
              c.index[i * K + t] = static_cast<int32_t>(fv.slot_of_key[fv.in.ks[i] + c.index[i * K + t]]);
      }
      c.logits_cols = cols;
      c.logits = std::move(logits);
      *out = std::move(c);
      return Status::Ok();
    };
    (void)r->add(std::move(c));
  }
  if (cuda::built_with_cuda() && !r->find("cuda.dsa")) {
    Candidate c;
    c.name = "cuda.dsa";
    c.description = "Hopper fp8 DSA: wgmma logits and deterministic radix top-k (flat and paged)";
    c.needs_gpu = true;
    c.tolerance = "tensor_core";
    c.supports = sm90_dsa_supports;
    c.run = [](const Problem& p, CandidateOutput* out) {
      std::string why;
      if (!cuda::device_available(&why)) return error("no usable GPU: ", why);
      ref::Result res;
      ref::Options o = p.options;
      o.want_logits = true;
      INDEXLAB_RETURN_IF_ERROR(p.paged ? cuda::dsa_paged_fp8(p.paged_in, o, &res) : cuda::dsa_fp8(p.flat, o, &res));
      *out = to_candidate_output(std::move(res), p.options.index_base);
      return Status::Ok();
    };
    (void)r->add(std::move(c));
  }
  // The sparse paths: the kernels' arithmetic emulated on the CPU (runs anywhere), and the
  // kernels themselves when built with CUDA.
  struct SparseEntry {
    ref::Path path;
    const char* tag;
    FlatFn emu_flat;
    PagedFn emu_paged;
    FlatFn gpu_flat;
    PagedFn gpu_paged;
  };
  const SparseEntry entries[] = {
      {ref::Path::kHisa, "hisa", ref::emulate_sm90_hisa, ref::emulate_sm90_hisa_paged, cuda::hisa_fp8,
       cuda::hisa_paged_fp8},
      {ref::Path::kMisa, "misa", ref::emulate_sm90_misa, ref::emulate_sm90_misa_paged, cuda::misa_fp8,
       cuda::misa_paged_fp8},
      {ref::Path::kMisaDagger, "misa_dagger", ref::emulate_sm90_misa_dagger,
       ref::emulate_sm90_misa_dagger_paged, cuda::misa_dagger_fp8, cuda::misa_dagger_paged_fp8},
  };
  for (const SparseEntry& e : entries) {
    const std::string emu = std::string("emu.sm90_") + e.tag;
    if (!r->find(emu))
      (void)r->add(sparse_candidate(e.path, emu,
                                    std::string("CPU emulation of cuda.") + e.tag + "'s fp8 arithmetic, bit for bit",
                                    e.emu_flat, e.emu_paged));
    const std::string gpu = std::string("cuda.") + e.tag;
    if (cuda::built_with_cuda() && !r->find(gpu)) {
      Candidate c = sparse_candidate(e.path, gpu, std::string("Hopper fp8 ") + e.tag + " kernels (flat and paged)",
                                     e.gpu_flat, e.gpu_paged);
      c.needs_gpu = true;
      auto inner = c.run;
      c.run = [inner](const Problem& p, CandidateOutput* out) {
        std::string why;
        if (!cuda::device_available(&why)) return error("no usable GPU: ", why);
        return inner(p, out);
      };
      (void)r->add(std::move(c));
    }
  }
}

Status verify_candidate(const Candidate& c, const Problem& p, JudgeOptions jo, int reruns, Report* out,
                        CandidateOutput* first_output) {
  if (!c.run) return error("candidate '", c.name, "' has no run function");
  std::string why;
  if (c.supports && !c.supports(p, &why)) {
    return error("candidate '", c.name, "' does not support this problem: ", why);
  }
  if (jo.tolerance.name == "exact" && c.tolerance != "exact") {
    INDEXLAB_RETURN_IF_ERROR(tolerance_by_name(c.tolerance, p.h(), p.d(), &jo.tolerance));
  }
  CandidateOutput first;
  INDEXLAB_RETURN_IF_ERROR(c.run(p, &first).with_context("candidate '" + c.name + "': "));
  Report rep;
  INDEXLAB_RETURN_IF_ERROR(judge(p, first, jo, &rep));
  rep.candidate = c.name;
  rep.reruns = std::max(0, reruns - 1);
  for (int t = 1; t < reruns && rep.deterministic; ++t) {
    CandidateOutput again;
    INDEXLAB_RETURN_IF_ERROR(c.run(p, &again).with_context("candidate '" + c.name + "' (rerun): "));
    std::string detail;
    if (!bitwise_equal(first, again, &detail)) {
      rep.deterministic = false;
      rep.determinism_detail = "rerun " + std::to_string(t) + ": " + detail;
    }
  }
  if (first_output) *first_output = std::move(first);
  *out = std::move(rep);
  return Status::Ok();
}

}  // namespace indexlab::compare
