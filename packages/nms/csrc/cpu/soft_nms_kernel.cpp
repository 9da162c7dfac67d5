// CPU kernels of detops::soft_nms and detops::batched_soft_nms.
//
// Each class is one run of candidates in input order (a stable grouping by class). A step
// selects the best live candidate, then one pass over the others decays their scores,
// drops those below the score threshold (compacting the run, so later passes touch only
// live boxes) and finds the next best on the way. Classes run in parallel.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <numeric>
#include <tuple>
#include <vector>

#include "cpu/score_order.h"
#include "nms_math.h"
#include "soft_nms_entry.h"

namespace detops::nms::cpu {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

template <typename T>
struct Candidates {
  std::vector<Box<T>> box;
  std::vector<T> score;
  std::vector<int64_t> index;  // input position
};


// Soft-NMS over candidates [begin, end) of c (in increasing input index). Appends the
// selected boxes to index/score in selection order. Overwrites the range.
template <typename T>
void soft_select(Candidates<T>& c, int64_t begin, int64_t end, const SoftParams& p,
                 std::vector<int64_t>& index, std::vector<T>& score) {
  Box<T>* box = c.box.data();
  T* s = c.score.data();
  int64_t* idx = c.index.data();
  int64_t live_end = begin;
  int64_t best = -1;
  for (int64_t j = begin; j < end; ++j) {
    if (dropped(s[j], p)) continue;
    box[live_end] = box[j];
    s[live_end] = s[j];
    idx[live_end] = idx[j];
    if (best < 0 || selected_before(s[live_end], idx[live_end], s[best], idx[best])) best = live_end;
    ++live_end;
  }
  while (best >= 0) {
    index.push_back(idx[best]);
    score.push_back(s[best]);
    const Box<T> a = box[best];
    int64_t w = begin;
    int64_t next = -1;
    for (int64_t j = begin; j < live_end; ++j) {
      if (j == best) continue;
      const T sj = decayed(s[j], iou(a, box[j]), p);
      if (dropped(sj, p)) continue;
      if (w != j) {
        box[w] = box[j];
        idx[w] = idx[j];
      }
      s[w] = sj;
      if (next < 0 || selected_before(sj, idx[w], s[next], idx[next])) next = w;
      ++w;
    }
    live_end = w;
    best = next;
  }
}

template <typename S>
std::tuple<Tensor, Tensor> run_soft(const Tensor& boxes_in, const Tensor& scores_in,
                                    const Tensor* idxs_in, const SoftParams& p) {
  using T = acc_t<S>;
  const int64_t n = boxes_in.size(0);
  const Tensor boxes = torch::stable::contiguous(boxes_in);
  const Tensor scores = torch::stable::contiguous(scores_in);
  const S* b = boxes.const_data_ptr<S>();
  const S* sc = scores.const_data_ptr<S>();

  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<int64_t> group_start{0};
  Tensor idxs;
  if (idxs_in != nullptr) {
    idxs = torch::stable::contiguous(*idxs_in);
    const int64_t* cls = idxs.const_data_ptr<int64_t>();
    group_by_class(cls, order);  // stable: each class keeps increasing input order
    for (int64_t k = 1; k < n; ++k) {
      if (cls[order[k]] != cls[order[k - 1]]) group_start.push_back(k);
    }
  }
  group_start.push_back(n);
  const int64_t groups = static_cast<int64_t>(group_start.size()) - 1;

  Candidates<T> c{std::vector<Box<T>>(n), std::vector<T>(n), std::vector<int64_t>(n)};
  for (int64_t k = 0; k < n; ++k) {
    const S* q = b + 4 * order[k];
    c.box[k] = make_box(static_cast<T>(q[0]), static_cast<T>(q[1]), static_cast<T>(q[2]),
                        static_cast<T>(q[3]));
    c.score[k] = static_cast<T>(sc[order[k]]);
    c.index[k] = order[k];
  }

  std::vector<std::vector<int64_t>> kept_index(groups);
  std::vector<std::vector<T>> kept_score(groups);
  auto run_groups = [&](int64_t g_begin, int64_t g_end) {
    for (int64_t g = g_begin; g < g_end; ++g) {
      soft_select(c, group_start[g], group_start[g + 1], p, kept_index[g], kept_score[g]);
    }
  };
  // Soft-NMS costs about n^2 / 2 IoUs per class: a few hundred boxes already outweigh
  // waking a thread.
  constexpr int64_t kParallelMinBoxes = 1024;
  if (groups > 1 && n >= kParallelMinBoxes) {
    torch::stable::parallel_for(0, groups, 1, run_groups);
  } else {
    run_groups(0, groups);
  }

  std::vector<int64_t> index;
  std::vector<T> score;
  for (int64_t g = 0; g < groups; ++g) {
    index.insert(index.end(), kept_index[g].begin(), kept_index[g].end());
    score.insert(score.end(), kept_score[g].begin(), kept_score[g].end());
  }
  const int64_t k = static_cast<int64_t>(index.size());
  std::vector<int64_t> pos(k);
  std::iota(pos.begin(), pos.end(), 0);
  if (idxs_in != nullptr) {  // classes interleave by decreasing decayed score
    std::sort(pos.begin(), pos.end(), [&](int64_t u, int64_t v) {
      return selected_before(score[u], index[u], score[v], index[v]);
    });
  }
  Tensor out_index = torch::stable::new_empty(boxes, {k}, ScalarType::Long);
  Tensor out_score = torch::stable::new_empty(scores, {k});
  int64_t* oi = out_index.mutable_data_ptr<int64_t>();
  S* os = out_score.mutable_data_ptr<S>();
  for (int64_t r = 0; r < k; ++r) {
    oi[r] = index[pos[r]];
    os[r] = static_cast<S>(score[pos[r]]);
  }
  return {out_index, out_score};
}

struct CpuSoftKernel {
  template <typename S>
  static std::tuple<Tensor, Tensor> run(const Tensor& boxes, const Tensor& scores,
                                        const Tensor* idxs, const SoftParams& p) {
    return run_soft<S>(boxes, scores, idxs, p);
  }
};

}  // namespace
}  // namespace detops::nms::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::nms::SoftEntry<detops::nms::cpu::CpuSoftKernel>;
  m.impl("soft_nms", TORCH_BOX(&Entry::soft_nms));
  m.impl("batched_soft_nms", TORCH_BOX(&Entry::batched_soft_nms));
}
