/// Built-in synthetic workloads (see workloads.h).
#include "compare/workloads.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "reference/numerics.h"

namespace indexlab::compare {
namespace {

struct Gen {
  std::mt19937_64 rng;
  std::normal_distribution<float> g{0.0f, 1.0f};
  std::uniform_real_distribution<float> u{0.0f, 1.0f};
  explicit Gen(uint64_t seed) : rng(seed) {}
  float normal() { return g(rng); }
  float uniform(float a, float b) { return a + (b - a) * u(rng); }
  int64_t below(int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(rng); }
};

void causal_ranges(ref::RawInputs* r) {
  const int64_t nq = r->shape.nq, nk = r->shape.nk;
  r->ks.assign(nq, 0);
  r->ke.resize(nq);
  for (int64_t i = 0; i < nq; ++i) r->ke[i] = static_cast<int32_t>(std::max<int64_t>(0, nk - nq + i + 1));
}

/// Adds a rotary-style position code to dims [0, 2m): dot(code(a), code(b)) = sum cos((a-b) theta).
void add_position(float* v, int64_t pos, int m, float amp) {
  for (int f = 0; f < m; ++f) {
    const double theta = std::pow(10000.0, -static_cast<double>(f) / m) * 0.5;
    v[2 * f] += amp * static_cast<float>(std::cos(pos * theta));
    v[2 * f + 1] += amp * static_cast<float>(std::sin(pos * theta));
  }
}

}  // namespace

const std::vector<std::string>& workload_kinds() {
  static const std::vector<std::string> kinds = {"gaussian", "sinks_local", "needles", "specialized_heads",
                                                 "ties", "narrow_range", "low_bits", "short_rows", "packed"};
  return kinds;
}

std::string workload_description(const std::string& kind) {
  if (kind == "gaussian") return "plain Gaussian q and k, mixed-sign head weights";
  if (kind == "sinks_local") return "attention sinks (the first 4 keys) plus a local window from position codes";
  if (kind == "needles") return "8 planted needle keys at depths 5%..95%; each query looks for one";
  if (kind == "specialized_heads") return "4 heads carry most of the weight and attend to a topic";
  if (kind == "ties") return "every key identical: all visible scores tie";
  if (kind == "narrow_range") return "scores in [1, 1.25): few distinct values after quantization";
  if (kind == "low_bits") return "scores differing only in their low bits";
  if (kind == "short_rows") return "rows with exactly K, fewer than K, one, and no visible keys";
  if (kind == "packed") return "a packed batch of sequences of different lengths (ks > 0, seq_end)";
  return "";
}

Status make_workload(const WorkloadSpec& sp, ref::RawInputs* out) {
  if (std::find(workload_kinds().begin(), workload_kinds().end(), sp.kind) == workload_kinds().end()) {
    std::string all;
    for (const auto& k : workload_kinds()) all += (all.empty() ? "" : ", ") + k;
    return error("workload '", sp.kind, "' is not one of ", all);
  }
  if (sp.nq < 1 || sp.nk < 1 || sp.h < 1 || sp.d < 2 || sp.k < 1) {
    return error("workload '", sp.kind, "': nq, nk, h, k must be >= 1 and d >= 2 (got nq=", sp.nq, " nk=", sp.nk,
                 " h=", sp.h, " d=", sp.d, " k=", sp.k, ")");
  }
  if (sp.nq > sp.nk) return error("workload '", sp.kind, "': nq = ", sp.nq, " exceeds nk = ", sp.nk);
  Gen gen(sp.seed * 1000003 + std::hash<std::string>{}(sp.kind));
  ref::RawInputs r;
  r.shape = ref::Shape{sp.nq, sp.nk, sp.h, sp.d, sp.k};
  const int H = sp.h, D = sp.d;
  const int64_t nq = sp.nq, nk = sp.nk;
  r.q.resize(nq * H * D);
  r.k.resize(nk * D);
  r.w.resize(nq * H);
  causal_ranges(&r);
  auto qp = [&](int64_t i, int h) { return &r.q[(i * H + h) * D]; };
  auto kp = [&](int64_t j) { return &r.k[j * D]; };
  const int64_t first_pos = nk - nq;  // position of query 0
  const std::string& kind = sp.kind;

  if (kind == "gaussian" || kind == "short_rows" || kind == "packed") {
    for (auto& x : r.q) x = gen.normal();
    for (auto& x : r.k) x = gen.normal();
    for (auto& x : r.w) x = gen.uniform(-0.3f, 1.0f);
  } else if (kind == "sinks_local") {
    const int m = std::min(8, D / 4);
    for (auto& x : r.k) x = 0.4f * gen.normal();
    for (auto& x : r.q) x = 0.4f * gen.normal();
    for (int64_t j = 0; j < nk; ++j) {
      add_position(kp(j), j, m, 1.0f);
      if (j < 4) kp(j)[D - 1] += 4.0f;  // sinks: a direction every query shares
    }
    for (int64_t i = 0; i < nq; ++i)
      for (int h = 0; h < H; ++h) {
        add_position(qp(i, h), first_pos + i, m, 1.2f);
        qp(i, h)[D - 1] += 1.0f;
      }
    for (auto& x : r.w) x = gen.uniform(0.1f, 1.0f);
  } else if (kind == "needles") {
    constexpr int kNeedles = 8;
    std::vector<std::vector<float>> dir(kNeedles, std::vector<float>(D));
    for (auto& v : dir) {
      double n2 = 0;
      for (auto& x : v) { x = gen.normal(); n2 += x * x; }
      for (auto& x : v) x = static_cast<float>(x / std::sqrt(n2));
    }
    for (auto& x : r.k) x = 0.5f * gen.normal();
    for (int n = 0; n < kNeedles; ++n) {
      const int64_t j = static_cast<int64_t>((0.05 + 0.9 * n / (kNeedles - 1)) * (first_pos > 0 ? first_pos : nk - 1));
      for (int dd = 0; dd < D; ++dd) kp(j)[dd] += 6.0f * dir[n][dd];
    }
    for (int64_t i = 0; i < nq; ++i) {
      const int n = static_cast<int>(gen.below(kNeedles));
      for (int h = 0; h < H; ++h)
        for (int dd = 0; dd < D; ++dd) qp(i, h)[dd] = 0.5f * gen.normal() + 3.0f * dir[n][dd];
    }
    for (auto& x : r.w) x = gen.uniform(0.2f, 1.0f);
  } else if (kind == "specialized_heads") {
    std::vector<float> topic(D);
    for (auto& x : topic) x = gen.normal();
    for (int64_t j = 0; j < nk; ++j) {
      const bool on_topic = gen.uniform(0, 1) < 0.1f;
      for (int dd = 0; dd < D; ++dd) kp(j)[dd] = gen.normal() + (on_topic ? 0.6f * topic[dd] : 0.0f);
    }
    for (int64_t i = 0; i < nq; ++i)
      for (int h = 0; h < H; ++h) {
        const bool special = h % std::max(1, H / 4) == 0;
        for (int dd = 0; dd < D; ++dd) qp(i, h)[dd] = gen.normal() + (special ? 0.8f * topic[dd] : 0.0f);
        r.w[i * H + h] = special ? gen.uniform(0.8f, 1.2f) : gen.uniform(-0.05f, 0.05f);
      }
  } else if (kind == "ties") {
    std::vector<float> key(D);
    for (auto& x : key) x = gen.normal() * 0.7f + 0.1f;
    for (int64_t j = 0; j < nk; ++j) std::copy(key.begin(), key.end(), kp(j));
    for (auto& x : r.q) x = gen.normal();
    for (auto& x : r.w) x = gen.uniform(0.1f, 1.0f);
  } else if (kind == "narrow_range" || kind == "low_bits") {
    // Queries read dimension 0 only, so every head's dot is k[j, 0] * q[i, h, 0].
    for (int64_t j = 0; j < nk; ++j) {
      for (int dd = 1; dd < D; ++dd) kp(j)[dd] = gen.normal();
      kp(j)[0] = kind == "narrow_range" ? gen.uniform(1.0f, 1.25f)
                                        : 1.0f + std::ldexp(static_cast<float>(gen.below(1024)), -22);
    }
    for (int64_t i = 0; i < nq; ++i)
      for (int h = 0; h < H; ++h) {
        qp(i, h)[0] = 1.0f + 0.125f * static_cast<float>(h % 3);
        r.w[i * H + h] = 1.0f / H + 0.001f * h;
      }
  }

  if (kind == "short_rows") {
    // Rows cycle through: exactly K visible, K - 1, 1, none, all.
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t want[] = {sp.k, sp.k - 1, 1, 0, nk};
      const int64_t n = std::min<int64_t>(nk, std::max<int64_t>(0, want[i % 5]));
      r.ks[i] = static_cast<int32_t>(gen.below(nk - n + 1));
      r.ke[i] = static_cast<int32_t>(r.ks[i] + n);
    }
  } else if (kind == "packed") {
    // Sequences of random lengths packed back to back; each query is causal in its sequence.
    std::vector<int64_t> starts = {0};
    while (starts.back() < nk) starts.push_back(std::min(nk, starts.back() + 1 + gen.below(std::max<int64_t>(2, nk / 3))));
    r.seq_end.resize(nq);
    for (int64_t i = 0; i < nq; ++i) {
      const size_t s = static_cast<size_t>(gen.below(static_cast<int64_t>(starts.size()) - 1));
      const int64_t a = starts[s], b = starts[s + 1];
      r.ks[i] = static_cast<int32_t>(a);
      r.ke[i] = static_cast<int32_t>(a + 1 + gen.below(b - a));
      r.seq_end[i] = static_cast<int32_t>(b);
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

Status to_paged(const ref::Inputs& flat, int next_n, uint64_t seed, ref::PagedInputs* out) {
  const int64_t nq = flat.shape.nq;
  if (next_n < 1) return error("next_n must be >= 1, got ", next_n);
  if (nq % next_n != 0) return error("nq = ", nq, " is not a multiple of next_n = ", next_n);
  ref::PagedInputs g;
  g.precision = flat.precision;
  g.h = flat.shape.h;
  g.d = flat.shape.d;
  g.k = flat.shape.k;
  g.next_n = next_n;
  g.batch = nq / next_n;
  g.page_tokens = 64;
  std::vector<int32_t> ctx(g.batch, 0);
  for (int64_t b = 0; b < g.batch; ++b)
    for (int r = 0; r < next_n; ++r) ctx[b] = std::max(ctx[b], flat.ke[b * next_n + r]);
  int64_t max_ctx = 1, need = 0;
  for (int32_t c : ctx) {
    max_ctx = std::max<int64_t>(max_ctx, c);
    need += (c + 63) / 64;
  }
  g.max_pages = (max_ctx + 63) / 64;
  g.num_pages = need + 2;
  const int D = g.d, eb = ref::element_bytes(g.precision);
  g.cache.assign(g.num_pages * g.page_bytes(), 0xFF);  // spare pages hold NaN codes
  std::vector<int32_t> phys(g.num_pages);
  std::iota(phys.begin(), phys.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(phys.begin(), phys.end(), rng);
  g.block_table.assign(g.batch * g.max_pages, -1);
  g.context_lens = ctx;
  int64_t next = 0;
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t lp = 0; lp < (ctx[b] + 63) / 64; ++lp) g.block_table[b * g.max_pages + lp] = phys[next++];
    for (int64_t t = 0; t < ctx[b]; ++t) {
      uint8_t* base = &g.cache[g.block_table[b * g.max_pages + t / 64] * g.page_bytes()];
      for (int dd = 0; dd < D; ++dd) {
        const float x = flat.k[t * D + dd];
        uint8_t* dst = base + ((t % 64) * D + dd) * eb;
        if (g.precision == ref::Precision::kFp8) {
          *dst = ref::float_to_e4m3_satfinite(x);
        } else if (g.precision == ref::Precision::kBf16) {
          const uint16_t v = ref::float_to_bf16(x);
          dst[0] = v & 0xFF;
          dst[1] = v >> 8;
        } else {
          std::memcpy(dst, &x, 4);
        }
      }
      const float sc = flat.k_scale.empty() ? 1.0f : flat.k_scale[t];
      std::memcpy(base + 64 * D * eb + (t % 64) * 4, &sc, 4);
    }
  }
  g.q = flat.q;
  g.w = flat.w;
  g.q_scale = flat.q_scale;
  *out = std::move(g);
  return Status::Ok();
}

}  // namespace indexlab::compare
