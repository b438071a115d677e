/// Problem and value generators (see generators.h).
#include "fuzz/generators.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "reference/numerics.h"

namespace indexlab::fuzz {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// A small deterministic generator (xoshiro256**), independent of the standard library's
/// distributions so a case is the same with every compiler.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& x : s_) x = seed = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  /// Uniform integer in [a, b] (a <= b).
  int64_t uni(int64_t a, int64_t b) {
    if (b <= a) return a;
    const uint64_t span = static_cast<uint64_t>(b - a) + 1;
    return a + static_cast<int64_t>(static_cast<unsigned __int128>(next()) * span >> 64);
  }
  double real() { return (next() >> 11) * 0x1p-53; }  // [0, 1)
  bool coin(double p) { return real() < p; }
  double normal() {
    const double u1 = 1.0 - real(), u2 = real();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  /// Log-uniform integer in [lo, hi]: small values are as likely as large ones.
  int64_t log_uni(int64_t lo, int64_t hi) {
    if (hi <= lo) return lo;
    const double x = std::exp(real() * std::log(static_cast<double>(hi - lo + 1)));
    return std::min<int64_t>(hi, lo + static_cast<int64_t>(x) - 1);
  }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(uni(0, static_cast<int64_t>(v.size()) - 1))];
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

float to_precision(float x, ref::Precision p) {
  switch (p) {
    case ref::Precision::kFp32: return x;
    case ref::Precision::kBf16: return std::isnan(x) ? x : ref::round_to_bf16(x);
    case ref::Precision::kFp8: return ref::round_to_e4m3(x);
  }
  return x;
}

/// Per-tensor parameters of a value class, drawn once per tensor.
struct ValueGen {
  std::string cls;
  ref::Precision prec;
  double scale = 1.0;
  float constant = 1.0f;
  float base = 1.0f;
  double density = 0.3;

  ValueGen(const std::string& c, ref::Precision p, Rng& r) : cls(c), prec(p) {
    static const double kScales[] = {1.0, 0.25, 4.0, 16.0, 100.0};
    scale = kScales[r.uni(0, 4)];
    if (p == ref::Precision::kFp8 && scale > 100.0) scale = 100.0;
    constant = static_cast<float>((r.coin(0.8) ? 1.0 : -1.0) * (0.5 + r.real()) * scale);
    if (r.coin(0.2)) constant = 1.0f;
    base = static_cast<float>(1.0 + r.uni(0, 7) * 0.03125);
    density = 0.05 + 0.4 * r.real();
  }

  float raw(Rng& r) {
    if (cls == "gaussian") return static_cast<float>(r.normal() * scale);
    if (cls == "heavy_tailed") {
      // Student-t with 1 or 2 degrees of freedom, clipped to the precision's finite range.
      const double g = r.normal();
      const double c = r.coin(0.5) ? std::fabs(r.normal()) : std::sqrt(std::fabs(r.normal() * r.normal() + r.normal() * r.normal()) / 2);
      double x = g / std::max(c, 1e-3) * scale * 0.25;
      const double lim = prec == ref::Precision::kFp8 ? 448.0 : 1e6;
      return static_cast<float>(std::clamp(x, -lim, lim));
    }
    if (cls == "relu_sparse") return r.coin(density) ? static_cast<float>(std::fabs(r.normal()) * scale) : 0.0f;
    if (cls == "all_equal") return constant;
    if (cls == "narrow_range") return static_cast<float>(1.0 + 0.25 * r.real());
    if (cls == "low_bits") {
      // One base, differing only in the low bits of the mantissa.
      if (prec == ref::Precision::kFp8) return ref::e4m3_to_float(static_cast<uint8_t>(0x38 + r.uni(0, 1)));
      if (prec == ref::Precision::kBf16) return base + static_cast<float>(r.uni(0, 3)) * 0x1p-7f;
      return base + static_cast<float>(r.uni(0, 1023)) * 0x1p-23f;
    }
    if (cls == "signed_zero") {
      const int64_t t = r.uni(0, 5);
      if (t == 0) return 0.0f;
      if (t == 1) return -0.0f;
      if (t == 2) return 1.0f;
      if (t == 3) return -1.0f;
      return static_cast<float>(r.normal());
    }
    if (cls == "subnormal") {
      const float sign = r.coin(0.5) ? 1.0f : -1.0f;
      if (r.coin(0.2)) return sign * 0.0f;
      if (prec == ref::Precision::kFp8) return sign * ref::e4m3_to_float(static_cast<uint8_t>(r.uni(1, 7)));
      if (prec == ref::Precision::kBf16) {
        const uint16_t bits = static_cast<uint16_t>(r.uni(1, 0x7F));
        return sign * ref::bf16_to_float(bits);
      }
      uint32_t bits = static_cast<uint32_t>(r.uni(1, 0x7FFFFF));
      float x;
      std::memcpy(&x, &bits, 4);
      return sign * x;
    }
    if (cls == "saturation") {
      // +-448 and the 464 boundary (464 ties to 448 under satfinite; above saturates).
      static const float kEdge[] = {448.0f, 447.0f, 416.0f, 463.99997f, 464.0f, 464.00003f, 480.0f, 1e4f};
      const float sign = r.coin(0.5) ? 1.0f : -1.0f;
      if (r.coin(0.7)) return sign * kEdge[r.uni(0, 7)];
      return static_cast<float>(r.normal() * 8.0);
    }
    if (cls == "mixed_scales") {
      const double e = prec == ref::Precision::kFp8 ? r.uni(-6, 8) : r.uni(-30, 30);
      return static_cast<float>(r.normal() * std::ldexp(1.0, static_cast<int>(e)));
    }
    if (cls == "nonfinite") {
      const int64_t t = r.uni(0, 9);
      if (t == 0) return std::numeric_limits<float>::quiet_NaN();
      if (t == 1 && prec != ref::Precision::kFp8) return std::numeric_limits<float>::infinity();
      if (t == 2 && prec != ref::Precision::kFp8) return -std::numeric_limits<float>::infinity();
      return static_cast<float>(r.normal());
    }
    return static_cast<float>(r.normal());
  }
  float value(Rng& r) { return to_precision(raw(r), prec); }
};

void fill(std::vector<float>* v, size_t n, ValueGen& g, Rng& r) {
  v->resize(n);
  for (auto& x : *v) x = g.value(r);
}

/// Weights: mostly positive, some negative; the class shapes them.
void fill_weights(std::vector<float>* w, size_t n, const std::string& cls, Rng& r) {
  w->resize(n);
  const float c = static_cast<float>((r.coin(0.85) ? 1.0 : -1.0) * (0.25 + r.real()));
  for (auto& x : *w) {
    if (cls == "all_equal" || cls == "narrow_range" || cls == "low_bits") x = c;
    else if (cls == "mixed_scales") x = static_cast<float>((r.coin(0.8) ? 1 : -1) * std::ldexp(0.5 + r.real(), static_cast<int>(r.uni(-30, 30))));
    else if (cls == "signed_zero") x = r.coin(0.3) ? (r.coin(0.5) ? 0.0f : -0.0f) : static_cast<float>(r.real() + 0.05);
    else if (cls == "subnormal" && r.coin(0.3)) x = 0x1p-140f * static_cast<float>(r.uni(1, 100));
    else if (cls == "nonfinite" && r.coin(0.05)) x = std::numeric_limits<float>::quiet_NaN();
    else x = static_cast<float>(2.0 * r.real() - 1.0 + 0.3);
  }
}

/// Per-key scales (positive, finite); empty (all 1) in some cases.
void fill_key_scales(std::vector<float>* s, size_t n, const std::string& cls, ref::Precision p, Rng& r) {
  s->clear();
  if (p != ref::Precision::kFp8 && !r.coin(0.15)) return;
  if (p == ref::Precision::kFp8 && r.coin(0.1)) return;
  s->resize(n);
  const float c = static_cast<float>(std::ldexp(0.5 + r.real(), static_cast<int>(r.uni(-9, 0))));
  for (auto& x : *s) {
    if (cls == "all_equal" || cls == "narrow_range" || cls == "low_bits") x = c;
    else if (cls == "mixed_scales") x = static_cast<float>(std::ldexp(0.5 + r.real(), static_cast<int>(r.uni(-24, 24))));
    else x = static_cast<float>(std::ldexp(0.5 + r.real(), static_cast<int>(r.uni(-9, 0))));
  }
}

struct GenInfo {
  const char* name;
  const char* reaches;
  bool paged;       // makes paged problems
  int path;         // -1: any path of the config; else the ref::Path it needs
  bool long_rows;
};

const std::vector<GenInfo>& gen_table() {
  static const std::vector<GenInfo> t = {
      {"random", "random shapes and ranges (mixed)", false, -1, false},
      {"tiny", "tiny problems (Nk = 0..2, H = D = 1..2)", false, -1, false},
      {"causal_prefill", "causal prefill (ks = 0, ke = i + 1 offsets)", false, -1, false},
      {"chunked_prefill", "chunked prefill: wrong ks/ke offsets show up", false, -1, false},
      {"packed_batch", "packed batches: ks at sequence starts, pooling ends at sequence ends", false, -1, false},
      {"sliding_window", "sliding windows: ks > 0", false, -1, false},
      {"exactly_k_visible", "rows with exactly K visible keys", false, -1, false},
      {"fewer_than_k", "rows with fewer than K visible keys (-1 padding)", false, -1, false},
      {"empty_rows", "rows with no visible key (radix top-k finding no threshold bin)", false, -1, false},
      {"heavy_ties", "heavy ties (all-equal, post-ReLU zeros): tie buffers truncated", false, -1, false},
      {"narrow_scores", "narrow-range scores ([1, 1.25), low-bit differences)", false, -1, false},
      {"caller_layout", "needles aligned q.k: Hadamard on one side / RoPE layout mismatches in callers", false, -1, false},
      {"hisa_blocks", "HISA block size B and blocks kept m (short last blocks, m+2 option)", false, static_cast<int>(ref::Path::kHisa), false},
      {"misa_routing", "MISA active heads h, router block Br, routing modes", false, static_cast<int>(ref::Path::kMisa), false},
      {"dagger_k1", "MISA-dagger K1 around the visible count", false, static_cast<int>(ref::Path::kMisaDagger), false},
      {"paged_decode", "paged decode, shuffled page tables, garbage in unused slots", true, -1, false},
      {"paged_next_n", "paged decode with next_n beyond what kernels support (out-of-bounds reads)", true, -1, false},
      {"long_rows", "rows of 1M+ keys (candidate buffer overflow in radix select)", false, -1, true},
  };
  return t;
}

const GenInfo* find_gen(const std::string& name) {
  for (const GenInfo& g : gen_table())
    if (name == g.name) return &g;
  return nullptr;
}

bool gen_allowed(const GenInfo& g, const GenConfig& cfg) {
  if (g.long_rows && !cfg.allow_long) return false;
  if (g.paged && !cfg.paged) return false;
  if (!g.paged && !cfg.flat) return false;
  if (g.path >= 0 && std::find(cfg.paths.begin(), cfg.paths.end(), static_cast<ref::Path>(g.path)) == cfg.paths.end())
    return false;
  return true;
}

int draw_h(const GenConfig& cfg, Rng& r) {
  if (!cfg.h_choices.empty()) return r.pick(cfg.h_choices);
  if (r.coin(0.25)) {
    std::vector<int> v;
    for (int h : {8, 16, 32, 64})
      if (h <= cfg.max_h) v.push_back(h);
    if (!v.empty()) return r.pick(v);
  }
  return static_cast<int>(r.log_uni(1, std::max(1, cfg.max_h)));
}

int draw_d(const GenConfig& cfg, Rng& r) {
  if (!cfg.d_choices.empty()) return r.pick(cfg.d_choices);
  if (r.coin(0.25)) {
    std::vector<int> v;
    for (int d : {16, 32, 64, 128})
      if (d <= cfg.max_d) v.push_back(d);
    if (!v.empty()) return r.pick(v);
  }
  return static_cast<int>(r.log_uni(1, std::max(1, cfg.max_d)));
}

std::string draw_values(const std::string& gen, const GenConfig& cfg, Rng& r) {
  if (gen == "heavy_ties") return r.coin(0.5) ? "all_equal" : (r.coin(0.5) ? "relu_sparse" : "signed_zero");
  if (gen == "narrow_scores") return r.coin(0.5) ? "narrow_range" : "low_bits";
  if (gen == "caller_layout") return "gaussian";
  std::vector<std::string> v;
  for (const std::string& c : value_class_names())
    if (c != "nonfinite" || cfg.nonfinite) v.push_back(c);
  // Gaussian twice as often as any other class.
  v.push_back("gaussian");
  return r.pick(v);
}

ref::Path draw_path(const GenInfo& g, const GenConfig& cfg, Rng& r) {
  if (g.path >= 0) return static_cast<ref::Path>(g.path);
  return r.pick(cfg.paths);
}

/// Path options: HISA B and m, MISA h and Br and routing, MISA-dagger K1, pooling alignment.
void draw_options(ref::Path path, int h, int k, int64_t maxlen, bool paged, int next_n, bool gen_specific,
                  ref::Options* o, Rng& r) {
  o->index_base = r.coin(0.3) ? ref::IndexBase::kAbsolute : ref::IndexBase::kRelative;
  o->align = r.coin(0.3) ? ref::BlockAlign::kRelease : ref::BlockAlign::kSequence;
  o->strict_pooling = r.coin(0.3);
  if (path == ref::Path::kHisa) {
    static const std::vector<int> kB = {1, 2, 3, 4, 8, 16, 32, 64, 128};
    o->hisa_block = r.pick(kB);
    if (gen_specific && maxlen > 4) o->hisa_block = static_cast<int>(r.uni(1, std::max<int64_t>(1, maxlen / 3)));
    o->hisa_m = static_cast<int>(r.uni(2, 10));
    const int need = (k + o->hisa_block - 1) / o->hisa_block;
    if (o->hisa_m < need) o->hisa_m = std::max(2, need + static_cast<int>(r.uni(0, 2)));
    o->hisa_topm_plus_ends = r.coin(0.2);
    o->hisa_bf16_block_scores = r.coin(0.2);
  }
  if (path == ref::Path::kMisa || path == ref::Path::kMisaDagger) {
    o->misa_heads = static_cast<int>(r.uni(1, h));
    static const std::vector<int> kBr = {1, 2, 4, 16, 64, 1024};
    o->misa_block = r.pick(kBr);
    if (gen_specific && maxlen > 2) o->misa_block = static_cast<int>(r.uni(1, maxlen));
    const int64_t t = r.uni(0, 9);
    o->routing = t < 6 ? ref::Routing::kPooled : (t < 8 ? ref::Routing::kQNorm : ref::Routing::kOwnKey);
    if (o->routing == ref::Routing::kOwnKey && paged && next_n != 1) o->routing = ref::Routing::kPooled;
  }
  if (path == ref::Path::kMisaDagger) {
    o->dagger_k1 = k + r.uni(0, std::max<int64_t>(0, maxlen - k + 2));
    if (r.coin(0.1)) o->dagger_k1 = 8192;
  }
}

/// Ranges of a flat problem by pattern.
void draw_ranges(const std::string& pattern, int64_t nq, int64_t nk, int k, Rng& r, ref::Inputs* in) {
  in->ks.assign(nq, 0);
  in->ke.assign(nq, 0);
  in->seq_end.clear();
  in->block_origin.clear();
  auto clampk = [&](int64_t x) { return static_cast<int32_t>(std::clamp<int64_t>(x, 0, nk)); };
  if (pattern == "causal") {
    for (int64_t i = 0; i < nq; ++i) in->ke[i] = clampk(nk - nq + i + 1);
  } else if (pattern == "chunked") {
    const int64_t off = r.uni(-2, std::max<int64_t>(0, nk - nq));
    const int64_t stride = r.coin(0.7) ? 1 : r.uni(0, 4);
    for (int64_t i = 0; i < nq; ++i) in->ke[i] = clampk(off + i * stride + 1);
  } else if (pattern == "sliding") {
    const int64_t win = r.uni(1, std::max<int64_t>(1, nk));
    for (int64_t i = 0; i < nq; ++i) {
      in->ke[i] = clampk(nk - nq + i + 1);
      in->ks[i] = clampk(in->ke[i] - win);
    }
  } else if (pattern == "packed") {
    // Sequences tile the key buffer; queries are the last positions of their sequence.
    const int64_t nseq = r.uni(1, std::max<int64_t>(1, std::min<int64_t>(nq, 4)));
    std::vector<int64_t> cuts{0, nk};
    for (int64_t s = 1; s < nseq; ++s) cuts.push_back(r.uni(0, nk));
    std::sort(cuts.begin(), cuts.end());
    in->seq_end.assign(nq, 0);
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t s = std::min<int64_t>(nseq - 1, i * nseq / std::max<int64_t>(1, nq));
      const int64_t a = cuts[s], b = cuts[s + 1];
      in->ks[i] = static_cast<int32_t>(a);
      in->ke[i] = static_cast<int32_t>(r.coin(0.8) ? b - r.uni(0, std::min<int64_t>(b - a, 3)) : r.uni(a, b));
      in->seq_end[i] = static_cast<int32_t>(b);
    }
    // Release-aligned blocks restart at each sequence (as flattened paged problems do), or not.
    if (r.coin(0.5)) {
      in->block_origin.resize(nq);
      for (int64_t i = 0; i < nq; ++i) in->block_origin[i] = in->ks[i];
    }
    return;
  } else if (pattern == "full") {
    for (int64_t i = 0; i < nq; ++i) in->ke[i] = static_cast<int32_t>(nk);
  } else if (pattern == "exactly_k") {
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t len = std::min<int64_t>(nk, r.coin(0.75) ? k : k + r.uni(-1, 1));
      const int64_t a = r.uni(0, nk - len);
      in->ks[i] = static_cast<int32_t>(a);
      in->ke[i] = static_cast<int32_t>(a + len);
    }
  } else if (pattern == "fewer") {
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t len = std::min<int64_t>(nk, r.uni(k > 1 ? 1 : 0, std::max(0, k - 1)));
      const int64_t a = r.uni(0, nk - len);
      in->ks[i] = static_cast<int32_t>(a);
      in->ke[i] = static_cast<int32_t>(a + len);
    }
  } else if (pattern == "empty") {
    for (int64_t i = 0; i < nq; ++i) {
      if (r.coin(0.6)) {
        const int64_t t = r.uni(0, 2);
        const int64_t a = t == 0 ? 0 : (t == 1 ? nk : r.uni(0, nk));
        in->ks[i] = in->ke[i] = static_cast<int32_t>(a);
      } else {
        int64_t a = r.uni(0, nk), b = r.uni(0, nk);
        if (a > b) std::swap(a, b);
        in->ks[i] = static_cast<int32_t>(a);
        in->ke[i] = static_cast<int32_t>(b);
      }
    }
  } else {  // random
    for (int64_t i = 0; i < nq; ++i) {
      int64_t a = r.uni(0, nk), b = r.uni(0, nk);
      if (a > b) std::swap(a, b);
      in->ks[i] = static_cast<int32_t>(a);
      in->ke[i] = static_cast<int32_t>(b);
    }
  }
  if (r.coin(0.1)) {
    in->block_origin.resize(nq);
    for (int64_t i = 0; i < nq; ++i) in->block_origin[i] = static_cast<int32_t>(r.uni(0, in->ks[i]));
  }
  if (r.coin(0.4)) {
    in->seq_end.resize(nq);
    for (int64_t i = 0; i < nq; ++i) in->seq_end[i] = static_cast<int32_t>(r.coin(0.5) ? nk : r.uni(in->ke[i], nk));
  }
}

std::string draw_pattern(const std::string& gen, Rng& r) {
  if (gen == "causal_prefill") return "causal";
  if (gen == "chunked_prefill") return "chunked";
  if (gen == "packed_batch") return "packed";
  if (gen == "sliding_window") return "sliding";
  if (gen == "exactly_k_visible") return "exactly_k";
  if (gen == "fewer_than_k") return "fewer";
  if (gen == "empty_rows") return "empty";
  static const std::vector<std::string> kAll = {"causal", "chunked", "sliding", "packed", "full",
                                                "exactly_k", "fewer", "empty", "random"};
  return r.pick(kAll);
}

/// Applies structure for caller_layout: each query head points at a few needle keys.
void plant_needles(ref::Inputs* in, Rng& r) {
  const int64_t nq = in->shape.nq, nk = in->shape.nk;
  const int H = in->shape.h, D = in->shape.d;
  if (nk == 0) return;
  for (int64_t i = 0; i < nq; ++i)
    for (int h = 0; h < H; ++h) {
      float* q = &in->q[(i * H + h) * D];
      const int64_t lo = in->ks[i], hi = in->ke[i];
      const int64_t j = hi > lo ? r.uni(lo, hi - 1) : r.uni(0, nk - 1);
      for (int d = 0; d < D; ++d) q[d] = to_precision(in->k[j * D + d] * 2.0f + static_cast<float>(r.normal() * 0.1), in->precision);
    }
}

Status flat_case(const std::string& gen, const std::string& values, const GenConfig& cfg, Rng& r, Case* c) {
  compare::Problem& p = c->problem;
  const GenInfo* gi = find_gen(gen);
  p.path = draw_path(*gi, cfg, r);
  const ref::Precision prec = r.pick(cfg.precisions);
  ref::Inputs& in = p.flat;
  in.precision = prec;
  int64_t nq, nk;
  int h, d, k;
  if (gen == "tiny") {
    nq = r.uni(1, 2);
    nk = r.uni(0, 2);
    h = cfg.h_choices.empty() ? static_cast<int>(r.uni(1, 2)) : r.pick(cfg.h_choices);
    d = cfg.d_choices.empty() ? static_cast<int>(r.uni(1, 2)) : r.pick(cfg.d_choices);
    k = static_cast<int>(r.uni(1, 3));
  } else if (gen == "long_rows") {
    nq = r.uni(1, 3);
    nk = (int64_t{1} << 20) + r.uni(0, 4096);
    h = cfg.h_choices.empty() ? static_cast<int>(r.uni(1, 2)) : r.pick(cfg.h_choices);
    d = cfg.d_choices.empty() ? static_cast<int>(r.uni(1, 4)) : r.pick(cfg.d_choices);
    static const std::vector<int> kK = {1, 7, 2048, 4096};
    k = r.pick(kK);
    if (nq > 2) c->sample_rows = 2;
  } else {
    nq = r.log_uni(1, std::max<int64_t>(1, cfg.max_nq));
    nk = r.log_uni(0, std::max<int64_t>(0, cfg.max_nk));
    h = draw_h(cfg, r);
    d = draw_d(cfg, r);
    k = static_cast<int>(r.log_uni(1, std::max<int64_t>(1, nk + 2)));
    if (gen == "exactly_k_visible" && nk == 0) nk = 1;
    if (gen == "exactly_k_visible") k = static_cast<int>(r.uni(1, nk));
    if (gen == "fewer_than_k") k = static_cast<int>(std::max<int64_t>(2, std::min<int64_t>(k, nk + 2)));
    if (gen == "heavy_ties") k = static_cast<int>(r.uni(1, std::max<int64_t>(1, nk)));
  }
  in.shape = ref::Shape{nq, nk, h, d, k};
  if (gen == "long_rows") {
    in.ks.assign(nq, 0);
    in.ke.resize(nq);
    for (int64_t i = 0; i < nq; ++i) in.ke[i] = static_cast<int32_t>(r.coin(0.5) ? nk : nk - nq + i + 1);
  } else {
    draw_ranges(draw_pattern(gen, r), nq, nk, k, r, &in);
  }
  ValueGen qg(values, prec, r), kg(values, prec, r);
  fill(&in.q, static_cast<size_t>(nq * h * d), qg, r);
  fill(&in.k, static_cast<size_t>(nk * d), kg, r);
  fill_weights(&in.w, static_cast<size_t>(nq * h), values, r);
  fill_key_scales(&in.k_scale, static_cast<size_t>(nk), values, prec, r);
  if (gen == "caller_layout") plant_needles(&in, r);
  int64_t maxlen = 0;
  for (int64_t i = 0; i < nq; ++i) maxlen = std::max<int64_t>(maxlen, in.ke[i] - in.ks[i]);
  draw_options(p.path, h, k, maxlen, false, 1, gi->path >= 0, &p.options, r);
  if (gen == "long_rows" && p.path == ref::Path::kHisa) {
    p.options.hisa_block = 1024;
    p.options.hisa_m = std::max(2, (k + 1023) / 1024 + static_cast<int>(r.uni(0, 8)));
  }
  if (gen == "long_rows" && p.path != ref::Path::kDsa) p.options.misa_block = 4096;
  if (p.options.routing == ref::Routing::kQNorm && r.coin(0.5)) {
    in.q_scale.resize(static_cast<size_t>(nq * h));
    for (auto& x : in.q_scale) x = static_cast<float>(std::ldexp(0.5 + r.real(), static_cast<int>(r.uni(-8, 2))));
  }
  return Status::Ok();
}

Status paged_case(const std::string& gen, const std::string& values, const GenConfig& cfg, Rng& r, Case* c) {
  compare::Problem& p = c->problem;
  p.paged = true;
  p.path = r.pick(cfg.paths);
  PagedParts parts;
  parts.precision = r.pick(cfg.precisions);
  parts.h = draw_h(cfg, r);
  parts.d = draw_d(cfg, r);
  parts.next_n = gen == "paged_next_n" ? static_cast<int>(r.uni(3, 9)) : static_cast<int>(r.uni(1, 4));
  parts.page_tokens = r.coin(0.8) ? 64 : static_cast<int>(r.pick(std::vector<int64_t>{1, 4, 16}));
  const int64_t batch = r.uni(1, 4);
  const int64_t maxctx = std::max<int64_t>(1, cfg.max_nk / batch);
  ValueGen kg(values, parts.precision, r), qg(values, parts.precision, r);
  int64_t maxlen = 0;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t ctx = r.log_uni(0, maxctx);
    if (r.coin(0.15)) ctx = r.uni(0, parts.next_n);  // fewer positions than queries
    std::vector<float> kv;
    fill(&kv, static_cast<size_t>(ctx * parts.d), kg, r);
    parts.keys.push_back(std::move(kv));
    std::vector<float> sc;
    fill_key_scales(&sc, static_cast<size_t>(ctx), values, parts.precision, r);
    if (sc.empty()) sc.assign(static_cast<size_t>(ctx), 1.0f);
    parts.scales.push_back(std::move(sc));
    maxlen = std::max(maxlen, ctx);
  }
  parts.k = static_cast<int>(r.log_uni(1, maxlen + 2));
  const int64_t rows = batch * parts.next_n;
  fill(&parts.q, static_cast<size_t>(rows * parts.h * parts.d), qg, r);
  fill_weights(&parts.w, static_cast<size_t>(rows * parts.h), values, r);
  draw_options(p.path, parts.h, parts.k, maxlen, true, parts.next_n, false, &p.options, r);
  if (p.options.routing == ref::Routing::kQNorm && r.coin(0.5)) {
    parts.q_scale.resize(static_cast<size_t>(rows * parts.h));
    for (auto& x : parts.q_scale) x = static_cast<float>(std::ldexp(0.5 + r.real(), static_cast<int>(r.uni(-8, 2))));
  }
  return pack_paged(parts, r.next(), static_cast<int>(r.uni(0, 3)), static_cast<int>(r.uni(0, 2)), &p.paged_in);
}

}  // namespace

GenConfig tiny_config() {
  GenConfig c;
  c.max_nq = 6;
  c.max_nk = 64;
  c.max_h = 8;
  c.max_d = 16;
  return c;
}

uint64_t case_seed(uint64_t seed, int64_t index) {
  return splitmix64(splitmix64(seed) ^ (static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull));
}

const std::vector<std::string>& generator_names() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> n;
    for (const GenInfo& g : gen_table()) n.push_back(g.name);
    return n;
  }();
  return v;
}

std::string generator_reaches(const std::string& generator) {
  const GenInfo* g = find_gen(generator);
  return g ? g->reaches : std::string();
}

const std::vector<std::string>& value_class_names() {
  static const std::vector<std::string> v = {"gaussian", "heavy_tailed", "relu_sparse", "all_equal",
                                             "narrow_range", "low_bits", "signed_zero", "subnormal",
                                             "saturation", "mixed_scales", "nonfinite"};
  return v;
}

Status make_case_with(const std::string& generator, const std::string& values, const GenConfig& cfg,
                      uint64_t seed, int64_t index, Case* out) {
  const GenInfo* gi = find_gen(generator);
  if (!gi) return error("fuzz: unknown generator '", generator, "'");
  if (cfg.paths.empty() || cfg.precisions.empty()) return error("fuzz: the generator config allows no path or precision");
  Rng r(case_seed(seed, index) ^ 0x5EED);
  Case c;
  c.seed = seed;
  c.index = index;
  c.generator = generator;
  c.values = values.empty() ? draw_values(generator, cfg, r) : values;
  if (std::find(value_class_names().begin(), value_class_names().end(), c.values) == value_class_names().end())
    return error("fuzz: unknown value class '", c.values, "'");
  Status st = gi->paged ? paged_case(generator, c.values, cfg, r, &c) : flat_case(generator, c.values, cfg, r, &c);
  INDEXLAB_RETURN_IF_ERROR(st);
  c.problem.options.threads = cfg.threads;
  c.problem.options.allow_nonfinite = c.values == "nonfinite";
  c.problem.name = "fuzz-s" + std::to_string(seed) + "-c" + std::to_string(index) + "-" + c.label();
  *out = std::move(c);
  return Status::Ok();
}

Status make_case(const GenConfig& cfg, uint64_t seed, int64_t index, Case* out) {
  std::vector<std::string> names;
  if (cfg.generators.empty()) {
    for (const GenInfo& g : gen_table())
      if (gen_allowed(g, cfg)) names.push_back(g.name);
  } else {
    for (const std::string& n : cfg.generators) {
      const GenInfo* g = find_gen(n);
      if (!g) return error("fuzz: unknown generator '", n, "'");
      if (gen_allowed(*g, cfg)) names.push_back(n);
    }
  }
  if (names.empty()) return error("fuzz: no generator is enabled by the configuration");
  Rng r(case_seed(seed, index));
  return make_case_with(r.pick(names), "", cfg, seed, index, out);
}

Status unpack_paged(const ref::PagedInputs& in, PagedParts* out) {
  PagedParts p;
  p.precision = in.precision;
  p.h = in.h;
  p.d = in.d;
  p.k = in.k;
  p.next_n = in.next_n;
  p.page_tokens = in.page_tokens;
  const int eb = ref::element_bytes(in.precision);
  const int64_t pb = in.page_bytes();
  for (int64_t b = 0; b < in.batch; ++b) {
    const int64_t ctx = in.context_lens[b];
    std::vector<float> kv(static_cast<size_t>(ctx * in.d)), sc(static_cast<size_t>(ctx));
    for (int64_t t = 0; t < ctx; ++t) {
      const int64_t page = in.block_table[b * in.max_pages + t / in.page_tokens];
      const int64_t slot = t % in.page_tokens;
      const uint8_t* base = &in.cache[page * pb];
      const uint8_t* val = base + slot * in.d * eb;
      for (int dd = 0; dd < in.d; ++dd) {
        float x;
        if (in.precision == ref::Precision::kFp8) x = ref::e4m3_to_float(val[dd]);
        else if (in.precision == ref::Precision::kBf16) x = ref::bf16_to_float(static_cast<uint16_t>(val[2 * dd] | (val[2 * dd + 1] << 8)));
        else std::memcpy(&x, val + 4 * dd, 4);
        kv[t * in.d + dd] = x;
      }
      std::memcpy(&sc[t], base + static_cast<int64_t>(in.page_tokens) * in.d * eb + slot * 4, 4);
    }
    p.keys.push_back(std::move(kv));
    p.scales.push_back(std::move(sc));
  }
  p.q = in.q;
  p.w = in.w;
  p.q_scale = in.q_scale;
  *out = std::move(p);
  return Status::Ok();
}

Status pack_paged(const PagedParts& parts, uint64_t seed, int spare_pages, int extra_cols, ref::PagedInputs* out) {
  if (parts.keys.size() != parts.scales.size()) return error("pack_paged: keys and scales differ in batch");
  Rng r(seed);
  ref::PagedInputs g;
  g.precision = parts.precision;
  g.h = parts.h;
  g.d = parts.d;
  g.k = parts.k;
  g.next_n = parts.next_n;
  g.page_tokens = parts.page_tokens;
  g.batch = static_cast<int64_t>(parts.keys.size());
  const int pt = parts.page_tokens, D = parts.d, eb = ref::element_bytes(parts.precision);
  std::vector<int64_t> ctx(g.batch), pages(g.batch);
  int64_t total_pages = 0, maxp = 0;
  for (int64_t b = 0; b < g.batch; ++b) {
    if (static_cast<int64_t>(parts.keys[b].size()) % std::max(1, D) != 0) return error("pack_paged: ragged keys");
    ctx[b] = D > 0 ? static_cast<int64_t>(parts.keys[b].size()) / D : 0;
    if (static_cast<int64_t>(parts.scales[b].size()) != ctx[b]) return error("pack_paged: scales do not match keys");
    pages[b] = (ctx[b] + pt - 1) / pt;
    total_pages += pages[b];
    maxp = std::max(maxp, pages[b]);
  }
  g.num_pages = total_pages + spare_pages;
  g.max_pages = maxp + extra_cols;
  const int64_t pb = g.page_bytes();
  g.cache.assign(static_cast<size_t>(g.num_pages * pb), 0);
  // Garbage a correct reader never touches: NaN codes and non-positive scales.
  for (int64_t pg = 0; pg < g.num_pages; ++pg) {
    uint8_t* base = &g.cache[pg * pb];
    for (int64_t t = 0; t < static_cast<int64_t>(pt) * D; ++t) {
      if (eb == 1) base[t] = 0x7F;
      else if (eb == 2) { base[2 * t] = 0xC0; base[2 * t + 1] = 0x7F; }
      else { const float nan = std::numeric_limits<float>::quiet_NaN(); std::memcpy(base + 4 * t, &nan, 4); }
    }
    for (int s = 0; s < pt; ++s) {
      const float bad = r.coin(0.5) ? 0.0f : -std::numeric_limits<float>::quiet_NaN();
      std::memcpy(base + static_cast<int64_t>(pt) * D * eb + 4 * s, &bad, 4);
    }
  }
  std::vector<int64_t> perm(g.num_pages);
  for (int64_t t = 0; t < g.num_pages; ++t) perm[t] = t;
  for (int64_t t = g.num_pages - 1; t > 0; --t) std::swap(perm[t], perm[r.uni(0, t)]);
  g.block_table.assign(static_cast<size_t>(g.batch * g.max_pages), 0);
  for (auto& x : g.block_table) x = r.coin(0.5) ? -1 : static_cast<int32_t>(g.num_pages + r.uni(0, 1000));
  g.context_lens.resize(g.batch);
  int64_t next = 0;
  for (int64_t b = 0; b < g.batch; ++b) {
    g.context_lens[b] = static_cast<int32_t>(ctx[b]);
    for (int64_t p = 0; p < pages[b]; ++p) g.block_table[b * g.max_pages + p] = static_cast<int32_t>(perm[next++]);
    for (int64_t t = 0; t < ctx[b]; ++t) {
      uint8_t* base = &g.cache[g.block_table[b * g.max_pages + t / pt] * pb];
      uint8_t* val = base + (t % pt) * D * eb;
      for (int dd = 0; dd < D; ++dd) {
        const float x = parts.keys[b][t * D + dd];
        if (eb == 1) {
          val[dd] = ref::float_to_e4m3_satfinite(x);
        } else if (eb == 2) {
          const uint16_t bits = ref::float_to_bf16(x);
          val[2 * dd] = bits & 0xFF;
          val[2 * dd + 1] = bits >> 8;
        } else {
          std::memcpy(val + 4 * dd, &x, 4);
        }
      }
      std::memcpy(base + static_cast<int64_t>(pt) * D * eb + 4 * (t % pt), &parts.scales[b][t], 4);
    }
  }
  g.q = parts.q;
  g.w = parts.w;
  g.q_scale = parts.q_scale;
  *out = std::move(g);
  return Status::Ok();
}

Status classify_rows(const compare::Problem& p, RowClasses* out) {
  compare::FlatView fv;
  INDEXLAB_RETURN_IF_ERROR(compare::flat_view(p, &fv));
  RowClasses c;
  const int64_t K = fv.in.shape.k;
  for (int64_t i = 0; i < fv.in.shape.nq; ++i) {
    const int64_t n = fv.in.ke[i] - fv.in.ks[i];
    c.max_visible = std::max(c.max_visible, n);
    if (n == 0) ++c.empty;
    else if (n < K) ++c.fewer_than_k;
    else if (n == K) ++c.exactly_k;
    else ++c.more_than_k;
  }
  *out = c;
  return Status::Ok();
}

}  // namespace indexlab::fuzz
