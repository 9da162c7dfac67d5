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

#include <detops/bilinear.h>
#include <detops/macros.h>

#include <cmath>
#include <cstdint>

namespace detops::deform {

// Bits of Taps::flags: which neighbours exist (detops/bilinear.h), and whether the value
// window holds.
enum : uint32_t {
  kTap00 = bilinear::k00,
  kTap01 = bilinear::k01,
  kTap10 = bilinear::k10,
  kTap11 = bilinear::k11,
  kAllTaps = bilinear::kAll,
  kInside = 16,  // -1 < y < height and -1 < x < width: the sampled value may be non-zero
};

// The four neighbours of one sampling position in a height x width plane (planes are
// checked to have fewer than 2^31 pixels, so the index fits int32).
template <typename T>
using Taps = bilinear::Neighbours<T, int32_t>;

// Sampling coordinate along one axis for output position `out`, kernel tap `tap`.
template <typename T>
DETOPS_INLINE T sample_coordinate(int64_t out, int64_t stride, int64_t pad, int64_t tap,
                                  int64_t dilation, T offset) {
  return static_cast<T>(out * stride - pad + tap * dilation) + offset;
}

template <typename T>
DETOPS_INLINE Taps<T> make_taps(T y, T x, int64_t height, int64_t width) {
  Taps<T> t = bilinear::neighbours<int32_t>(y, x, height, width);
  if (t.flags != 0u && y > T(-1) && x > T(-1)) t.flags |= kInside;
  return t;
}

// The four neighbour values (zero for neighbours outside the plane).
template <typename T>
using Quad = bilinear::Quad<T>;

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
