// Per-pair NMS math, shared by the CPU and CUDA kernels. It reproduces torchvision's CPU
// kernel operation for operation (same min/max argument order, same rounding), so kept
// indices match exactly, including for NaN and infinite coordinates.
#pragma once

#include <detops/macros.h>

#include <cmath>
#include <limits>

namespace detops::nms {

// std::max / std::min semantics: a NaN first argument is returned, a NaN second ignored.
template <typename T>
DETOPS_INLINE T max_like_std(T a, T b) {
  return a < b ? b : a;
}
template <typename T>
DETOPS_INLINE T min_like_std(T a, T b) {
  return b < a ? b : a;
}

// a * b, rounded on its own. A PTX mul without a rounding mode may be fused with the add
// or subtraction that uses it into one fma (by ptxas, or later by a driver JIT-compiling
// the shipped PTX for a newer GPU), which rounds once where the CPU rounds twice: an IoU
// could then differ in its last bit between devices, and a box whose IoU sits at the
// threshold be kept on one and suppressed on the other. __fmul_rn / __dmul_rn emit
// mul.rn, which is never fused.
template <typename T>
DETOPS_INLINE T mul(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == sizeof(double)) {
    return __dmul_rn(a, b);
  } else {
    return __fmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

template <typename T>
DETOPS_INLINE T box_area(T x1, T y1, T x2, T y2) {
  return mul(x2 - x1, y2 - y1);
}

// A box in (x1, y1, x2, y2) format with its area, which every IoU needs and which is
// computed once per box rather than once per pair.
template <typename T>
struct Box {
  T x1, y1, x2, y2;
  T area;
};

template <typename T>
DETOPS_INLINE Box<T> make_box(T x1, T y1, T x2, T y2) {
  return Box<T>{x1, y1, x2, y2, box_area(x1, y1, x2, y2)};
}

// Whether kept box a suppresses box b: IoU(a, b) > threshold. NaN IoU never suppresses.
template <typename T>
DETOPS_INLINE bool suppresses(const Box<T>& a, const Box<T>& b, T threshold) {
  const T w = max_like_std(T(0), min_like_std(a.x2, b.x2) - max_like_std(a.x1, b.x1));
  const T h = max_like_std(T(0), min_like_std(a.y2, b.y2) - max_like_std(a.y1, b.y1));
  const T inter = mul(w, h);
  return inter / (a.area + b.area - inter) > threshold;
}

// torchvision compares the IoU, computed in T, with the threshold as a double. For every
// T value x, `x > t` equals `x > below(t)` where below(t) is the largest T not above t, so
// the comparison can stay in T (and vectorise).
template <typename T>
inline T threshold_in(double t) {
  T r = static_cast<T>(t);
  if (static_cast<double>(r) > t) r = std::nextafter(r, -std::numeric_limits<T>::infinity());
  return r;
}

// IoU of boxes a and b, computed as suppresses() computes it.
template <typename T>
DETOPS_INLINE T iou(const Box<T>& a, const Box<T>& b) {
  const T w = max_like_std(T(0), min_like_std(a.x2, b.x2) - max_like_std(a.x1, b.x1));
  const T h = max_like_std(T(0), min_like_std(a.y2, b.y2) - max_like_std(a.y1, b.y1));
  const T inter = mul(w, h);
  return inter / (a.area + b.area - inter);
}

// Soft-NMS (soft_nms, batched_soft_nms).
enum class SoftMethod { kLinear, kGaussian };

struct SoftParams {
  SoftMethod method;
  double iou_threshold;    // linear only
  double sigma;            // gaussian only, > 0
  double score_threshold;  // scores below it are dropped
};

// Score of a box after a box with IoU `overlap` with it was selected. The weight is
// computed in double and the product rounded once to T. A weight of exactly 1 (no
// overlap, or a NaN IoU, which leaves the score alone) returns the score unchanged, as
// multiplying by 1 would.
template <typename T>
DETOPS_INLINE T decayed(T score, T overlap, const SoftParams& p) {
  const double o = static_cast<double>(overlap);
  double weight;
  if (p.method == SoftMethod::kLinear) {
    if (!(o > p.iou_threshold)) return score;
    weight = 1.0 - o;
  } else {
    if (!(o < 0.0 || o > 0.0)) return score;  // 0 or NaN: exp(-0) = 1, NaN left alone
#ifdef __CUDA_ARCH__
    weight = ::exp(-mul(o, o) / p.sigma);
#else
    weight = std::exp(-mul(o, o) / p.sigma);
#endif
  }
  return static_cast<T>(mul(static_cast<double>(score), weight));
}

template <typename T>
DETOPS_INLINE bool dropped(T score, const SoftParams& p) {
  return static_cast<double>(score) < p.score_threshold;  // NaN never is
}

// Whether a box scoring a (input index ia) is selected before one scoring b (index ib):
// NaN above every number, then the higher score, then the lower index.
template <typename T>
DETOPS_INLINE bool selected_before(T a, int64_t ia, T b, int64_t ib) {
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan || b_nan) return a_nan && (!b_nan || ia < ib);
  return a > b || (a == b && ia < ib);
}

}  // namespace detops::nms
