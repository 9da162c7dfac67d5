// CPU kernels of detops::box_iou_rotated, nms_rotated and batched_nms_rotated.
//
// Each box is turned into its RBox (centre, half axes, area, radius, in double) once, not
// once per pair. box_iou_rotated splits the rows of the matrix over threads. NMS sorts by
// score, then walks the list greedily: each kept box marks the later live boxes it
// suppresses among those close enough along x to overlap it;
// batched_nms_rotated groups the boxes by class after the score sort and runs the classes
// in parallel, since boxes of different classes never interact.
#include <detops/contiguous.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/score_order.h"
#include "nms_rotated_entry.h"
#include "nms_rotated_math.h"

namespace detops::nms::rotated::cpu {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

template <typename S>
std::vector<RBox> rboxes(const S* b, int64_t n) {
  std::vector<RBox> out(n);
  for (int64_t i = 0; i < n; ++i, b += 5) out[i] = make_rbox(b[0], b[1], b[2], b[3], b[4]);
  return out;
}

template <typename S>
void iou_matrix(const Tensor& boxes1, const Tensor& boxes2, Tensor& out) {
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  const std::vector<RBox> a = rboxes(boxes1.const_data_ptr<S>(), n);
  const std::vector<RBox> b = rboxes(boxes2.const_data_ptr<S>(), m);
  S* o = out.mutable_data_ptr<S>();
  // A pair costs ~100 ns when the boxes are close, a few ns when the circle test rejects
  // it: a grain of ~16k pairs keeps the thread wake-up small against the work.
  const int64_t grain = std::max<int64_t>(1, 16384 / m);
  torch::stable::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      S* row = o + i * m;
      for (int64_t j = 0; j < m; ++j) {
        row[j] = static_cast<S>(static_cast<acc_t<S>>(iou(a[i], b[j])));
      }
    }
  });
}

// Greedy NMS over positions [begin, end) of `boxes` (decreasing score); kept[p] = 1 for
// every kept position. A kept box only tests the boxes whose centres lie within its
// radius plus the largest radius along x (an x-sorted list): iou() returns exactly 0 for
// every box beyond, which suppresses nothing for a threshold >= 0. A negative (or NaN)
// threshold takes the full scan, so its semantics stay those of testing every pair.
void greedy(const std::vector<RBox>& boxes, int64_t begin, int64_t end, double threshold,
            uint8_t* dead, uint8_t* kept) {
  std::vector<int64_t> by_x;
  double max_radius = 0;
  for (int64_t p = begin; p < end; ++p) {
    if (!boxes[p].finite) continue;  // NaN IoU with everything: never suppressed
    by_x.push_back(p);
    max_radius = boxes[p].radius > max_radius ? boxes[p].radius : max_radius;
  }
  std::sort(by_x.begin(), by_x.end(), [&](int64_t a, int64_t b) {
    return boxes[a].cx < boxes[b].cx || (boxes[a].cx == boxes[b].cx && a < b);
  });
  std::vector<double> xs(by_x.size());
  for (size_t k = 0; k < by_x.size(); ++k) xs[k] = boxes[by_x[k]].cx;
  const bool windowed = threshold >= 0;
  for (int64_t i = begin; i < end; ++i) {
    if (dead[i]) continue;
    kept[i] = 1;
    const RBox& a = boxes[i];
    if (!a.finite) continue;
    size_t lo = 0, hi = by_x.size();
    if (windowed) {
      const double reach = (a.radius + max_radius) * (1 + 1e-6);
      lo = std::lower_bound(xs.begin(), xs.end(), a.cx - reach) - xs.begin();
      hi = std::upper_bound(xs.begin(), xs.end(), a.cx + reach) - xs.begin();
    }
    for (size_t k = lo; k < hi; ++k) {
      const int64_t j = by_x[k];
      // IoU > threshold; a NaN IoU never suppresses.
      if (j > i && !dead[j] && iou(a, boxes[j]) > threshold) dead[j] = 1;
    }
  }
}

template <typename S>
Tensor nms(const Tensor& boxes_in, const Tensor& scores_in, const Tensor* idxs_in,
           double threshold) {
  using T = acc_t<S>;
  const Tensor boxes = detops::contiguous(boxes_in);
  const Tensor scores = detops::contiguous(scores_in);
  const int64_t n = boxes.size(0);
  const S* box_data = boxes.const_data_ptr<S>();
  const S* score_data = scores.const_data_ptr<S>();
  std::vector<T> score_values(n);
  for (int64_t i = 0; i < n; ++i) score_values[i] = static_cast<T>(score_data[i]);
  const std::vector<int64_t> order = detops::nms::cpu::order_by_score(score_values.data(), n);

  // position -> box: the score order, grouped by class for batched_nms_rotated.
  std::vector<int64_t> position_box = order;
  std::vector<int64_t> group_start{0};
  if (idxs_in != nullptr) {
    const Tensor idxs = detops::contiguous(*idxs_in);
    const int64_t* cls = idxs.const_data_ptr<int64_t>();
    detops::nms::cpu::group_by_class(cls, position_box);
    for (int64_t k = 1; k < n; ++k) {
      if (cls[position_box[k]] != cls[position_box[k - 1]]) group_start.push_back(k);
    }
  }
  group_start.push_back(n);
  std::vector<RBox> sorted(n);
  for (int64_t p = 0; p < n; ++p) {
    const S* b = box_data + 5 * position_box[p];
    sorted[p] = make_rbox(b[0], b[1], b[2], b[3], b[4]);
  }
  std::vector<uint8_t> dead(n, 0), kept(n, 0);
  const int64_t groups = static_cast<int64_t>(group_start.size()) - 1;
  torch::stable::parallel_for(0, groups, 1, [&](int64_t g_begin, int64_t g_end) {
    for (int64_t g = g_begin; g < g_end; ++g) {
      greedy(sorted, group_start[g], group_start[g + 1], threshold, dead.data(), kept.data());
    }
  });

  // Kept boxes in score order: mark them by rank, then read the ranks in order.
  std::vector<uint8_t> kept_box(n, 0);
  for (int64_t p = 0; p < n; ++p) {
    if (kept[p]) kept_box[position_box[p]] = 1;
  }
  std::vector<int64_t> result;
  for (int64_t r = 0; r < n; ++r) {
    if (kept_box[order[r]]) result.push_back(order[r]);
  }
  Tensor out =
      torch::stable::new_empty(boxes, {static_cast<int64_t>(result.size())}, ScalarType::Long);
  if (!result.empty()) {
    std::memcpy(out.mutable_data_ptr<int64_t>(), result.data(), result.size() * sizeof(int64_t));
  }
  return out;
}

struct NmsRotatedBackend : detops::CpuBackend {
  static constexpr int64_t kMaxBoxes = std::numeric_limits<int64_t>::max();
  template <typename S>
  static void iou(const Tensor& boxes1, const Tensor& boxes2, Tensor& out) {
    iou_matrix<S>(boxes1, boxes2, out);
  }
  template <typename S>
  static Tensor nms(const Tensor& boxes, const Tensor& scores, const Tensor* idxs, double thr) {
    return cpu::nms<S>(boxes, scores, idxs, thr);
  }
};

}  // namespace
}  // namespace detops::nms::rotated::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::nms::rotated::NmsRotatedEntry<detops::nms::rotated::cpu::NmsRotatedBackend>;
  m.impl("box_iou_rotated", TORCH_BOX(&Entry::box_iou_rotated));
  m.impl("nms_rotated", TORCH_BOX(&Entry::nms_rotated));
  m.impl("batched_nms_rotated", TORCH_BOX(&Entry::batched_nms_rotated));
}
