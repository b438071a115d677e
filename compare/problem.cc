/// Verification problems: JSON form, flat views and the reference runner.
#include "compare/problem.h"

#include <limits>
#include <type_traits>

namespace indexlab::compare {
namespace {

using nlohmann::json;

/// Reads a field strictly: integers must be JSON integers within T's range, booleans booleans,
/// strings strings; anything else is an error naming the field.
template <typename T>
Status get(const json& j, const char* key, T* out, bool required = false) {
  if (!j.contains(key)) {
    if (required) return error("problem JSON: missing field '", key, "'");
    return Status::Ok();
  }
  const json& v = j.at(key);
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return error("problem JSON: field '", key, "' has the wrong type: must be true or false, got ", v.dump());
    *out = v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) return error("problem JSON: field '", key, "' has the wrong type: must be an integer, got ", v.dump());
    if (v.is_number_unsigned()) {
      const uint64_t x = v.get<uint64_t>();
      if (x > static_cast<uint64_t>(std::numeric_limits<T>::max()))
        return error("problem JSON: field '", key, "' = ", x, " is out of range");
      *out = static_cast<T>(x);
    } else {
      const int64_t x = v.get<int64_t>();
      if (x < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          x > static_cast<int64_t>(std::numeric_limits<T>::max()))
        return error("problem JSON: field '", key, "' = ", x, " is out of range");
      *out = static_cast<T>(x);
    }
  } else {
    if (!v.is_string()) return error("problem JSON: field '", key, "' has the wrong type: must be a string, got ", v.dump());
    *out = v.get<std::string>();
  }
  return Status::Ok();
}

}  // namespace

json options_to_json(const ref::Options& o) {
  json j;
  j["index_base"] = o.index_base == ref::IndexBase::kRelative ? "relative" : "absolute";
  j["hisa"] = {{"block", o.hisa_block}, {"m", o.hisa_m}, {"topm_plus_ends", o.hisa_topm_plus_ends},
               {"bf16_block_scores", o.hisa_bf16_block_scores}};
  j["align"] = o.align == ref::BlockAlign::kSequence ? "sequence" : "release";
  j["strict_pooling"] = o.strict_pooling;
  j["misa"] = {{"heads", o.misa_heads}, {"block", o.misa_block}, {"routing", ref::routing_name(o.routing)}};
  j["dagger_k1"] = o.dagger_k1;
  j["allow_nonfinite"] = o.allow_nonfinite;
  return j;
}

Status options_from_json(const json& j, ref::Options* o) {
  if (!j.is_object()) return error("problem JSON: expected an object");
  std::string s;
  if (j.contains("index_base")) {
    INDEXLAB_RETURN_IF_ERROR(get(j, "index_base", &s));
    if (s == "relative") o->index_base = ref::IndexBase::kRelative;
    else if (s == "absolute") o->index_base = ref::IndexBase::kAbsolute;
    else return error("problem JSON: index_base '", s, "' is not relative or absolute");
  }
  if (j.contains("align")) {
    INDEXLAB_RETURN_IF_ERROR(get(j, "align", &s));
    if (s == "sequence") o->align = ref::BlockAlign::kSequence;
    else if (s == "release") o->align = ref::BlockAlign::kRelease;
    else return error("problem JSON: align '", s, "' is not sequence or release");
  }
  INDEXLAB_RETURN_IF_ERROR(get(j, "strict_pooling", &o->strict_pooling));
  INDEXLAB_RETURN_IF_ERROR(get(j, "allow_nonfinite", &o->allow_nonfinite));
  INDEXLAB_RETURN_IF_ERROR(get(j, "dagger_k1", &o->dagger_k1));
  if (j.contains("hisa")) {
    const json& h = j["hisa"];
    if (!h.is_object()) return error("problem JSON: 'hisa' must be an object");
    INDEXLAB_RETURN_IF_ERROR(get(h, "block", &o->hisa_block));
    INDEXLAB_RETURN_IF_ERROR(get(h, "m", &o->hisa_m));
    INDEXLAB_RETURN_IF_ERROR(get(h, "topm_plus_ends", &o->hisa_topm_plus_ends));
    INDEXLAB_RETURN_IF_ERROR(get(h, "bf16_block_scores", &o->hisa_bf16_block_scores));
  }
  if (j.contains("misa")) {
    const json& m = j["misa"];
    if (!m.is_object()) return error("problem JSON: 'misa' must be an object");
    INDEXLAB_RETURN_IF_ERROR(get(m, "heads", &o->misa_heads));
    INDEXLAB_RETURN_IF_ERROR(get(m, "block", &o->misa_block));
    if (m.contains("routing")) {
      INDEXLAB_RETURN_IF_ERROR(get(m, "routing", &s));
      INDEXLAB_RETURN_IF_ERROR(ref::parse_routing(s, &o->routing).with_context("problem JSON: "));
    }
  }
  return Status::Ok();
}

json problem_to_json(const Problem& p) {
  json j = options_to_json(p.options);
  j["name"] = p.name;
  j["path"] = ref::path_name(p.path);
  j["precision"] = ref::precision_name(p.precision());
  j["layout"] = p.paged ? "paged" : "flat";
  j["h"] = p.h();
  j["d"] = p.d();
  j["k"] = p.k();
  if (p.paged) {
    j["batch"] = p.paged_in.batch;
    j["next_n"] = p.paged_in.next_n;
    j["page_tokens"] = p.paged_in.page_tokens;
    j["num_pages"] = p.paged_in.num_pages;
    j["max_pages"] = p.paged_in.max_pages;
  } else {
    j["nq"] = p.flat.shape.nq;
    j["nk"] = p.flat.shape.nk;
  }
  return j;
}

Status problem_from_json(const json& j, Problem* p) {
  if (!j.is_object()) return error("problem JSON: expected an object at the top level");
  Problem r;
  std::string s;
  INDEXLAB_RETURN_IF_ERROR(get(j, "name", &r.name));
  INDEXLAB_RETURN_IF_ERROR(get(j, "path", &s, true));
  INDEXLAB_RETURN_IF_ERROR(ref::parse_path(s, &r.path).with_context("problem JSON: "));
  ref::Precision prec;
  INDEXLAB_RETURN_IF_ERROR(get(j, "precision", &s, true));
  INDEXLAB_RETURN_IF_ERROR(ref::parse_precision(s, &prec).with_context("problem JSON: "));
  std::string layout = "flat";
  INDEXLAB_RETURN_IF_ERROR(get(j, "layout", &layout));
  if (layout != "flat" && layout != "paged") return error("problem JSON: layout '", layout, "' is not flat or paged");
  r.paged = layout == "paged";
  int h = 0, d = 0, k = 0;
  INDEXLAB_RETURN_IF_ERROR(get(j, "h", &h, true));
  INDEXLAB_RETURN_IF_ERROR(get(j, "d", &d, true));
  INDEXLAB_RETURN_IF_ERROR(get(j, "k", &k, true));
  if (r.paged) {
    ref::PagedInputs& pg = r.paged_in;
    pg.precision = prec;
    pg.h = h;
    pg.d = d;
    pg.k = k;
    INDEXLAB_RETURN_IF_ERROR(get(j, "batch", &pg.batch, true));
    INDEXLAB_RETURN_IF_ERROR(get(j, "next_n", &pg.next_n, true));
    INDEXLAB_RETURN_IF_ERROR(get(j, "page_tokens", &pg.page_tokens));
    INDEXLAB_RETURN_IF_ERROR(get(j, "num_pages", &pg.num_pages, true));
    INDEXLAB_RETURN_IF_ERROR(get(j, "max_pages", &pg.max_pages, true));
  } else {
    r.flat.precision = prec;
    r.flat.shape.h = h;
    r.flat.shape.d = d;
    r.flat.shape.k = k;
    INDEXLAB_RETURN_IF_ERROR(get(j, "nq", &r.flat.shape.nq, true));
    INDEXLAB_RETURN_IF_ERROR(get(j, "nk", &r.flat.shape.nk, true));
  }
  INDEXLAB_RETURN_IF_ERROR(options_from_json(j, &r.options));
  *p = std::move(r);
  return Status::Ok();
}

Status run_reference(const Problem& p, const ref::Options& o, ref::Result* out) {
  return p.paged ? ref::run_paged(p.path, p.paged_in, o, out) : ref::run(p.path, p.flat, o, out);
}

Status flat_view(const Problem& p, FlatView* out) {
  FlatView v;
  v.paged = p.paged;
  if (p.paged) {
    const bool routed = p.path == ref::Path::kMisa || p.path == ref::Path::kMisaDagger;
    if (routed && p.options.routing == ref::Routing::kOwnKey && p.paged_in.next_n != 1) {
      return error("routing own_key is defined for paged decode with next_n = 1 only (got next_n = ",
                   p.paged_in.next_n, ")");
    }
    INDEXLAB_RETURN_IF_ERROR(ref::flatten_paged(p.paged_in, p.options, &v.in, &v.slot_of_key));
    v.col_base.assign(v.in.ks.begin(), v.in.ks.end());
  } else {
    INDEXLAB_RETURN_IF_ERROR(ref::validate(p.flat, p.options));
    v.in = p.flat;
    v.col_base.assign(v.in.shape.nq, 0);
  }
  *out = std::move(v);
  return Status::Ok();
}

ref::Inputs restrict_rows(const ref::Inputs& in, const std::vector<int64_t>& rows) {
  ref::Inputs r;
  r.precision = in.precision;
  r.shape = in.shape;
  r.shape.nq = static_cast<int64_t>(rows.size());
  r.k = in.k;
  r.k_scale = in.k_scale;
  const int H = in.shape.h, D = in.shape.d;
  for (int64_t i : rows) {
    r.q.insert(r.q.end(), in.q.begin() + i * H * D, in.q.begin() + (i + 1) * H * D);
    r.w.insert(r.w.end(), in.w.begin() + i * H, in.w.begin() + (i + 1) * H);
    if (!in.q_scale.empty()) r.q_scale.insert(r.q_scale.end(), in.q_scale.begin() + i * H, in.q_scale.begin() + (i + 1) * H);
    r.ks.push_back(in.ks[i]);
    r.ke.push_back(in.ke[i]);
    if (!in.seq_end.empty()) r.seq_end.push_back(in.seq_end[i]);
    if (!in.block_origin.empty()) r.block_origin.push_back(in.block_origin[i]);
  }
  return r;
}

}  // namespace indexlab::compare
