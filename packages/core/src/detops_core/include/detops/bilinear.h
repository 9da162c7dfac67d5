// Bilinear sampling with zero padding, the rule deform_conv2d and grid_sample
// (padding_mode="zeros") share: which of the four pixels around a position (y, x) exist,
// and the position's offsets from the top-left one. Shared by the CPU and CUDA kernels of
// every package that samples this way.
//
// - The neighbours are (floor(y) + {0, 1}, floor(x) + {0, 1}); those outside the
//   height x width plane count as zero, so a sample is zero unless -1 < y < height and
//   -1 < x < width.
// - Positions are considered on the slightly wider window -1 <= y < height,
//   -1 <= x < width (the window of the position gradient); outside it, or for a NaN or
//   infinite coordinate, there are no neighbours and no pixel is read. Every comparison
//   below is false for NaN, so that falls out of the window test.
#pragma once

#include <detops/macros.h>

#include <cmath>
#include <cstdint>

namespace detops::bilinear {

// Bits of Neighbours::flags: which neighbours lie inside the plane.
enum : uint32_t {
  k00 = 1,  // (y0, x0)
  k01 = 2,  // (y0, x0 + 1)
  k10 = 4,  // (y0 + 1, x0)
  k11 = 8,  // (y0 + 1, x0 + 1)
  kAll = 15,
};

// Four values, one per neighbour.
template <typename T>
struct Quad {
  T v00, v01, v10, v11;
};

template <typename T, typename Index>
struct Neighbours {
  Index index;     // y0 * width + x0 (may be negative; only flagged neighbours are read)
  uint32_t flags;  // k* bits
  T ly;            // y - y0, in [0, 1); zero without neighbours
  T lx;            // x - x0, in [0, 1); zero without neighbours
};

// `Index` must hold height * width: callers check their planes' sizes at the boundary.
template <typename Index, typename T>
DETOPS_INLINE Neighbours<T, Index> neighbours(T y, T x, int64_t height, int64_t width) {
  Neighbours<T, Index> n{0, 0u, T(0), T(0)};
  // False for NaN and infinities, so floor() below is finite and within Index's range.
  if (!(y >= T(-1) && y < static_cast<T>(height) && x >= T(-1) && x < static_cast<T>(width))) {
    return n;
  }
  const T fy = std::floor(y);
  const T fx = std::floor(x);
  const Index y0 = static_cast<Index>(fy);
  const Index x0 = static_cast<Index>(fx);
  n.ly = y - fy;
  n.lx = x - fx;
  n.index = y0 * static_cast<Index>(width) + x0;
  const bool row0 = y0 >= 0;
  const bool row1 = y0 + 1 < height;
  const bool col0 = x0 >= 0;
  const bool col1 = x0 + 1 < width;
  uint32_t f = 0;
  if (row0 && col0) f |= k00;
  if (row0 && col1) f |= k01;
  if (row1 && col0) f |= k10;
  if (row1 && col1) f |= k11;
  n.flags = f;
  return n;
}

}  // namespace detops::bilinear
