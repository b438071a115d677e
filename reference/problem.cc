/// Names, parsing, validation and the precision modes of the reference problem.
#include "reference/problem.h"

#include <cmath>
#include <limits>

#include "reference/numerics.h"

namespace indexlab::ref {
namespace {

/// a*b*c with overflow detection; false when the product exceeds int64.
bool mul_ok(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

Status check_size(const char* field, size_t have, std::initializer_list<int64_t> dims,
                  const char* dims_text) {
  int64_t need = 1;
  for (int64_t v : dims) {
    if (!mul_ok(need, v, &need)) return error(field, ": shape ", dims_text, " overflows");
  }
  if (static_cast<int64_t>(have) != need) {
    return error(field, " has ", have, " elements but its shape ", dims_text, " needs ", need);
  }
  return Status::Ok();
}

bool representable(float x, Precision p) {
  switch (p) {
    case Precision::kFp32: return true;
    case Precision::kBf16: return std::isnan(x) || is_bf16_value(x);
    case Precision::kFp8: return std::isnan(x) || is_e4m3_value(x);
  }
  return false;
}

/// "i,h,d" (dim1 > 1) or "j,d" for flat element t of a [*, dim1, dim2] tensor.
std::string index_text(size_t t, int64_t dim1, int64_t dim2) {
  const int64_t u = static_cast<int64_t>(t);
  std::ostringstream os;
  if (dim1 == 1) os << u / dim2 << "," << u % dim2;
  else os << u / (dim1 * dim2) << "," << (u / dim2) % dim1 << "," << u % dim2;
  return os.str();
}

/// Checks finiteness (unless allowed) and representability of a value tensor. A fast scan runs
/// first; the message is built only for the first bad element.
Status check_values(const char* field, const std::vector<float>& v, Precision p, int64_t dim1,
                    int64_t dim2, bool allow_nonfinite) {
  auto ok = [&](float x) {
    if (!std::isfinite(x)) return allow_nonfinite && (p != Precision::kFp8 || x != x);
    return representable(x, p);
  };
  size_t t = 0;
  while (t < v.size() && ok(v[t])) ++t;
  if (t == v.size()) return Status::Ok();
  const float x = v[t];
  if (!std::isfinite(x) && !allow_nonfinite) {
    return error(field, "[", index_text(t, dim1, dim2), "] = ", x,
                 " is not finite (set allow_nonfinite to opt out)");
  }
  return error(field, "[", index_text(t, dim1, dim2), "] = ", x, " is not a ", precision_name(p),
               " value (quantize the inputs first, e.g. with quantize_inputs)");
}

Status check_scales(const char* field, const std::vector<float>& v) {
  for (size_t t = 0; t < v.size(); ++t) {
    if (!(v[t] > 0.0f) || !std::isfinite(v[t])) {
      return error(field, "[", t, "] = ", v[t], " must be positive and finite");
    }
  }
  return Status::Ok();
}

Status check_weights(const char* field, const std::vector<float>& v, int h, bool allow_nonfinite) {
  if (allow_nonfinite) return Status::Ok();
  for (size_t t = 0; t < v.size(); ++t) {
    if (!std::isfinite(v[t])) {
      return error(field, "[", t / h, ",", t % h, "] = ", v[t],
                   " is not finite (set allow_nonfinite to opt out)");
    }
  }
  return Status::Ok();
}

}  // namespace

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kFp8: return "fp8";
  }
  return "?";
}
const char* path_name(Path p) {
  switch (p) {
    case Path::kDsa: return "dsa";
    case Path::kHisa: return "hisa";
    case Path::kMisa: return "misa";
    case Path::kMisaDagger: return "misa_dagger";
  }
  return "?";
}
const char* routing_name(Routing r) {
  switch (r) {
    case Routing::kPooled: return "pooled";
    case Routing::kOwnKey: return "own_key";
    case Routing::kQNorm: return "q_norm";
  }
  return "?";
}

Status parse_precision(const std::string& s, Precision* out) {
  if (s == "fp32") *out = Precision::kFp32;
  else if (s == "bf16") *out = Precision::kBf16;
  else if (s == "fp8") *out = Precision::kFp8;
  else return error("precision '", s, "' is not one of fp32, bf16, fp8");
  return Status::Ok();
}
Status parse_path(const std::string& s, Path* out) {
  if (s == "dsa") *out = Path::kDsa;
  else if (s == "hisa") *out = Path::kHisa;
  else if (s == "misa") *out = Path::kMisa;
  else if (s == "misa_dagger") *out = Path::kMisaDagger;
  else return error("path '", s, "' is not one of dsa, hisa, misa, misa_dagger");
  return Status::Ok();
}
Status parse_routing(const std::string& s, Routing* out) {
  if (s == "pooled") *out = Routing::kPooled;
  else if (s == "own_key") *out = Routing::kOwnKey;
  else if (s == "q_norm") *out = Routing::kQNorm;
  else return error("routing '", s, "' is not one of pooled, own_key, q_norm");
  return Status::Ok();
}
int element_bytes(Precision p) {
  switch (p) {
    case Precision::kFp32: return 4;
    case Precision::kBf16: return 2;
    case Precision::kFp8: return 1;
  }
  return 4;
}

static Status check_dims(int h, int d, int k) {
  if (h < 1) return error("h (heads) must be >= 1, got ", h);
  if (d < 1) return error("d (head dim) must be >= 1, got ", d);
  if (k < 1) return error("k (top-K) must be >= 1, got ", k);
  return Status::Ok();
}

Status validate(const Inputs& in, const Options& opt) {
  const Shape& s = in.shape;
  INDEXLAB_RETURN_IF_ERROR(check_dims(s.h, s.d, s.k));
  if (s.nq < 0) return error("nq must be >= 0, got ", s.nq);
  if (s.nk < 0) return error("nk must be >= 0, got ", s.nk);
  if (s.nk > std::numeric_limits<int32_t>::max()) {
    return error("nk = ", s.nk, " exceeds the int32 index range");
  }
  if (opt.threads < 0) return error("threads must be >= 0, got ", opt.threads);
  INDEXLAB_RETURN_IF_ERROR(check_size("q", in.q.size(), {s.nq, s.h, s.d}, "[nq, h, d]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("k", in.k.size(), {s.nk, s.d}, "[nk, d]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("w", in.w.size(), {s.nq, s.h}, "[nq, h]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("ks", in.ks.size(), {s.nq}, "[nq]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("ke", in.ke.size(), {s.nq}, "[nq]"));
  if (!in.k_scale.empty()) {
    INDEXLAB_RETURN_IF_ERROR(check_size("k_scale", in.k_scale.size(), {s.nk}, "[nk]"));
    INDEXLAB_RETURN_IF_ERROR(check_scales("k_scale", in.k_scale));
  }
  if (!in.q_scale.empty()) {
    INDEXLAB_RETURN_IF_ERROR(check_size("q_scale", in.q_scale.size(), {s.nq, s.h}, "[nq, h]"));
    INDEXLAB_RETURN_IF_ERROR(check_scales("q_scale", in.q_scale));
  }
  if (!in.seq_end.empty()) {
    INDEXLAB_RETURN_IF_ERROR(check_size("seq_end", in.seq_end.size(), {s.nq}, "[nq]"));
  }
  if (!in.block_origin.empty()) {
    INDEXLAB_RETURN_IF_ERROR(check_size("block_origin", in.block_origin.size(), {s.nq}, "[nq]"));
  }
  for (int64_t i = 0; i < s.nq; ++i) {
    const int64_t a = in.ks[i], b = in.ke[i];
    if (a < 0) return error("ks[", i, "] = ", a, " is negative");
    if (b > s.nk) return error("ke[", i, "] = ", b, " exceeds nk = ", s.nk);
    if (a > b) return error("ks[", i, "] = ", a, " is greater than ke[", i, "] = ", b);
    if (!in.block_origin.empty() && (in.block_origin[i] < 0 || in.block_origin[i] > a)) {
      return error("block_origin[", i, "] = ", in.block_origin[i], " must lie in [0, ks[", i, "] = ", a, "]");
    }
    if (!in.seq_end.empty()) {
      const int64_t e = in.seq_end[i];
      if (e < b || e > s.nk) {
        return error("seq_end[", i, "] = ", e, " must lie in [ke[", i, "] = ", b, ", nk = ", s.nk, "]");
      }
    }
  }
  INDEXLAB_RETURN_IF_ERROR(check_values("q", in.q, in.precision, s.h, s.d, opt.allow_nonfinite));
  INDEXLAB_RETURN_IF_ERROR(check_values("k", in.k, in.precision, 1, s.d, opt.allow_nonfinite));
  INDEXLAB_RETURN_IF_ERROR(check_weights("w", in.w, s.h, opt.allow_nonfinite));
  return Status::Ok();
}

Status validate_options(Path path, const Shape& shape, const Options& opt) {
  if (path == Path::kHisa) {
    if (opt.hisa_block < 1) return error("hisa_block (B) must be >= 1, got ", opt.hisa_block);
    if (opt.hisa_m < 2) return error("hisa_m (blocks kept) must be >= 2, got ", opt.hisa_m);
    if (static_cast<int64_t>(opt.hisa_m) * opt.hisa_block < shape.k) {
      return error("hisa_m * hisa_block = ", static_cast<int64_t>(opt.hisa_m) * opt.hisa_block,
                   " must be >= k = ", shape.k);
    }
  }
  if (path == Path::kMisa || path == Path::kMisaDagger) {
    if (opt.misa_heads < 1 || opt.misa_heads > shape.h) {
      return error("misa_heads must lie in [1, h = ", shape.h, "], got ", opt.misa_heads);
    }
    if (opt.misa_block < 1) return error("misa_block (Br) must be >= 1, got ", opt.misa_block);
  }
  if (path == Path::kMisaDagger && opt.dagger_k1 < shape.k) {
    return error("dagger_k1 = ", opt.dagger_k1, " must be >= k = ", shape.k);
  }
  return Status::Ok();
}

Status validate(const PagedInputs& in, const Options& opt) {
  INDEXLAB_RETURN_IF_ERROR(check_dims(in.h, in.d, in.k));
  if (in.next_n < 1) return error("next_n must be >= 1, got ", in.next_n);
  if (in.batch < 0) return error("batch must be >= 0, got ", in.batch);
  if (in.page_tokens < 1) return error("page_tokens must be >= 1, got ", in.page_tokens);
  if (in.num_pages < 0) return error("num_pages must be >= 0, got ", in.num_pages);
  if (in.max_pages < 0) return error("max_pages must be >= 0, got ", in.max_pages);
  int64_t rows = 0;
  if (!mul_ok(in.batch, in.next_n, &rows)) return error("batch * next_n overflows");
  INDEXLAB_RETURN_IF_ERROR(check_size("cache", in.cache.size(), {in.num_pages, in.page_bytes()},
                                      "[num_pages, page_bytes]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("block_table", in.block_table.size(), {in.batch, in.max_pages},
                                      "[batch, max_pages]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("context_lens", in.context_lens.size(), {in.batch}, "[batch]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("q", in.q.size(), {rows, in.h, in.d}, "[batch * next_n, h, d]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("w", in.w.size(), {rows, in.h}, "[batch * next_n, h]"));
  if (!in.q_scale.empty()) {
    INDEXLAB_RETURN_IF_ERROR(check_size("q_scale", in.q_scale.size(), {rows, in.h}, "[batch * next_n, h]"));
    INDEXLAB_RETURN_IF_ERROR(check_scales("q_scale", in.q_scale));
  }
  int64_t capacity = 0;
  if (!mul_ok(in.max_pages, in.page_tokens, &capacity)) return error("max_pages * page_tokens overflows");
  int64_t total = 0;
  for (int64_t b = 0; b < in.batch; ++b) {
    const int64_t ctx = in.context_lens[b];
    if (ctx < 0 || ctx > capacity) {
      return error("context_lens[", b, "] = ", ctx, " must lie in [0, max_pages * page_tokens = ",
                   capacity, "]");
    }
    total += ctx;
    const int64_t pages = (ctx + in.page_tokens - 1) / in.page_tokens;
    for (int64_t p = 0; p < pages; ++p) {
      const int64_t phys = in.block_table[b * in.max_pages + p];
      if (phys < 0 || phys >= in.num_pages) {
        return error("block_table[", b, ",", p, "] = ", phys, " is not a page in [0, num_pages = ",
                     in.num_pages, ")");
      }
    }
  }
  if (total > std::numeric_limits<int32_t>::max()) {
    return error("the sum of context_lens (", total, ") exceeds the int32 index range");
  }
  INDEXLAB_RETURN_IF_ERROR(check_values("q", in.q, in.precision, in.h, in.d, opt.allow_nonfinite));
  INDEXLAB_RETURN_IF_ERROR(check_weights("w", in.w, in.h, opt.allow_nonfinite));
  return Status::Ok();
}

Status quantize_inputs(const RawInputs& raw, Precision p, const QuantizeOptions& qo, Inputs* out) {
  const Shape& s = raw.shape;
  INDEXLAB_RETURN_IF_ERROR(check_dims(s.h, s.d, s.k));
  if (s.nq < 0 || s.nk < 0) return error("nq and nk must be >= 0");
  INDEXLAB_RETURN_IF_ERROR(check_size("q", raw.q.size(), {s.nq, s.h, s.d}, "[nq, h, d]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("k", raw.k.size(), {s.nk, s.d}, "[nk, d]"));
  INDEXLAB_RETURN_IF_ERROR(check_size("w", raw.w.size(), {s.nq, s.h}, "[nq, h]"));
  INDEXLAB_RETURN_IF_ERROR(check_values("q", raw.q, Precision::kFp32, s.h, s.d, false));
  INDEXLAB_RETURN_IF_ERROR(check_values("k", raw.k, Precision::kFp32, 1, s.d, false));
  INDEXLAB_RETURN_IF_ERROR(check_weights("w", raw.w, s.h, false));
  Inputs r;
  r.shape = s;
  r.precision = p;
  r.ks = raw.ks;
  r.ke = raw.ke;
  r.seq_end = raw.seq_end;
  r.block_origin = raw.block_origin;
  r.w = raw.w;
  switch (p) {
    case Precision::kFp32:
      r.q = raw.q;
      r.k = raw.k;
      break;
    case Precision::kBf16:
      r.q.resize(raw.q.size());
      r.k.resize(raw.k.size());
      for (size_t t = 0; t < raw.q.size(); ++t) r.q[t] = round_to_bf16(raw.q[t]);
      for (size_t t = 0; t < raw.k.size(); ++t) r.k[t] = round_to_bf16(raw.k[t]);
      break;
    case Precision::kFp8: {
      std::vector<uint8_t> codes(static_cast<size_t>(s.d));
      r.k.resize(raw.k.size());
      r.k_scale.resize(static_cast<size_t>(s.nk));
      for (int64_t j = 0; j < s.nk; ++j) {
        r.k_scale[j] = quantize_row_e4m3(&raw.k[j * s.d], s.d, qo.key, codes.data());
        for (int t = 0; t < s.d; ++t) r.k[j * s.d + t] = e4m3_to_float(codes[t]);
      }
      r.q.resize(raw.q.size());
      r.q_scale.resize(static_cast<size_t>(s.nq * s.h));
      for (int64_t ih = 0; ih < s.nq * s.h; ++ih) {
        const float sc = quantize_row_e4m3(&raw.q[ih * s.d], s.d, qo.query, codes.data());
        r.q_scale[ih] = sc;
        r.w[ih] = raw.w[ih] * sc;
        for (int t = 0; t < s.d; ++t) r.q[ih * s.d + t] = e4m3_to_float(codes[t]);
      }
      break;
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace indexlab::ref
