/// Problems and candidate outputs as files (see problem_io.h).
#include "compare/problem_io.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "reference/numerics.h"

namespace indexlab::compare {
namespace {

namespace fs = std::filesystem;

Status values_tensor(const std::vector<float>& v, std::vector<int64_t> shape, ref::Precision p, Tensor* out) {
  if (p == ref::Precision::kFp8) {
    std::vector<uint8_t> codes(v.size());
    for (size_t t = 0; t < v.size(); ++t) codes[t] = ref::float_to_e4m3_satfinite(v[t]);
    return Tensor::from_u8(std::move(shape), codes, out, DType::F8_E4M3);
  }
  if (p == ref::Precision::kBf16) {
    std::vector<uint8_t> bytes(v.size() * 2);
    for (size_t t = 0; t < v.size(); ++t) {
      const uint16_t b = ref::float_to_bf16(v[t]);
      bytes[2 * t] = b & 0xFF;
      bytes[2 * t + 1] = b >> 8;
    }
    return Tensor::from_raw(DType::BF16, std::move(shape), std::move(bytes), out);
  }
  return Tensor::from_f32(std::move(shape), v, out);
}

Status get_f32(const TensorMap& t, const std::string& file, const std::string& name,
               const std::vector<int64_t>& shape, std::vector<float>* out, bool optional = false) {
  if (optional && !t.count(name)) return Status::Ok();
  const Tensor* x = nullptr;
  INDEXLAB_RETURN_IF_ERROR(expect_tensor(t, file, name, shape, &x));
  return x->to_f32(out).with_context(file + ": tensor '" + name + "': ");
}

Status get_i32(const TensorMap& t, const std::string& file, const std::string& name,
               const std::vector<int64_t>& shape, std::vector<int32_t>* out, bool optional = false) {
  if (optional && !t.count(name)) return Status::Ok();
  const Tensor* x = nullptr;
  INDEXLAB_RETURN_IF_ERROR(expect_tensor(t, file, name, shape, &x));
  return x->to_i32(out).with_context(file + ": tensor '" + name + "': ");
}

Status put(TensorMap* m, const std::string& name, Status st, Tensor&& t) {
  INDEXLAB_RETURN_IF_ERROR(st.with_context("tensor '" + name + "': "));
  (*m)[name] = std::move(t);
  return Status::Ok();
}

Status read_text(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return error(path, ": cannot open for reading");
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return Status::Ok();
}

Status write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f) return error(path, ": cannot open for writing");
  f << text;
  if (!f) return error(path, ": write failed");
  return Status::Ok();
}

}  // namespace

Status inputs_to_tensors(const Problem& p, TensorMap* out) {
  TensorMap m;
  Tensor t;
  const ref::Precision prec = p.precision();
  const int64_t H = p.h(), D = p.d();
  if (p.paged) {
    const ref::PagedInputs& g = p.paged_in;
    INDEXLAB_RETURN_IF_ERROR(put(&m, "q", values_tensor(g.q, {g.rows(), H, D}, prec, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "w", Tensor::from_f32({g.rows(), H}, g.w, &t), std::move(t)));
    if (!g.q_scale.empty())
      INDEXLAB_RETURN_IF_ERROR(put(&m, "q_scale", Tensor::from_f32({g.rows(), H}, g.q_scale, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "kv_cache", Tensor::from_u8({g.num_pages, g.page_bytes()}, g.cache, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "block_table", Tensor::from_i32({g.batch, g.max_pages}, g.block_table, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "context_lens", Tensor::from_i32({g.batch}, g.context_lens, &t), std::move(t)));
  } else {
    const ref::Inputs& f = p.flat;
    const int64_t nq = f.shape.nq, nk = f.shape.nk;
    INDEXLAB_RETURN_IF_ERROR(put(&m, "q", values_tensor(f.q, {nq, H, D}, prec, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "k", values_tensor(f.k, {nk, D}, prec, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "w", Tensor::from_f32({nq, H}, f.w, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "ks", Tensor::from_i32({nq}, f.ks, &t), std::move(t)));
    INDEXLAB_RETURN_IF_ERROR(put(&m, "ke", Tensor::from_i32({nq}, f.ke, &t), std::move(t)));
    if (!f.k_scale.empty())
      INDEXLAB_RETURN_IF_ERROR(put(&m, "k_scale", Tensor::from_f32({nk}, f.k_scale, &t), std::move(t)));
    if (!f.q_scale.empty())
      INDEXLAB_RETURN_IF_ERROR(put(&m, "q_scale", Tensor::from_f32({nq, H}, f.q_scale, &t), std::move(t)));
    if (!f.seq_end.empty())
      INDEXLAB_RETURN_IF_ERROR(put(&m, "seq_end", Tensor::from_i32({nq}, f.seq_end, &t), std::move(t)));
    if (!f.block_origin.empty())
      INDEXLAB_RETURN_IF_ERROR(put(&m, "block_origin", Tensor::from_i32({nq}, f.block_origin, &t), std::move(t)));
  }
  *out = std::move(m);
  return Status::Ok();
}

Status inputs_from_tensors(const TensorMap& t, const std::string& file, Problem* p) {
  const int64_t H = p->h(), D = p->d();
  if (p->paged) {
    ref::PagedInputs& g = p->paged_in;
    const int64_t rows = g.rows();
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "q", {rows, H, D}, &g.q));
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "w", {rows, H}, &g.w));
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "q_scale", {rows, H}, &g.q_scale, true));
    INDEXLAB_RETURN_IF_ERROR(get_i32(t, file, "block_table", {g.batch, g.max_pages}, &g.block_table));
    INDEXLAB_RETURN_IF_ERROR(get_i32(t, file, "context_lens", {g.batch}, &g.context_lens));
    auto it = t.find("kv_cache");
    if (it == t.end()) return error(file, ": missing tensor 'kv_cache'");
    const Tensor* kv = &it->second;
    if (dtype_size(kv->dtype) != 1) {
      return error(file, ": tensor 'kv_cache' must hold bytes (uint8, int8 or float8_e4m3), got ", dtype_name(kv->dtype));
    }
    if (kv->shape.empty() || kv->shape[0] != g.num_pages || kv->nbytes() != g.num_pages * g.page_bytes()) {
      return error(file, ": tensor 'kv_cache' has shape ", format_shape(kv->shape), " but the problem needs ",
                   g.num_pages, " pages of ", g.page_bytes(), " bytes");
    }
    g.cache = kv->data;
  } else {
    ref::Inputs& f = p->flat;
    const int64_t nq = f.shape.nq, nk = f.shape.nk;
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "q", {nq, H, D}, &f.q));
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "k", {nk, D}, &f.k));
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "w", {nq, H}, &f.w));
    INDEXLAB_RETURN_IF_ERROR(get_i32(t, file, "ks", {nq}, &f.ks));
    INDEXLAB_RETURN_IF_ERROR(get_i32(t, file, "ke", {nq}, &f.ke));
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "k_scale", {nk}, &f.k_scale, true));
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "q_scale", {nq, H}, &f.q_scale, true));
    INDEXLAB_RETURN_IF_ERROR(get_i32(t, file, "seq_end", {nq}, &f.seq_end, true));
    INDEXLAB_RETURN_IF_ERROR(get_i32(t, file, "block_origin", {nq}, &f.block_origin, true));
  }
  return Status::Ok();
}

Status output_to_tensors(const CandidateOutput& c, TensorMap* out) {
  TensorMap m;
  Tensor t;
  INDEXLAB_RETURN_IF_ERROR(put(&m, "indices", Tensor::from_i32({c.nq, c.k}, c.index, &t), std::move(t)));
  if (!c.logits.empty())
    INDEXLAB_RETURN_IF_ERROR(put(&m, "logits", Tensor::from_f32({c.nq, c.logits_cols}, c.logits, &t), std::move(t)));
  *out = std::move(m);
  return Status::Ok();
}

Status output_from_tensors(const TensorMap& t, const std::string& file, const Problem& p, CandidateOutput* out) {
  CandidateOutput c;
  c.nq = p.rows();
  c.k = p.k();
  c.index_base = p.options.index_base;
  const std::string name = t.count("indices") ? "indices" : (t.count("index") ? "index" : "indices");
  INDEXLAB_RETURN_IF_ERROR(get_i32(t, file, name, {c.nq, c.k}, &c.index));
  if (t.count("logits")) {
    c.logits_cols = p.logits_cols();
    INDEXLAB_RETURN_IF_ERROR(get_f32(t, file, "logits", {c.nq, c.logits_cols}, &c.logits));
  }
  *out = std::move(c);
  return Status::Ok();
}

Status load_problem(const std::string& problem_json, const std::string& inputs_file, Problem* p) {
  std::string text;
  INDEXLAB_RETURN_IF_ERROR(read_text(problem_json, &text));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return error(problem_json, ": not valid JSON");
  Problem r;
  INDEXLAB_RETURN_IF_ERROR(problem_from_json(j, &r).with_context(problem_json + ": "));
  if (r.name.empty()) r.name = fs::path(problem_json).parent_path().filename().string();
  TensorMap t;
  INDEXLAB_RETURN_IF_ERROR(read_tensors(inputs_file, &t));
  INDEXLAB_RETURN_IF_ERROR(inputs_from_tensors(t, inputs_file, &r));
  Status st = r.paged ? ref::validate(r.paged_in, r.options) : ref::validate(r.flat, r.options);
  INDEXLAB_RETURN_IF_ERROR(st.with_context(inputs_file + ": "));
  INDEXLAB_RETURN_IF_ERROR(ref::validate_options(r.path, ref::Shape{r.rows(), 0, r.h(), r.d(), r.k()}, r.options)
                               .with_context(problem_json + ": "));
  *p = std::move(r);
  return Status::Ok();
}

Status save_problem(const Problem& p, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return error(dir, ": cannot create directory (", ec.message(), ")");
  INDEXLAB_RETURN_IF_ERROR(write_text((fs::path(dir) / "problem.json").string(), problem_to_json(p).dump(2) + "\n"));
  TensorMap t;
  INDEXLAB_RETURN_IF_ERROR(inputs_to_tensors(p, &t));
  return write_tensors((fs::path(dir) / "inputs.npz").string(), t);
}

Status write_repro(const std::string& dir, const Problem& p, const CandidateOutput& c, const Report* report) {
  INDEXLAB_RETURN_IF_ERROR(save_problem(p, dir));
  TensorMap t;
  INDEXLAB_RETURN_IF_ERROR(output_to_tensors(c, &t));
  INDEXLAB_RETURN_IF_ERROR(write_tensors((fs::path(dir) / "candidate.npz").string(), t));
  if (report) {
    INDEXLAB_RETURN_IF_ERROR(write_text((fs::path(dir) / "report.json").string(), report->to_json().dump(2) + "\n"));
  }
  return Status::Ok();
}

Status read_repro(const std::string& dir, Problem* p, CandidateOutput* c) {
  if (!fs::is_directory(dir)) return error(dir, ": not a repro directory");
  Problem r;
  INDEXLAB_RETURN_IF_ERROR(load_problem((fs::path(dir) / "problem.json").string(),
                                        (fs::path(dir) / "inputs.npz").string(), &r));
  TensorMap t;
  const std::string cf = (fs::path(dir) / "candidate.npz").string();
  INDEXLAB_RETURN_IF_ERROR(read_tensors(cf, &t));
  INDEXLAB_RETURN_IF_ERROR(output_from_tensors(t, cf, r, c));
  *p = std::move(r);
  return Status::Ok();
}

}  // namespace indexlab::compare
