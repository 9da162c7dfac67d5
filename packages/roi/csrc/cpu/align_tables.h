// Per-RoI sampling tables of roi_align / ps_roi_align / multi_level_roi_align on CPU.
//
// Bilinear sampling is separable, so a RoI is described by two axis tables: for every bin,
// the rows (or columns) its valid samples read and the summed weight of each. They are
// built once per RoI and reused for every channel. A bin's value is then
//   sum_rows w_y * sum_cols w_x * input[row, col] / count,
// computed row-wise over the RoI's contiguous column span: one pass per output row
// multiplies the weighted rows into a span-long buffer, a second reduces it per bin.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "roi_math.h"

namespace detops::roi::cpu {

template <typename T>
struct AxisTable {
  std::vector<int64_t> offset;  // entries of bin p: [offset[p], offset[p + 1])
  std::vector<int64_t> pos;     // row / column of each entry
  std::vector<T> weight;        // summed interpolation weight of each entry
  int64_t lo = 0, hi = 0;       // positions used: [lo, hi), empty when lo == hi

  void build(T start, T bin, int64_t bins, int64_t grid, int64_t size) {
    offset.assign(static_cast<size_t>(bins) + 1, 0);
    pos.clear();
    weight.clear();
    lo = std::numeric_limits<int64_t>::max();
    hi = std::numeric_limits<int64_t>::min();
    for (int64_t p = 0; p < bins; ++p) {
      const size_t begin = pos.size();
      for_each_tap(start, bin, p, grid, size, [&](const Tap<T>& t) {
        add(begin, t.lo, t.w_lo);
        add(begin, t.hi, t.w_hi);
      });
      offset[static_cast<size_t>(p) + 1] = static_cast<int64_t>(pos.size());
    }
    if (pos.empty()) lo = hi = 0;
  }

 private:
  // Samples arrive in position order, so a repeated position is one of the bin's last two.
  void add(size_t begin, int64_t p, T w) {
    const size_t n = pos.size();
    for (size_t j = n; j > begin && j + 2 > n; --j) {
      if (pos[j - 1] == p) {
        weight[j - 1] += w;
        return;
      }
    }
    pos.push_back(p);
    weight.push_back(w);
    lo = p < lo ? p : lo;
    hi = p + 1 > hi ? p + 1 : hi;
  }
};

template <typename T>
struct AlignTables {
  AxisTable<T> y, x;
  T count = T(1);

  void build(const AlignBox<T>& box, int64_t pooled_h, int64_t pooled_w, int64_t height,
             int64_t width) {
    count = box.count;
    y.build(box.start_h, box.bin_h, pooled_h, box.grid_h, height);
    x.build(box.start_w, box.bin_w, pooled_w, box.grid_w, width);
  }

  // Rough multiply-adds per channel, for the parallel grain.
  double work() const {
    return static_cast<double>(y.pos.size()) * static_cast<double>(x.hi - x.lo) +
           static_cast<double>(x.pos.size()) * static_cast<double>(y.offset.size());
  }
};

}  // namespace detops::roi::cpu
