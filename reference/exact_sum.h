/// Exact summation of doubles (Shewchuk expansions) with one correct rounding to fp32 at the end.
#pragma once
#include <cmath>
#include <vector>

namespace indexlab::ref {

/// Accumulates doubles exactly (no rounding at all, barring overflow) as a non-overlapping
/// expansion, then rounds the exact sum once to fp32 (round to nearest even).
class ExactSum {
 public:
  void add(double x) {
    if (x == 0.0) return;
    // Grow-expansion with zero elimination: each TwoSum is error-free.
    size_t out = 0;
    for (size_t t = 0; t < parts_.size(); ++t) {
      const double y = parts_[t];
      const double s = x + y;
      const double bv = s - x;
      const double err = (x - (s - bv)) + (y - bv);
      if (err != 0.0) parts_[out++] = err;
      x = s;
    }
    parts_.resize(out);
    if (x != 0.0) parts_.push_back(x);
  }
  void clear() { parts_.clear(); }

  /// The exact sum rounded once to fp32.
  float round_to_float() const {
    if (parts_.empty()) return 0.0f;
    // Fold the components into hi with error-free TwoSums; the errors form the exact residual
    // (sum - hi) as an expansion. Repeat until hi settles: then hi = fl64(sum) within half a
    // double ulp, and the residual's sign is exact.
    double hi = 0.0;
    std::vector<double> rest = parts_;
    for (int iter = 0; iter < 8; ++iter) {
      ExactSum residual;
      double acc = hi;
      for (double v : rest) {
        const double s = acc + v;
        const double bv = s - acc;
        residual.add((acc - (s - bv)) + (v - bv));
        acc = s;
      }
      const bool settled = iter > 0 && acc == hi;
      hi = acc;
      rest = std::move(residual.parts_);
      if (settled) break;
    }
    const float f = static_cast<float>(hi);
    // hi is within half a double ulp of the exact sum; double rounding can only go wrong when
    // hi is exactly an fp32 midpoint. Then the residual's sign decides.
    const double fd = static_cast<double>(f);
    const double other = static_cast<double>(hi > fd ? std::nextafter(f, INFINITY) : std::nextafter(f, -INFINITY));
    if (fd != hi && (hi - fd) == (other - hi)) {
      double rsign = 0.0;
      for (auto it = rest.rbegin(); it != rest.rend(); ++it) {
        if (*it != 0.0) { rsign = *it; break; }
      }
      if (rsign != 0.0) {
        // Exact sum lies strictly on one side of the midpoint.
        const bool above = rsign > 0.0;
        const double lo_v = std::min(fd, other), hi_v = std::max(fd, other);
        return static_cast<float>(above ? hi_v : lo_v);
      }
    }
    return f;
  }

 private:
  std::vector<double> parts_;
};

}  // namespace indexlab::ref
