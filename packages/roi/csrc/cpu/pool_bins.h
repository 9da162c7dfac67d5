// Integer bins of roi_pool / ps_roi_pool RoIs on CPU, computed once per RoI.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/roi_cpu.h"
#include "roi_math.h"

namespace detops::roi::cpu {

// Bin p covers rows [h_lo[p], h_hi[p]) and columns [w_lo[q], w_hi[q]).
struct PoolBins {
  std::vector<int64_t> h_lo, h_hi, w_lo, w_hi;

  bool empty(int64_t ph, int64_t pw) const { return h_hi[ph] <= h_lo[ph] || w_hi[pw] <= w_lo[pw]; }
  int64_t area(int64_t ph, int64_t pw) const {
    return (h_hi[ph] - h_lo[ph]) * (w_hi[pw] - w_lo[pw]);
  }
};

// The bins of every RoI, by pool_op's conventions (see PoolOp).
template <typename T>
std::vector<PoolBins> pool_bins(const Rois<T>& rois, T scale, PoolOp pool_op, int64_t pooled_h,
                                int64_t pooled_w, int64_t height, int64_t width) {
  const int64_t k = rois.size();
  std::vector<PoolBins> out(static_cast<size_t>(k));
  const int64_t limit_h = pool_limit(height, pool_op);
  const int64_t limit_w = pool_limit(width, pool_op);
  for (int64_t r = 0; r < k; ++r) {
    const T* b = &rois.box[4 * r];
    const PoolBox<T> box = pool_box(b[0], b[1], b[2], b[3], scale, pool_op, pooled_h, pooled_w);
    PoolBins& bins = out[r];
    bins.h_lo.assign(pooled_h, 0);
    bins.h_hi.assign(pooled_h, 0);
    bins.w_lo.assign(pooled_w, 0);
    bins.w_hi.assign(pooled_w, 0);
    if (!box.valid) continue;  // every bin empty
    for (int64_t p = 0; p < pooled_h; ++p) {
      pool_bin(box.start_h, box.bin_h, p, limit_h, bins.h_lo[p], bins.h_hi[p]);
    }
    for (int64_t p = 0; p < pooled_w; ++p) {
      pool_bin(box.start_w, box.bin_w, p, limit_w, bins.w_lo[p], bins.w_hi[p]);
    }
  }
  return out;
}

inline double pool_work(const std::vector<PoolBins>& bins, int64_t pooled_h, int64_t pooled_w) {
  double work = 0;
  for (const PoolBins& b : bins) {
    for (int64_t ph = 0; ph < pooled_h; ++ph) {
      for (int64_t pw = 0; pw < pooled_w; ++pw) {
        if (!b.empty(ph, pw)) work += static_cast<double>(b.area(ph, pw));
      }
    }
  }
  return work + static_cast<double>(bins.size() * pooled_h * pooled_w);
}

}  // namespace detops::roi::cpu
