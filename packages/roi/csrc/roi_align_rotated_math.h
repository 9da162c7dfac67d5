// roi_align_rotated's sampling geometry, shared by its CPU and CUDA kernels, next to
// roi_math.h's (whose grid_size, sample_pos, axis_tap and bilinear it reuses).
//
// A rotated RoI (cx, cy, w, h, r) is torchvision's cxcywhr box, r in degrees: its bins are
// laid out along the box's own axes u = (cos r, -sin r) (width) and v = (sin r, cos r)
// (height), and a sample at local offsets (xx, yy) from the centre lies at
// (cx + xx cos r + yy sin r, cy - xx sin r + yy cos r) on the map, then bilinear as in
// roi_align (same borders: a sample outside [-1, size] on either axis contributes nothing).
// With r = 0 this is roi_align's box (cx -/+ w/2, cy -/+ h/2), the same samples up to
// rounding, with the same `aligned` offset, legacy minimum size (grown from the first
// corner, (x1, y1) at r = 0) and adaptive grid.
//
// Both devices add a bin's samples in the same order with the same bilinear(), so CPU and
// CUDA forwards agree to the rounding of cos/sin; the backward sums in RoI order on the CPU
// (one writer per plane) and with atomics on CUDA.
#pragma once

#include <detops/macros.h>

#include <cmath>
#include <cstdint>

#include "roi_math.h"

namespace detops::roi {

template <typename T>
struct RotatedBox {
  T cx, cy;            // centre in map coordinates, `aligned` offset applied
  T start_h, start_w;  // local offset of the first bin's top-left corner: -extent / 2
  T bin_h, bin_w;
  T cos_r, sin_r;
  int64_t grid_h, grid_w;  // samples per bin along each axis (0: the bin has none)
  T count;                 // divisor of a bin's sum, at least 1
  bool finite;             // false: every sample is NaN or infinite, the row is zero
};

template <typename T>
DETOPS_INLINE RotatedBox<T> rotated_box(T cx, T cy, T w, T h, T r, T scale, bool aligned,
                                        int64_t pooled_h, int64_t pooled_w,
                                        int64_t sampling_ratio) {
  RotatedBox<T> b;
  const T offset = aligned ? T(0.5) : T(0);
  b.cx = cx * scale - offset;
  b.cy = cy * scale - offset;
  T width = w * scale;
  T height = h * scale;
  // The first corner stays where the box puts it; the legacy minimum size (not aligned)
  // grows the box from there along u and v, as roi_align grows a box from (x1, y1).
  b.start_h = -height / T(2);
  b.start_w = -width / T(2);
  if (!aligned) {
    width = width < T(1) ? T(1) : width;  // NaN stays NaN
    height = height < T(1) ? T(1) : height;
  }
  b.bin_h = height / static_cast<T>(pooled_h);
  b.bin_w = width / static_cast<T>(pooled_w);
  const double rad = static_cast<double>(r) * (3.14159265358979323846 / 180.0);
  b.cos_r = static_cast<T>(cos(rad));
  b.sin_r = static_cast<T>(sin(rad));
  b.grid_h = grid_size(height, pooled_h, sampling_ratio);
  b.grid_w = grid_size(width, pooled_w, sampling_ratio);
  const int64_t n = b.grid_h * b.grid_w;
  b.count = static_cast<T>(n > 0 ? n : 1);
  b.finite =
      finite4(b.cx, b.cy, b.start_h, b.start_w) && finite4(b.bin_h, b.bin_w, b.cos_r, b.sin_r);
  return b;
}

// Indices [first, last) of `grid` samples at base + (i + 0.5) * step that may fall in
// [lo, hi]: a superset (two indices of slack for the rounding of the positions).
DETOPS_INLINE void index_range(double base, double step, int64_t grid, double lo, double hi,
                               int64_t& first, int64_t& last) {
  first = 0;
  last = grid;
  if (!(lo <= hi)) {
    last = 0;
    return;
  }
  if (step == 0.0) {
    if (!(base >= lo && base <= hi)) last = 0;
    return;
  }
  double a = (lo - base) / step - 0.5, b = (hi - base) / step - 0.5;
  if (b < a) {
    const double t = a;
    a = b;
    b = t;
  }
  const double g = static_cast<double>(grid);
  double f = floor(a) - 2.0, l = ceil(b) + 3.0;
  // NaN-safe clamps into [0, grid], written so an unordered bound gives an empty range.
  f = f >= 0.0 ? (f <= g ? f : g) : 0.0;
  l = l >= f ? (l <= g ? l : g) : f;
  first = static_cast<int64_t>(f);
  last = static_cast<int64_t>(l);
}

// Calls f(ty, tx) for every sample of bin (ph, pw) that lands on an h x w map, row by row
// in sample order. Large grids (huge boxes with an adaptive grid) visit only the rows and
// columns whose positions can reach the map: the map, widened by a rounding margin, is
// projected on the box's axes, and each row is clipped to it. Every visited sample is
// still tested exactly by axis_tap, so the result is that of visiting all of them.
template <typename T, typename F>
DETOPS_INLINE void for_each_rotated_sample(const RotatedBox<T>& b, int64_t ph, int64_t pw,
                                           int64_t h, int64_t w, F&& f) {
  if (!b.finite || b.grid_h <= 0 || b.grid_w <= 0 || h <= 0 || w <= 0) return;
  const double c = static_cast<double>(b.cos_r), s = static_cast<double>(b.sin_r);
  const double cx = static_cast<double>(b.cx), cy = static_cast<double>(b.cy);
  const double base_h =
      static_cast<double>(b.start_h) + static_cast<double>(ph) * static_cast<double>(b.bin_h);
  const double base_w =
      static_cast<double>(b.start_w) + static_cast<double>(pw) * static_cast<double>(b.bin_w);
  const double step_h = static_cast<double>(b.bin_h) / static_cast<double>(b.grid_h);
  const double step_w = static_cast<double>(b.bin_w) / static_cast<double>(b.grid_w);
  const bool limit = b.grid_h > 16 || b.grid_w > 16;
  // Positions are computed in T: allow for their rounding around the map's border.
  const double mag = fabs(cx) + fabs(cy) + 2.0 * (fabs(base_h) + fabs(base_w)) +
                     fabs(static_cast<double>(b.bin_h)) + fabs(static_cast<double>(b.bin_w)) +
                     static_cast<double>(h) + static_cast<double>(w) + 2.0;
  const double margin = 16.0 * Epsilon<T>::value * mag;
  const double x_lo = -1.0 - margin - cx, x_hi = static_cast<double>(w) + margin - cx;
  const double y_lo = -1.0 - margin - cy, y_hi = static_cast<double>(h) + margin - cy;
  int64_t row0 = 0, row1 = b.grid_h;
  if (limit) {
    // yy of a map point p is (p - c) . v, v = (sin, cos): its range over the map's corners.
    double lo = 0, hi = 0;
    for (int k = 0; k < 4; ++k) {
      const double px = (k & 1) ? x_hi : x_lo, py = (k & 2) ? y_hi : y_lo;
      const double yy = px * s + py * c;
      lo = k == 0 || yy < lo ? yy : lo;
      hi = k == 0 || yy > hi ? yy : hi;
    }
    index_range(base_h, step_h, b.grid_h, lo, hi, row0, row1);
  }
  for (int64_t iy = row0; iy < row1; ++iy) {
    const T yy = sample_pos(b.start_h, b.bin_h, ph, iy, b.grid_h);
    int64_t col0 = 0, col1 = b.grid_w;
    if (limit) {
      // xx with x_lo <= xx c + yy s <= x_hi and y_lo <= -xx s + yy c <= y_hi.
      const double y = static_cast<double>(yy);
      double lo = -HUGE_VAL, hi = HUGE_VAL;
      const double bounds[2][3] = {{c, x_lo - y * s, x_hi - y * s},
                                   {-s, y_lo - y * c, y_hi - y * c}};
      for (const auto& k : bounds) {
        if (k[0] > 0) {
          lo = k[1] / k[0] > lo ? k[1] / k[0] : lo;
          hi = k[2] / k[0] < hi ? k[2] / k[0] : hi;
        } else if (k[0] < 0) {
          lo = k[2] / k[0] > lo ? k[2] / k[0] : lo;
          hi = k[1] / k[0] < hi ? k[1] / k[0] : hi;
        } else if (!(k[1] <= 0.0 && 0.0 <= k[2])) {
          hi = -HUGE_VAL;  // the row misses the map whatever xx is
        }
      }
      index_range(base_w, step_w, b.grid_w, lo, hi, col0, col1);
    }
    for (int64_t ix = col0; ix < col1; ++ix) {
      const T xx = sample_pos(b.start_w, b.bin_w, pw, ix, b.grid_w);
      const T x = b.cx + xx * b.cos_r + yy * b.sin_r;
      const T y = b.cy - xx * b.sin_r + yy * b.cos_r;
      Tap<T> ty, tx;
      if (axis_tap(y, h, ty) && axis_tap(x, w, tx)) f(ty, tx);
    }
  }
}

}  // namespace detops::roi
