// CPU kernels of detops::nms and detops::batched_nms.
//
// Boxes are sorted once by score and copied into structure-of-arrays buffers. Greedy NMS
// then walks that list: each kept box marks the boxes it suppresses in one branch-free,
// vectorisable pass over the remaining candidates, and the candidate arrays are compacted
// whenever more than half of what remains is dead, so later passes touch live boxes only.
// batched_nms groups boxes by class after the score sort and runs the classes in parallel.
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/compact.h"
#include "cpu/score_order.h"
#include "nms_entry.h"
#include "nms_math.h"

namespace detops::nms::cpu {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// Candidates in decreasing score order (within one class for batched_nms).
template <typename T>
struct Candidates {
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int64_t> rank;  // position in the global score order
  explicit Candidates(int64_t n) : x1(n), y1(n), x2(n), y2(n), area(n), rank(n) {}
};

// The coordinate and area columns of Candidates, seen from one position on.
template <typename T>
struct BoxColumns {
  T* x1;
  T* y1;
  T* x2;
  T* y2;
  T* area;

  BoxColumns from(int64_t k) const { return {x1 + k, y1 + k, x2 + k, y2 + k, area + k}; }
  Box<T> at(int64_t j) const { return {x1[j], y1[j], x2[j], y2[j], area[j]}; }
};

// Classes (or images) run in parallel only when there is enough work: a parallel region
// costs a thread wake-up, which for a few thousand boxes is more than the NMS itself.
constexpr int64_t kParallelMinBoxes = 65536;

// One mark per candidate, as wide as T so the marking loop vectorises in one lane width.
template <typename T>
using Mark = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;

// Marks every candidate in [0, count) of b that box a suppresses; returns how many were
// newly marked. No branches in the body, so the compiler vectorises it.
template <typename T>
int64_t mark_suppressed(Box<T> a, BoxColumns<T> b, Mark<T>* __restrict dead, int64_t count,
                        T threshold) {
  // Compilers ignore __restrict on struct members; without it on these locals they assume
  // the columns may alias `dead` and the loop is not vectorised.
  const T* __restrict x1 = b.x1;
  const T* __restrict y1 = b.y1;
  const T* __restrict x2 = b.x2;
  const T* __restrict y2 = b.y2;
  const T* __restrict area = b.area;
  Mark<T> newly = 0;
  for (int64_t j = 0; j < count; ++j) {
    const Box<T> candidate{x1[j], y1[j], x2[j], y2[j], area[j]};
    const Mark<T> s = suppresses(a, candidate, threshold) ? 1 : 0;
    newly += s & ~dead[j];
    dead[j] |= s;
  }
  return static_cast<int64_t>(newly);
}

// Greedy NMS over candidates [begin, end) of c (decreasing score). Sets kept[rank] = 1 for
// every kept box, and stops once `limit` boxes are kept. Reorders the range in place;
// `dead` is scratch for the same range and must be zero on entry.
template <typename T>
void greedy(Candidates<T>& c, Mark<T>* dead, int64_t begin, int64_t end, T threshold, int64_t limit,
            uint8_t* kept) {
  const BoxColumns<T> boxes{c.x1.data(), c.y1.data(), c.x2.data(), c.y2.data(), c.area.data()};
  T* x1 = boxes.x1;
  T* y1 = boxes.y1;
  T* x2 = boxes.x2;
  T* y2 = boxes.y2;
  T* area = boxes.area;
  int64_t* rank = c.rank.data();
  int64_t live_end = end;
  int64_t pos = begin;
  int64_t dead_after_pos = 0;
  for (int64_t count = 0; pos < live_end && count < limit; ++count) {
    kept[rank[pos]] = 1;
    if (count + 1 == limit) break;  // the last box that may be kept suppresses nothing we need
    const int64_t next = pos + 1;
    dead_after_pos +=
        mark_suppressed(boxes.at(pos), boxes.from(next), dead + next, live_end - next, threshold);
    pos = next;
    while (pos < live_end && dead[pos]) {
      ++pos;
      --dead_after_pos;
    }
    // Compact when dead candidates dominate what is left: later passes then skip them.
    if (dead_after_pos > 16 && 2 * dead_after_pos > live_end - pos) {
      live_end = compact_live(dead, pos, live_end, x1, y1, x2, y2, area, rank);
      dead_after_pos = 0;
    }
  }
}

// Copies boxes into c in the given order, converting to the compute type T.
template <typename T, typename S>
void gather(const S* boxes, const std::vector<int64_t>& order, const std::vector<int64_t>& rank_of,
            Candidates<T>& c) {
  for (size_t k = 0; k < order.size(); ++k) {
    const S* b = boxes + 4 * order[k];
    // torchvision computes areas with tensor ops in the input dtype: same operations here.
    const Box<T> box = make_box(static_cast<T>(b[0]), static_cast<T>(b[1]), static_cast<T>(b[2]),
                                static_cast<T>(b[3]));
    c.x1[k] = box.x1;
    c.y1[k] = box.y1;
    c.x2[k] = box.x2;
    c.y2[k] = box.y2;
    c.area[k] = box.area;
    c.rank[k] = rank_of[order[k]];
  }
}

// Kept indices of boxes [n, 4] / scores [n] (classes `cls`, or null for one class), in
// decreasing score order, at most `limit` of them. `parallel` lets classes run in parallel.
template <typename T, typename S>
std::vector<int64_t> keep(const S* box_data, const S* score_data, const int64_t* cls, int64_t n,
                          double iou_threshold, int64_t limit, bool parallel) {
  std::vector<T> score_values(n);
  for (int64_t i = 0; i < n; ++i) score_values[i] = static_cast<T>(score_data[i]);
  std::vector<int64_t> order = order_by_score(score_values.data(), n);
  std::vector<int64_t> rank_of(n);
  for (int64_t r = 0; r < n; ++r) rank_of[order[r]] = r;

  // Class runs [group_start[g], group_start[g + 1]) of the candidate list.
  std::vector<int64_t> group_start{0};
  std::vector<int64_t> by_class;  // batched_nms only: `order` grouped by class
  if (cls != nullptr) {
    by_class = order;
    group_by_class(cls, by_class);
    for (int64_t k = 1; k < n; ++k) {
      if (cls[by_class[k]] != cls[by_class[k - 1]]) group_start.push_back(k);
    }
  }
  const std::vector<int64_t>& candidate_order = cls != nullptr ? by_class : order;
  group_start.push_back(n);

  Candidates<T> c(n);
  gather(box_data, candidate_order, rank_of, c);
  std::vector<Mark<T>> dead(n);  // zero: each class range is used by one greedy() call
  std::vector<uint8_t> kept(n, 0);
  const T threshold = threshold_in<T>(iou_threshold);
  const int64_t groups = static_cast<int64_t>(group_start.size()) - 1;
  // The first `limit` kept boxes overall are among the first `limit` of each class: every
  // class may stop there.
  auto run_groups = [&](int64_t g_begin, int64_t g_end) {
    for (int64_t g = g_begin; g < g_end; ++g) {
      greedy(c, dead.data(), group_start[g], group_start[g + 1], threshold, limit, kept.data());
    }
  };
  if (parallel && groups > 1 && n >= kParallelMinBoxes) {
    torch::stable::parallel_for(0, groups, 1, run_groups);
  } else {
    run_groups(0, groups);
  }

  std::vector<int64_t> result;
  for (int64_t r = 0; r < n && static_cast<int64_t>(result.size()) < limit; ++r) {
    if (kept[r]) result.push_back(order[r]);
  }
  return result;
}

template <typename T, typename S>
Tensor run_greedy(const Tensor& boxes_in, const Tensor& scores_in, const Tensor* idxs_in,
                  double iou_threshold, int64_t limit) {
  const Tensor boxes = detops::contiguous(boxes_in);
  const Tensor scores = detops::contiguous(scores_in);
  Tensor idxs;
  if (idxs_in != nullptr) idxs = detops::contiguous(*idxs_in);
  const std::vector<int64_t> result =
      keep<T>(boxes.const_data_ptr<S>(), scores.const_data_ptr<S>(),
              idxs_in != nullptr ? idxs.const_data_ptr<int64_t>() : nullptr, boxes.size(0),
              iou_threshold, limit, /*parallel=*/true);
  Tensor out =
      torch::stable::new_empty(boxes, {static_cast<int64_t>(result.size())}, ScalarType::Long);
  if (!result.empty()) {
    std::memcpy(out.mutable_data_ptr<int64_t>(), result.data(), result.size() * sizeof(int64_t));
  }
  return out;
}

// nms / batched_nms of each image of boxes [B, N, 4]; images run in parallel.
template <typename T, typename S>
Tensor run_per_image(const Tensor& boxes_in, const Tensor& scores_in, const Tensor* idxs_in,
                     double iou_threshold, int64_t limit) {
  const int64_t images = boxes_in.size(0);
  const int64_t n = boxes_in.size(1);
  const Tensor boxes = detops::contiguous(boxes_in);
  const Tensor scores = detops::contiguous(scores_in);
  Tensor idxs;
  if (idxs_in != nullptr) idxs = detops::contiguous(*idxs_in);
  const S* box_data = boxes.const_data_ptr<S>();
  const S* score_data = scores.const_data_ptr<S>();
  const int64_t* cls = idxs_in != nullptr ? idxs.const_data_ptr<int64_t>() : nullptr;
  std::vector<std::vector<int64_t>> kept(images);
  // Images are handed out one at a time: their costs differ (clustered boxes, classes),
  // and a thread that starts late (a busy machine) finds the work already done instead
  // of holding a fixed half of it. Below kParallelMinBoxes boxes in all, waking threads
  // costs more than it saves, as in batched_nms.
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(1); b < images; b = next.fetch_add(1)) {
      kept[b] = keep<T>(box_data + 4 * n * b, score_data + n * b,
                        cls != nullptr ? cls + n * b : nullptr, n, iou_threshold, limit,
                        /*parallel=*/false);
    }
  };
  const int64_t workers =
      std::min<int64_t>(images, static_cast<int64_t>(torch::stable::get_num_threads()));
  if (workers > 1 && images * n >= kParallelMinBoxes) {
    torch::stable::parallel_for(0, workers, 1, work);
  } else {
    work(0, 1);
  }
  int64_t total = 0;
  for (const auto& k : kept) total += static_cast<int64_t>(k.size());
  Tensor out = torch::stable::new_empty(boxes, {total, 2}, ScalarType::Long);
  int64_t* rows = out.mutable_data_ptr<int64_t>();
  for (int64_t b = 0; b < images; ++b) {
    for (const int64_t i : kept[b]) {
      *rows++ = b;
      *rows++ = i;
    }
  }
  return out;
}

struct NmsBackend : detops::CpuBackend {
  static constexpr int64_t kMaxBoxes = std::numeric_limits<int64_t>::max();
  template <typename S>
  static Tensor run(const Tensor& boxes, const Tensor& scores, const Tensor* idxs, double thr,
                    int64_t limit) {
    return run_greedy<acc_t<S>, S>(boxes, scores, idxs, thr, limit);
  }
  template <typename S>
  static Tensor run_per_image(const Tensor& boxes, const Tensor& scores, const Tensor* idxs,
                              double thr, int64_t limit) {
    return cpu::run_per_image<acc_t<S>, S>(boxes, scores, idxs, thr, limit);
  }
};

}  // namespace
}  // namespace detops::nms::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::nms::NmsEntry<detops::nms::cpu::NmsBackend>;
  m.impl("nms", TORCH_BOX(&Entry::nms));
  m.impl("batched_nms", TORCH_BOX(&Entry::batched_nms));
  m.impl("nms_per_image", TORCH_BOX(&Entry::nms_per_image));
}
