/// Bit-exact CPU emulation of indexlab's sm90 fp8 and bf16 DSA logits kernel (see the header for the order).
#include "reference/emulate_sm90_dsa.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "reference/numerics.h"
#include "reference/tc_emulation.h"

namespace indexlab::ref {

namespace {
using DotFn = float (*)(const float*, const float*, int, float);

// The epilogue shared by both element types; `dot` is the wgmma chain of the precision.
float logit_with(DotFn dot_fn, const float* q, const float* w, int h, int d, const float* k, float s) {
  const int hb = h / 8;
  float r[128];
  for (int hh = 0; hh < h; ++hh) {
    const float dot = dot_fn(q + static_cast<int64_t>(hh) * d, k, d, 0.0f);
    r[hh] = dot > 0.0f ? dot : 0.0f;
  }
  float p[4];
  float u[16] = {};
  for (int l = 0; l < 4; ++l) {
    for (int i = 0; i < hb; ++i) {
      const int h0 = 8 * i + 2 * l;
      const float t = r[h0] * w[h0];
      u[i] = std::fma(r[h0 + 1], w[h0 + 1], t);
    }
    for (int st = 1; st < hb; st *= 2)
      for (int i = 0; i + st < hb; i += 2 * st) u[i] = u[i] + u[i + st];
    p[l] = u[0];
  }
  const float total = (p[0] + p[1]) + (p[2] + p[3]);
  return total * s + 0.0f;
}
}  // namespace

float emulate_sm90_dsa_logit(const float* q, const float* w, int h, int d, const float* k, float s) {
  return logit_with(wgmma_fp8_dot, q, w, h, d, k, s);
}

float emulate_sm90_dsa_logit_bf16(const float* q, const float* w, int h, int d, const float* k, float s) {
  return logit_with(wgmma_bf16_dot, q, w, h, d, k, s);
}

Status emulate_sm90_dsa_logits(const Inputs& in, std::vector<float>* logits, int threads) {
  if (!logits) return error("logits is null");
  if (in.precision != Precision::kFp8 && in.precision != Precision::kBf16)
    return error("emulate_sm90_dsa_logits needs fp8 or bf16 inputs (precision = ",
                 precision_name(in.precision), ")");
  const DotFn dot_fn = in.precision == Precision::kBf16 ? wgmma_bf16_dot : wgmma_fp8_dot;
  const int64_t nq = in.shape.nq, nk = in.shape.nk;
  const int h = in.shape.h, d = in.shape.d;
  if (h != 8 && h != 16 && h != 32 && h != 64 && h != 128)
    return error("h = ", h, " is not one of 8, 16, 32, 64, 128");
  if (static_cast<int64_t>(in.q.size()) != nq * h * d || static_cast<int64_t>(in.k.size()) != nk * d ||
      static_cast<int64_t>(in.w.size()) != nq * h || static_cast<int64_t>(in.ks.size()) != nq ||
      static_cast<int64_t>(in.ke.size()) != nq)
    return error("emulate_sm90_dsa_logits: inconsistent input sizes");
  logits->assign(static_cast<size_t>(nq * nk), -std::numeric_limits<float>::infinity());
  const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t a = std::max<int64_t>(0, in.ks[i]), b = std::min<int64_t>(nk, in.ke[i]);
    for (int64_t j = a; j < b; ++j) {
      const float s = in.k_scale.empty() ? 1.0f : in.k_scale[j];
      (*logits)[i * nk + j] = logit_with(dot_fn, in.q.data() + i * h * d, in.w.data() + i * h, h, d,
                                         in.k.data() + j * d, s);
    }
  }
  return Status::Ok();
}

Status emulate_sm90_paged_logits(const PagedInputs& in, std::vector<float>* logits, int threads) {
  if (!logits) return error("logits is null");
  if (in.precision != Precision::kFp8 && in.precision != Precision::kBf16)
    return error("emulate_sm90_paged_logits needs fp8 or bf16 inputs (precision = ",
                 precision_name(in.precision), ")");
  const bool bf16 = in.precision == Precision::kBf16;
  const DotFn dot_fn = bf16 ? wgmma_bf16_dot : wgmma_fp8_dot;
  const int eb = bf16 ? 2 : 1;
  const int h = in.h, d = in.d, nn = in.next_n, pt = in.page_tokens;
  if (h != 8 && h != 16 && h != 32 && h != 64 && h != 128)
    return error("h = ", h, " is not one of 8, 16, 32, 64, 128");
  const int64_t rows = in.rows(), cols = in.max_pages * pt, pb = in.page_bytes();
  logits->assign(static_cast<size_t>(rows * cols), -std::numeric_limits<float>::infinity());
  const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / nn;
    const int64_t ctx = in.context_lens[b];
    const int64_t vis = std::max<int64_t>(0, std::min<int64_t>(ctx, ctx - nn + (r % nn) + 1));
    std::vector<float> kv(static_cast<size_t>(d));
    for (int64_t t = 0; t < vis; ++t) {
      const int64_t page = in.block_table[b * in.max_pages + t / pt];
      const uint8_t* base = in.cache.data() + page * pb;
      if (bf16) {
        for (int x = 0; x < d; ++x) {
          uint16_t v;
          std::memcpy(&v, base + ((t % pt) * d + x) * 2, 2);
          kv[x] = bf16_to_float(v);
        }
      } else {
        for (int x = 0; x < d; ++x) kv[x] = e4m3_to_float(base[(t % pt) * d + x]);
      }
      float s;
      std::memcpy(&s, base + static_cast<int64_t>(pt) * d * eb + (t % pt) * 4, 4);
      (*logits)[r * cols + t] = logit_with(dot_fn, in.q.data() + r * h * d, in.w.data() + r * h,
                                           h, d, kv.data(), s);
    }
  }
  return Status::Ok();
}

}  // namespace indexlab::ref
