// CPU plumbing shared by the RoI kernels: the backend traits, per-image RoI buckets, RoIs
// in the compute type and the parallel loop. The math lives in roi_math.h, the checks
// and allocations in roi_entry.h.
//
// Threading: forward passes split (channel, RoI) pairs over threads; backward passes split
// the gradient planes (image, channel) so that every element of grad_input has exactly one
// writer, which visits its RoIs in index order: no atomics, bitwise repeatable results.
#pragma once

#include <detops/backend.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "roi_entry.h"

namespace detops::roi::cpu {

using torch::stable::Tensor;

// What every CPU backend of roi_entry.h shares: detops/backend.h's concept (rois and levels
// are host memory, so bad batch indices and levels raise) and any number of feature maps.
struct RoiCpuBackend : detops::CpuBackend {
  static constexpr size_t kMaxLevels = std::numeric_limits<size_t>::max();
};

// RoIs as (batch, x1, y1, x2, y2) in the compute type T, after the batch-index check.
template <typename T>
struct Rois {
  std::vector<int64_t> batch;
  std::vector<T> box;  // 4 per RoI
  int64_t size() const { return static_cast<int64_t>(batch.size()); }
};

// `rois` is the entry's contiguous [K, 5] tensor, its batch indices already checked.
template <typename S, typename T>
Rois<T> read_rois(const Tensor& rois, int64_t batch_size) {
  const int64_t k = rois.size(0);
  const S* data = rois.const_data_ptr<S>();
  Rois<T> r;
  r.batch.resize(k);
  r.box.resize(4 * k);
  for (int64_t i = 0; i < k; ++i) {
    r.batch[i] = batch_index(data[5 * i], batch_size);
    for (int j = 0; j < 4; ++j) r.box[4 * i + j] = static_cast<T>(data[5 * i + 1 + j]);
  }
  return r;
}

// RoI indices grouped by key (image, or level * batch + image), each group in index order.
inline std::vector<std::vector<int64_t>> bucket(const std::vector<int64_t>& key, int64_t groups) {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(groups));
  for (size_t i = 0; i < key.size(); ++i) out[static_cast<size_t>(key[i])].push_back(i);
  return out;
}

// Runs body(begin, end) over [0, n) on torch's intra-op pool. `work_per_item` is a rough
// cost in multiply-adds: small problems stay on the calling thread.
template <typename F>
void parallel(int64_t n, double work_per_item, const F& body) {
  if (n <= 0) return;
  constexpr double kMinWorkPerTask = 32768.0;
  const double per = work_per_item < 1.0 ? 1.0 : work_per_item;
  int64_t grain = static_cast<int64_t>(kMinWorkPerTask / per) + 1;
  if (grain >= n) {
    body(0, n);
    return;
  }
  torch::stable::parallel_for(0, n, grain, body);
}

template <typename S>
constexpr bool is_narrow() {
  return sizeof(S) < sizeof(float);
}

// Runs body(acc) for one gradient plane of `area` elements stored at dst: acc is dst itself
// for float32 / float64, and a zeroed float32 scratch plane rounded into dst afterwards for
// float16 / bfloat16, so sums of many RoIs accumulate in float32.
template <typename S, typename T, typename F>
void accumulate_plane(S* dst, int64_t area, std::vector<T>& scratch, const F& body) {
  T* acc;
  if constexpr (is_narrow<S>()) {
    if (scratch.size() < static_cast<size_t>(area)) scratch.resize(static_cast<size_t>(area));
    acc = scratch.data();
  } else {
    acc = dst;
  }
  std::fill(acc, acc + area, T(0));
  body(acc);
  if constexpr (is_narrow<S>()) {
    for (int64_t j = 0; j < area; ++j) dst[j] = static_cast<S>(acc[j]);
  }
}

}  // namespace detops::roi::cpu
