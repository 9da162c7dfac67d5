// Deformable sampling math shared by the CPU and CUDA kernels: where a kernel tap samples,
// which of the four neighbouring pixels take part, the bilinear value and its gradient
// with respect to the sampling position.
//
// Boundary rules (torchvision 0.29.1's, made safe for non-finite positions):
// - the sampled value is zero unless -1 < y < height and -1 < x < width; inside that
//   window, neighbours that fall outside the image count as zero;
// - the position gradient is taken on the slightly wider window -1 <= y < height,
//   -1 <= x < width (torchvision's rule: at y == -1 the value is 0 but the gradient
//   toward the image is not), again with outside neighbours as zero;
// - a NaN or infinite coordinate lies in neither window: value and gradients are zero and
//   no pixel is read. Every comparison below is false for NaN, so it falls out naturally.
#pragma once

#include <detops/macros.h>

#include <cmath>
#include <cstdint>

namespace detops::deform {

// Bits of Taps::flags: which neighbours exist, and whether the value window holds.
enum : uint32_t {
  kTap00 = 1,  // (y0, x0)
  kTap01 = 2,  // (y0, x0 + 1)
  kTap10 = 4,  // (y0 + 1, x0)
  kTap11 = 8,  // (y0 + 1, x0 + 1)
  kAllTaps = 15,
  kInside = 16,  // -1 < y < height and -1 < x < width: the sampled value may be non-zero
};

// The four neighbours of one sampling position in a height x width plane.
template <typename T>
struct Taps {
  int32_t index;   // y0 * width + x0 (may be negative; only flagged neighbours are read)
  uint32_t flags;  // kTap* bits of the neighbours inside the plane, kInside
  T ly;            // y - y0, in [0, 1)
  T lx;            // x - x0, in [0, 1)
};

// Sampling coordinate along one axis for output position `out`, kernel tap `tap`.
template <typename T>
DETOPS_INLINE T sample_coordinate(int64_t out, int64_t stride, int64_t pad, int64_t tap,
                                  int64_t dilation, T offset) {
  return static_cast<T>(out * stride - pad + tap * dilation) + offset;
}

template <typename T>
DETOPS_INLINE Taps<T> make_taps(T y, T x, int64_t height, int64_t width) {
  Taps<T> t{0, 0u, T(0), T(0)};
  const T h = static_cast<T>(height);
  const T w = static_cast<T>(width);
  // Gradient window; false for NaN and for infinities, so floor() below is always finite
  // and within int32 range (planes are checked to have fewer than 2^31 pixels).
  if (!(y >= T(-1) && y < h && x >= T(-1) && x < w)) return t;
  const T fy = std::floor(y);
  const T fx = std::floor(x);
  const int32_t y0 = static_cast<int32_t>(fy);
  const int32_t x0 = static_cast<int32_t>(fx);
  t.ly = y - fy;
  t.lx = x - fx;
  t.index = y0 * static_cast<int32_t>(width) + x0;
  const bool row0 = y0 >= 0;
  const bool row1 = y0 + 1 < height;
  const bool col0 = x0 >= 0;
  const bool col1 = x0 + 1 < width;
  uint32_t f = 0;
  if (row0 && col0) f |= kTap00;
  if (row0 && col1) f |= kTap01;
  if (row1 && col0) f |= kTap10;
  if (row1 && col1) f |= kTap11;
  if (y > T(-1) && x > T(-1)) f |= kInside;
  t.flags = f;
  return t;
}

// The four neighbour values (zero for neighbours outside the plane).
template <typename T>
struct Quad {
  T v00, v01, v10, v11;
};

template <typename T, typename S>
DETOPS_INLINE Quad<T> load_quad(const S* plane, int64_t width, const Taps<T>& t) {
  const S* p = plane + t.index;
  if (t.flags == (kAllTaps | kInside)) {
    return {static_cast<T>(p[0]), static_cast<T>(p[1]), static_cast<T>(p[width]),
            static_cast<T>(p[width + 1])};
  }
  Quad<T> q{T(0), T(0), T(0), T(0)};
  if (t.flags & kTap00) q.v00 = static_cast<T>(p[0]);
  if (t.flags & kTap01) q.v01 = static_cast<T>(p[1]);
  if (t.flags & kTap10) q.v10 = static_cast<T>(p[width]);
  if (t.flags & kTap11) q.v11 = static_cast<T>(p[width + 1]);
  return q;
}

// Bilinear weights of the four neighbours (all zero outside the value window).
template <typename T>
DETOPS_INLINE Quad<T> bilinear_weights(const Taps<T>& t) {
  if (!(t.flags & kInside)) return {T(0), T(0), T(0), T(0)};
  const T hy = T(1) - t.ly;
  const T hx = T(1) - t.lx;
  return {hy * hx, hy * t.lx, t.ly * hx, t.ly * t.lx};
}

// Bilinear value at the position described by t.
template <typename T>
DETOPS_INLINE T interpolate(const Taps<T>& t, const Quad<T>& v) {
  if (!(t.flags & kInside)) return T(0);
  const Quad<T> w = bilinear_weights(t);
  return w.v00 * v.v00 + w.v01 * v.v01 + w.v10 * v.v10 + w.v11 * v.v11;
}

// d value / dy (first) and d value / dx (second) at the position described by t.
template <typename T>
DETOPS_INLINE T grad_y(const Taps<T>& t, const Quad<T>& v) {
  return t.lx * (v.v11 - v.v01) + (T(1) - t.lx) * (v.v10 - v.v00);
}
template <typename T>
DETOPS_INLINE T grad_x(const Taps<T>& t, const Quad<T>& v) {
  return t.ly * (v.v11 - v.v10) + (T(1) - t.ly) * (v.v01 - v.v00);
}

}  // namespace detops::deform
