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

template <typename T>
DETOPS_INLINE T box_area(T x1, T y1, T x2, T y2) {
  return (x2 - x1) * (y2 - y1);
}

// Whether kept box a suppresses box b: IoU(a, b) > threshold. NaN IoU never suppresses.
template <typename T>
DETOPS_INLINE bool suppresses(T ax1, T ay1, T ax2, T ay2, T a_area, T bx1, T by1, T bx2, T by2,
                              T b_area, T threshold) {
  const T w = max_like_std(T(0), min_like_std(ax2, bx2) - max_like_std(ax1, bx1));
  const T h = max_like_std(T(0), min_like_std(ay2, by2) - max_like_std(ay1, by1));
  const T inter = w * h;
  return inter / (a_area + b_area - inter) > threshold;
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

}  // namespace detops::nms
