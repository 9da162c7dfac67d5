// Sampling geometry of the four RoI ops, written once for the CPU and CUDA kernels.
//
// roi_align / ps_roi_align: a box maps to a grid of bins, each bin to grid_h x grid_w
// sample points, and each sample to a bilinear interpolation of the feature map. The
// interpolation is separable: a sample at (y, x) reads rows {lo, hi} of y with weights
// {w_lo, w_hi} and columns {lo, hi} of x likewise, and it contributes only when both y and
// x lie in [-1, size]. The same weights give the gradient (each tap receives weight * grad).
// roi_pool / ps_roi_pool: a box maps to integer bins [lo, hi) per axis.
//
// Operation order follows torchvision 0.29.1's CPU kernels (positions computed in the same
// sequence of roundings), so borders and degenerate boxes select the same taps. Unlike
// torchvision, every path is safe for NaN/infinite coordinates and huge boxes: a sample at
// a non-finite position lies outside the map, a non-finite pooling box is empty, and
// sample grids are capped and visited only where they can touch the map.
//
// Where the two devices still sum in a different order: roi_align and ps_roi_align on CPU
// merge each RoI's samples into separable row and column tables (cpu/align_tables.h) and
// sum a bin as sum_rows w_y * sum_cols w_x * v, while a CUDA thread adds the bin's bilinear
// taps sample by sample (for_each_tap, bilinear); the backward ops on CUDA add into the
// gradient with atomics in no fixed order, while on CPU one writer per plane adds its RoIs
// in index order. Those results agree to rounding, not bitwise. roi_pool's maximum
// (bin_max) and ps_roi_pool's mean (bin_mean) run the same code in the same order on both.
#pragma once

#include <detops/macros.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

namespace detops::roi {

// ---------------------------------------------------------------------------------------
// RoI rows, levels and layout

// Image of a RoI: column 0 when it is an integer in [0, batch), else -1 (fractional, out of
// range, NaN or infinite). The range test comes before the integer cast, because a cast of
// NaN or of a value beyond int64 is undefined behaviour.
template <typename S>
DETOPS_INLINE int64_t batch_index(S value, int64_t batch) {
  const double v = static_cast<double>(value);
  if (!(v >= 0.0 && v < static_cast<double>(batch))) return -1;
  const int64_t b = static_cast<int64_t>(v);
  return static_cast<double>(b) == v ? b : -1;
}

// multi_level_roi_align: whether a RoI's level selects one of the `levels` maps. -1 is the
// documented "no level"; anything else outside [0, levels) is an error on CPU (see
// roi_entry.h) and, like -1, a zero row on CUDA.
DETOPS_INLINE bool has_level(int64_t level, int64_t levels) {
  return level >= 0 && level < levels;
}

// Element strides of a 4-D [N, C, H, W] tensor: any layout, channels_last included.
struct Strides {
  int64_t n, c, y, x;
  DETOPS_INLINE int64_t plane(int64_t b, int64_t ch) const { return b * n + ch * c; }
};

// Samples per bin per axis never exceed this (adaptive grids of absurdly large boxes).
constexpr int64_t kMaxGrid = int64_t(1) << 30;
// Pooling box coordinates are clamped to +-2^40 before integer arithmetic.
constexpr double kMaxPoolCoord = 1099511627776.0;

// ---------------------------------------------------------------------------------------
// roi_align and ps_roi_align

template <typename T>
struct AlignBox {
  T start_h, start_w;      // top-left corner in feature-map coordinates
  T bin_h, bin_w;          // bin size
  int64_t grid_h, grid_w;  // samples per bin along each axis (0: the bin has none)
  T count;                 // the divisor of a bin's sum: grid_h * grid_w, at least 1
};

// Samples per bin along one axis: `sampling_ratio` when positive, else ceil(extent / bins)
// (adaptive). Empty, negative or NaN extents give 0; huge ones are capped.
template <typename T>
DETOPS_INLINE int64_t grid_size(T extent, int64_t bins, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  const T g = ceil(extent / static_cast<T>(bins));
  if (!(g >= T(1))) return 0;
  if (!(g < static_cast<T>(kMaxGrid))) return kMaxGrid;
  return static_cast<int64_t>(g);
}

// The smallest box extent, in feature-map pixels, align_box lets through.
enum class MinExtent {
  kNone,      // ps_roi_align, aligned roi_align
  kOnePixel,  // legacy (unaligned) roi_align
};

// roi_align: offset is 0.5 when aligned, and legacy (unaligned) boxes are at least 1x1.
// ps_roi_align: offset 0.5, no minimum size.
template <typename T>
DETOPS_INLINE AlignBox<T> align_box(T x1, T y1, T x2, T y2, T scale, T offset, MinExtent min_extent,
                                    int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio) {
  AlignBox<T> b;
  b.start_w = x1 * scale - offset;
  b.start_h = y1 * scale - offset;
  T width = (x2 * scale - offset) - b.start_w;
  T height = (y2 * scale - offset) - b.start_h;
  if (min_extent == MinExtent::kOnePixel) {
    width = width < T(1) ? T(1) : width;  // NaN stays NaN
    height = height < T(1) ? T(1) : height;
  }
  b.bin_h = height / static_cast<T>(pooled_h);
  b.bin_w = width / static_cast<T>(pooled_w);
  b.grid_h = grid_size(height, pooled_h, sampling_ratio);
  b.grid_w = grid_size(width, pooled_w, sampling_ratio);
  const int64_t n = b.grid_h * b.grid_w;
  b.count = static_cast<T>(n > 0 ? n : 1);
  return b;
}

template <typename T>
DETOPS_INLINE AlignBox<T> roi_align_box(T x1, T y1, T x2, T y2, T scale, bool aligned,
                                        int64_t pooled_h, int64_t pooled_w,
                                        int64_t sampling_ratio) {
  return align_box(x1, y1, x2, y2, scale, aligned ? T(0.5) : T(0),
                   aligned ? MinExtent::kNone : MinExtent::kOnePixel, pooled_h, pooled_w,
                   sampling_ratio);
}

template <typename T>
DETOPS_INLINE AlignBox<T> ps_roi_align_box(T x1, T y1, T x2, T y2, T scale, int64_t pooled_h,
                                           int64_t pooled_w, int64_t sampling_ratio) {
  return align_box(x1, y1, x2, y2, scale, T(0.5), MinExtent::kNone, pooled_h, pooled_w,
                   sampling_ratio);
}

// Position of sample i (of `grid`) in bin p along an axis starting at `start`.
template <typename T>
DETOPS_INLINE T sample_pos(T start, T bin, int64_t p, int64_t i, int64_t grid) {
  return start + static_cast<T>(p) * bin +
         static_cast<T>(static_cast<float>(i) + 0.5f) * bin / static_cast<T>(grid);
}

// One axis of a bilinear tap: positions lo/hi (clamped into the map) and their weights.
template <typename T>
struct Tap {
  int64_t lo, hi;
  T w_lo, w_hi;
};

// The tap of position v on an axis of `size` pixels; false when the sample lies outside
// [-1, size] (NaN included) or the axis is empty: it then contributes nothing.
template <typename T>
DETOPS_INLINE bool axis_tap(T v, int64_t size, Tap<T>& t) {
  if (size <= 0 || !(v >= T(-1) && v <= static_cast<T>(size))) return false;
  if (v <= T(0)) v = T(0);
  int64_t lo = static_cast<int64_t>(v);
  int64_t hi = lo + 1;
  if (lo >= size - 1) {
    lo = hi = size - 1;
    v = static_cast<T>(lo);
  }
  const T l = v - static_cast<T>(lo);
  t.lo = lo;
  t.hi = hi;
  t.w_hi = l;
  t.w_lo = T(1) - l;
  return true;
}

template <typename T>
struct Epsilon {
  static constexpr double value = 1.2e-7;  // float and narrower compute in float
};
template <>
struct Epsilon<double> {
  static constexpr double value = 2.3e-16;
};

// Sample indices [first, last) of bin p that may land in [-1, size]: a superset of the
// valid samples (callers still test each one with axis_tap), so a box far larger than the
// map costs only the samples that touch it. Small grids are returned whole.
//
// A non-finite start or bin (an infinite box, or a width that overflows T) puts every
// sample at NaN or +-inf: p * bin is NaN for p = 0 and infinite otherwise, and
// (i + 0.5) * bin / grid is infinite. No sample is valid then, so the range is empty and the
// cost is zero whatever the grid. Finite inputs give finite bounds below, because the
// adaptive grid is ceil(extent / bins): step = bin / grid stays near 1 for large grids.
template <typename T>
DETOPS_INLINE void sample_range(T start, T bin, int64_t p, int64_t grid, int64_t size,
                                int64_t& first, int64_t& last) {
  first = 0;
  last = grid;
  if (grid <= 16) return;
  if (!((start - start) == T(0) && (bin - bin) == T(0))) {
    last = 0;
    return;
  }
  const double base =
      static_cast<double>(start) + static_cast<double>(p) * static_cast<double>(bin);
  const double step = static_cast<double>(bin) / static_cast<double>(grid);
  if (step == 0.0) {
    // Every sample sits at `base`.
    last = base >= -1.0 && base <= static_cast<double>(size) ? grid : 0;
    return;
  }
  const double a = (-1.0 - base) / step - 0.5;
  const double b = (static_cast<double>(size) - base) / step - 0.5;
  // Slack for the rounding of positions computed in T rather than exactly.
  const double mag = fabs(base) + fabs(static_cast<double>(bin)) + static_cast<double>(size) + 2.0;
  const double slack = 4.0 + 8.0 * Epsilon<T>::value * mag / fabs(step);
  double lo = floor((a < b ? a : b) - slack);
  double hi = ceil((a < b ? b : a) + slack) + 1.0;
  const double g = static_cast<double>(grid);
  // Comparisons written so that a NaN bound (not reachable for finite inputs, see above)
  // clamps to an empty range instead of reaching the integer casts.
  lo = lo >= 0.0 ? (lo <= g ? lo : g) : 0.0;
  hi = hi >= lo ? (hi <= g ? hi : g) : lo;
  first = static_cast<int64_t>(lo);
  last = static_cast<int64_t>(hi);
}

// Calls f(tap) for every sample of bin p along one axis (grid samples from `start`, bins of
// `bin`) that lands on an axis of `size` pixels, in sample order.
template <typename T, typename F>
DETOPS_INLINE void for_each_tap(T start, T bin, int64_t p, int64_t grid, int64_t size, F&& f) {
  if (grid <= 0) return;
  int64_t first = 0, last = 0;
  sample_range(start, bin, p, grid, size, first, last);
  for (int64_t i = first; i < last; ++i) {
    Tap<T> t;
    if (axis_tap(sample_pos(start, bin, p, i, grid), size, t)) f(t);
  }
}

// The bilinear value at taps (ty, tx) of a plane with row stride sy and column stride sx.
template <typename S, typename T>
DETOPS_INLINE T bilinear(const S* plane, int64_t sy, int64_t sx, const Tap<T>& ty,
                         const Tap<T>& tx) {
  const S* lo = plane + ty.lo * sy;
  const S* hi = plane + ty.hi * sy;
  return ty.w_lo *
             (tx.w_lo * static_cast<T>(lo[tx.lo * sx]) + tx.w_hi * static_cast<T>(lo[tx.hi * sx])) +
         ty.w_hi *
             (tx.w_lo * static_cast<T>(hi[tx.lo * sx]) + tx.w_hi * static_cast<T>(hi[tx.hi * sx]));
}

// ---------------------------------------------------------------------------------------
// roi_pool and ps_roi_pool

template <typename T>
struct PoolBox {
  int64_t start_h, start_w;  // rounded top-left corner
  T bin_h, bin_w;            // bin size
  bool valid;                // false for non-finite coordinates: every bin is empty
};

template <typename T>
DETOPS_INLINE int64_t round_coord(T v) {
  const double r = round(static_cast<double>(v));
  return static_cast<int64_t>(r < -kMaxPoolCoord ? -kMaxPoolCoord
                                                 : (r > kMaxPoolCoord ? kMaxPoolCoord : r));
}

template <typename T>
DETOPS_INLINE bool finite4(T a, T b, T c, T d) {
  // x - x is 0 for finite x and NaN for NaN and +-inf (no <cmath> needed on the device).
  return (a - a) == T(0) && (b - b) == T(0) && (c - c) == T(0) && (d - d) == T(0);
}

// The two pooling ops round boxes to bins by different conventions (torchvision's):
// roi_pool counts the end pixel (extent = end - start + 1) and clamps bins to the map
// size; ps_roi_pool does not count it (extent = end - start) and clamps to size - 1.
enum class PoolOp { kRoiPool, kPsRoiPool };

template <typename T>
DETOPS_INLINE PoolBox<T> pool_box(T x1, T y1, T x2, T y2, T scale, PoolOp pool_op, int64_t pooled_h,
                                  int64_t pooled_w) {
  PoolBox<T> b;
  const T sx1 = x1 * scale, sy1 = y1 * scale, sx2 = x2 * scale, sy2 = y2 * scale;
  b.valid = finite4(sx1, sy1, sx2, sy2);
  if (!b.valid) {
    b.start_h = b.start_w = 0;
    b.bin_h = b.bin_w = T(0);
    return b;
  }
  b.start_w = round_coord(sx1);
  b.start_h = round_coord(sy1);
  const int64_t extra = pool_op == PoolOp::kRoiPool ? 1 : 0;
  int64_t width = round_coord(sx2) - b.start_w + extra;
  int64_t height = round_coord(sy2) - b.start_h + extra;
  width = width < 1 ? 1 : width;
  height = height < 1 ? 1 : height;
  b.bin_h = static_cast<T>(height) / static_cast<T>(pooled_h);
  b.bin_w = static_cast<T>(width) / static_cast<T>(pooled_w);
  return b;
}

// Pixels [lo, hi) of bin p along an axis, clamped into [0, limit]. roi_pool clamps to the
// map size; ps_roi_pool to size - 1, as torchvision's ps_roi_pool forward does.
template <typename T>
DETOPS_INLINE void pool_bin(int64_t start, T bin, int64_t p, int64_t limit, int64_t& lo,
                            int64_t& hi) {
  lo = static_cast<int64_t>(floor(static_cast<T>(p) * bin)) + start;
  hi = static_cast<int64_t>(ceil(static_cast<T>(p + 1) * bin)) + start;
  lo = lo < 0 ? 0 : lo;  // min(max(v, 0), limit): limit wins when it is -1
  hi = hi < 0 ? 0 : hi;
  lo = lo > limit ? limit : lo;
  hi = hi > limit ? limit : hi;
}

// The last pixel a bin may reach: roi_pool's bins stop at the map size, ps_roi_pool's at
// size - 1, as torchvision's ps_roi_pool forward does.
DETOPS_INLINE int64_t pool_limit(int64_t size, PoolOp pool_op) {
  return pool_op == PoolOp::kRoiPool ? size : size - 1;
}

// roi_pool: the maximum over rows [y0, y1) x columns [x0, x1) of G planes `sc` apart and
// its offset y * width + x in the plane (int32: the entry checks planes fit). Scanned in
// row-major order with `>` as torchvision does, so the first maximum wins, NaN never does,
// and a bin of only NaN / -inf keeps (-FLT_MAX, -1); an empty bin is (0, -1). Selects,
// not branches: which element wins is data-dependent and would mispredict. The CPU scans
// G = 4 channels at once: independent compare/select chains share the bin bookkeeping.
template <int G, typename S, typename T>
DETOPS_INLINE void bin_max(const S* plane, int64_t sc, int64_t sy, int64_t sx, int64_t width,
                           int64_t y0, int64_t y1, int64_t x0, int64_t x1, T* best,
                           int32_t* where) {
  const bool empty = y1 <= y0 || x1 <= x0;
  for (int g = 0; g < G; ++g) {
    best[g] = empty ? T(0) : static_cast<T>(-FLT_MAX);
    where[g] = -1;
  }
  for (int64_t y = y0; y < y1; ++y) {
    const S* row = plane + y * sy;
    const int32_t base = static_cast<int32_t>(y * width);
    for (int64_t x = x0; x < x1; ++x) {
      const S* p = row + x * sx;
      const int32_t here = base + static_cast<int32_t>(x);
      for (int g = 0; g < G; ++g) {
        const T v = static_cast<T>(p[g * sc]);
        const bool take = v > best[g];
        where[g] = take ? here : where[g];
        best[g] = take ? v : best[g];
      }
    }
  }
}

// ps_roi_pool: the mean over rows [y0, y1) x columns [x0, x1), summed row-major; 0 for an
// empty bin.
template <typename S, typename T>
DETOPS_INLINE T bin_mean(const S* plane, int64_t sy, int64_t sx, int64_t y0, int64_t y1, int64_t x0,
                         int64_t x1) {
  if (y1 <= y0 || x1 <= x0) return T(0);
  T sum = T(0);
  for (int64_t y = y0; y < y1; ++y) {
    const S* row = plane + y * sy;
    for (int64_t x = x0; x < x1; ++x) sum += static_cast<T>(row[x * sx]);
  }
  return sum / static_cast<T>((y1 - y0) * (x1 - x0));
}

// ps_* ops: the input channel read by output channel c_out at bin (ph, pw).
DETOPS_INLINE int64_t ps_channel(int64_t c_out, int64_t ph, int64_t pw, int64_t pooled_h,
                                 int64_t pooled_w) {
  return (c_out * pooled_h + ph) * pooled_w + pw;
}

}  // namespace detops::roi
