// Bilinear sampling of one level, shared by the CPU and CUDA kernels: where a normalised
// location samples, which of the four neighbouring pixels take part, with what weight, and
// the gradient of the sample with respect to the location.
//
// Semantics are grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)
// at grid = 2 * loc - 1, i.e. pixel coordinates x = loc_x * width - 0.5 and
// y = loc_y * height - 0.5:
// - each of the four neighbours (floor(y) + {0, 1}, floor(x) + {0, 1}) inside the level
//   contributes its bilinear weight times its value, neighbours outside count as zero, so
//   the sample is zero unless -1 < y < height and -1 < x < width, and its gradient toward
//   the level is taken on -1 <= y < height, -1 <= x < width (as grid_sample's);
// - a NaN or infinite coordinate, or one outside that window, has no neighbours: the sample
//   and both its gradients are zero and no value is read. Every comparison below is false
//   for NaN, so it falls out of the window test.
//
// Sums over the head dimension D are corner_dots() below, in one fixed order that the CPU kernels
// (vectorised) and the CUDA kernels (one thread) both follow, so their results agree bit
// for bit.
#pragma once

#include <detops/bilinear.h>
#include <detops/macros.h>

#include <cmath>
#include <cstdint>

namespace detops::deform_attn {

// Bits of Corners::flags: which neighbours lie inside the level (detops/bilinear.h).
using bilinear::k00;
using bilinear::k01;
using bilinear::k10;
using bilinear::k11;
using bilinear::kAll;

// The four neighbours of one sampling location in a height x width level, and their
// bilinear weights (zero without neighbours).
template <typename T>
struct Corners : bilinear::Neighbours<T, int64_t> {
  T w00, w01, w10, w11;
};

// Pixel coordinate of a normalised location along an axis of `size` pixels.
template <typename T>
DETOPS_INLINE T pixel_coordinate(T loc, int64_t size) {
  return loc * static_cast<T>(size) - T(0.5);
}

template <typename T>
DETOPS_INLINE Corners<T> make_corners(T loc_x, T loc_y, int64_t height, int64_t width) {
  Corners<T> c;
  static_cast<bilinear::Neighbours<T, int64_t>&>(c) = bilinear::neighbours<int64_t>(
      pixel_coordinate(loc_y, height), pixel_coordinate(loc_x, width), height, width);
  const T hy = T(1) - c.ly;
  const T hx = T(1) - c.lx;
  const bool any = c.flags != 0u;
  c.w00 = any ? hy * hx : T(0);
  c.w01 = any ? hy * c.lx : T(0);
  c.w10 = any ? c.ly * hx : T(0);
  c.w11 = any ? c.ly * c.lx : T(0);
  return c;
}

template <typename T>
using Quad = bilinear::Quad<T>;

// The bilinear weights times the attention weight `a`: what each neighbour's value is
// multiplied by in the forward sum, and its gradient by in the value gradient.
template <typename T>
DETOPS_INLINE Quad<T> scaled_weights(const Corners<T>& c, T a) {
  return {a * c.w00, a * c.w01, a * c.w10, a * c.w11};
}

// One term of the forward sum: the attention weight times the sample, as the four
// neighbours times their scaled_weights(), added in this order.
template <typename T>
DETOPS_INLINE T weighted_sample(T c00, T c01, T c10, T c11, T v00, T v01, T v10, T v11) {
  return ((c00 * v00 + c01 * v01) + c10 * v10) + c11 * v11;
}

// Number of partial sums corner_dots() keeps: lane j sums the elements d = j (mod kLanes),
// then the lanes are added pairwise. Four lanes fill an SSE register on the CPU, which
// then vectorises the loop; a CUDA thread runs the same order serially.
constexpr int kLanes = 4;

// The dot products of grad_out's row g (D elements) with the four neighbour rows. A
// missing neighbour is passed as a row of D zeros, so every row is read the same way.
template <typename T, typename S>
DETOPS_INLINE Quad<T> corner_dots(const S* g, const S* r00, const S* r01, const S* r10,
                                  const S* r11, int64_t D) {
  T l00[kLanes] = {}, l01[kLanes] = {}, l10[kLanes] = {}, l11[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const T gj = static_cast<T>(g[d + j]);
      l00[j] += gj * static_cast<T>(r00[d + j]);
      l01[j] += gj * static_cast<T>(r01[d + j]);
      l10[j] += gj * static_cast<T>(r10[d + j]);
      l11[j] += gj * static_cast<T>(r11[d + j]);
    }
  }
  for (int j = 0; d < D; ++d, ++j) {
    const T gj = static_cast<T>(g[d]);
    l00[j] += gj * static_cast<T>(r00[d]);
    l01[j] += gj * static_cast<T>(r01[d]);
    l10[j] += gj * static_cast<T>(r10[d]);
    l11[j] += gj * static_cast<T>(r11[d]);
  }
  return {(l00[0] + l00[1]) + (l00[2] + l00[3]), (l01[0] + l01[1]) + (l01[2] + l01[3]),
          (l10[0] + l10[1]) + (l10[2] + l10[3]), (l11[0] + l11[1]) + (l11[2] + l11[3])};
}

// Gradients of one sample from the four dot products s_corner = <grad_out, value_corner>:
// with respect to its attention weight (the sample's dot with grad_out) and to its
// normalised location (x, y).
template <typename T>
struct SampleGrad {
  T weight, x, y;
};

// `a` is the attention weight; x and y come out as gradients of the normalised location
// (d x / d loc_x = width, d y / d loc_y = height).
template <typename T>
DETOPS_INLINE SampleGrad<T> sample_grad(const Corners<T>& c, const Quad<T>& s, T a, int64_t height,
                                        int64_t width) {
  SampleGrad<T> g;
  g.weight = ((c.w00 * s.v00 + c.w01 * s.v01) + c.w10 * s.v10) + c.w11 * s.v11;
  const T dx = c.ly * (s.v11 - s.v10) + (T(1) - c.ly) * (s.v01 - s.v00);
  const T dy = c.lx * (s.v11 - s.v01) + (T(1) - c.lx) * (s.v10 - s.v00);
  g.x = (a * dx) * static_cast<T>(width);
  g.y = (a * dy) * static_cast<T>(height);
  return g;
}

}  // namespace detops::deform_attn
