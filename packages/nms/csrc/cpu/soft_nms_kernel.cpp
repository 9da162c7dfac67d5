// CPU kernels of detops::soft_nms and detops::batched_soft_nms.
//
// Each class is one run of candidates in input order (a stable grouping by class), run in
// parallel with the others. Soft-NMS does one step per kept box, each touching every live
// candidate: the steps are vectorised passes (IoU, max score) plus scalar work only for
// the candidates whose score changes, which in detection data are a small fraction.
#include <detops/contiguous.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <tuple>
#include <vector>

#include "cpu/compact.h"
#include "cpu/score_order.h"
#include "nms_math.h"
#include "soft_nms_entry.h"

namespace detops::nms::cpu {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// One class's live candidates as structure-of-arrays columns, in increasing input index.
// Selected and dropped candidates stay in place, marked dead with score -inf, until they
// are the majority; then the columns are compacted (keeping the order).
template <typename T>
struct Columns {
  std::vector<T> x1, y1, x2, y2, area, score, overlap;
  std::vector<int64_t> index, hits;
  std::vector<uint8_t> dead;
  int64_t size;
  explicit Columns(int64_t n)
      : x1(n),
        y1(n),
        x2(n),
        y2(n),
        area(n),
        score(n),
        overlap(n),
        index(n),
        hits(n),
        dead(n),
        size(n) {}

  void compact() {
    size = compact_live(dead.data(), 0, size, x1.data(), y1.data(), x2.data(), y2.data(),
                        area.data(), score.data(), index.data());
  }
};

// IoU of box a with every candidate. No branches, so the compiler vectorises it.
template <typename T>
void overlaps(const Box<T>& a, const T* __restrict x1, const T* __restrict y1,
              const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
              T* __restrict out, int64_t count) {
  for (int64_t j = 0; j < count; ++j) out[j] = iou(a, Box<T>{x1[j], y1[j], x2[j], y2[j], area[j]});
}

// The first candidate holding the largest score, or -1 when every score is -inf. No
// score is NaN here; dead candidates hold -inf. The branch is rarely taken once the
// running maximum is high, so this is one cheap pass.
template <typename T>
int64_t first_max(const T* __restrict s, int64_t count) {
  T m = -std::numeric_limits<T>::infinity();
  int64_t best = -1;
  for (int64_t j = 0; j < count; ++j) {
    if (s[j] > m) {
      m = s[j];
      best = j;
    }
  }
  return best;
}

// Soft-NMS of one class; appends its selections (input index, score) in selection order.
// Each step: pick the best live candidate (the first NaN while any is live, else the first
// candidate holding the largest score: lowest index on ties), compute its IoU with every
// candidate in one vectorised pass, list the candidates whose score changes (IoU > 0, or
// above the threshold for linear) and decay only those.
template <typename T>
void soft_select(Columns<T>& c, const SoftParams& p, std::vector<int64_t>& index,
                 std::vector<T>& score) {
  constexpr T kDeadScore = -std::numeric_limits<T>::infinity();
  const T linear_threshold = threshold_in<T>(p.iou_threshold);
  const bool linear = p.method == SoftMethod::kLinear;
  T* s = c.score.data();
  uint8_t* dead = c.dead.data();
  int64_t live = 0, dead_count = 0, nan_live = 0;
  for (int64_t j = 0; j < c.size; ++j) {
    dead[j] = dropped(s[j], p);
    if (dead[j]) {
      s[j] = kDeadScore;
      ++dead_count;
    } else {
      ++live;
      nan_live += s[j] != s[j];
    }
  }
  while (live > 0) {
    if (dead_count > 32 && 2 * dead_count > c.size) {
      c.compact();
      dead_count = 0;
    }
    const int64_t n = c.size;
    int64_t best = 0;
    if (nan_live > 0) {
      while (s[best] == s[best]) ++best;  // dead candidates hold -inf, never NaN
      --nan_live;
    } else {
      best = first_max(s, n);
      if (best < 0) {  // only -inf scores are live (possible only without a score threshold)
        best = 0;
        while (dead[best]) ++best;
      }
    }
    index.push_back(c.index[best]);
    score.push_back(s[best]);
    dead[best] = 1;
    s[best] = kDeadScore;
    ++dead_count;
    if (--live == 0) break;

    T* ov = c.overlap.data();
    overlaps(make_box(c.x1[best], c.y1[best], c.x2[best], c.y2[best]), c.x1.data(), c.y1.data(),
             c.x2.data(), c.y2.data(), c.area.data(), ov, n);
    int64_t* hits = c.hits.data();
    int64_t count = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T o = ov[j];
      const bool changes = linear ? o > linear_threshold : (o < T(0) || o > T(0));
      hits[count] = j;
      count += changes & !dead[j];
    }
    for (int64_t h = 0; h < count; ++h) {
      const int64_t j = hits[h];
      const T before = s[j];
      const T after = decayed(before, ov[j], p);
      if (dropped(after, p)) {
        dead[j] = 1;
        s[j] = kDeadScore;
        ++dead_count;
        --live;
        nan_live -= before != before;
      } else {
        s[j] = after;
        nan_live += (after != after) - (before != before);
      }
    }
  }
}

template <typename S>
std::tuple<Tensor, Tensor> run_soft(const Tensor& boxes_in, const Tensor& scores_in,
                                    const Tensor* idxs_in, const SoftParams& p) {
  using T = acc_t<S>;
  const int64_t n = boxes_in.size(0);
  const Tensor boxes = detops::contiguous(boxes_in);
  const Tensor scores = detops::contiguous(scores_in);
  const S* b = boxes.const_data_ptr<S>();
  const S* sc = scores.const_data_ptr<S>();

  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<int64_t> group_start{0};
  Tensor idxs;
  if (idxs_in != nullptr) {
    idxs = detops::contiguous(*idxs_in);
    const int64_t* cls = idxs.const_data_ptr<int64_t>();
    group_by_class(cls, order);  // stable: each class keeps increasing input order
    for (int64_t k = 1; k < n; ++k) {
      if (cls[order[k]] != cls[order[k - 1]]) group_start.push_back(k);
    }
  }
  group_start.push_back(n);
  const int64_t groups = static_cast<int64_t>(group_start.size()) - 1;

  std::vector<Box<T>> box(n);
  std::vector<T> score_t(n);
  for (int64_t k = 0; k < n; ++k) {
    const S* q = b + 4 * order[k];
    box[k] = make_box(static_cast<T>(q[0]), static_cast<T>(q[1]), static_cast<T>(q[2]),
                      static_cast<T>(q[3]));
    score_t[k] = static_cast<T>(sc[order[k]]);
  }

  std::vector<std::vector<int64_t>> kept_index(groups);
  std::vector<std::vector<T>> kept_score(groups);
  auto run_groups = [&](int64_t g_begin, int64_t g_end) {
    for (int64_t g = g_begin; g < g_end; ++g) {
      const int64_t begin = group_start[g];
      Columns<T> c(group_start[g + 1] - begin);
      for (int64_t k = 0; k < c.size; ++k) {
        const Box<T>& q = box[begin + k];
        c.x1[k] = q.x1;
        c.y1[k] = q.y1;
        c.x2[k] = q.x2;
        c.y2[k] = q.y2;
        c.area[k] = q.area;
        c.score[k] = score_t[begin + k];
        c.index[k] = order[begin + k];
      }
      soft_select(c, p, kept_index[g], kept_score[g]);
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

struct SoftNmsBackend : detops::CpuBackend {
  template <typename S>
  static std::tuple<Tensor, Tensor> run(const Tensor& boxes, const Tensor& scores,
                                        const Tensor* idxs, const SoftParams& p) {
    return run_soft<S>(boxes, scores, idxs, p);
  }
};

}  // namespace
}  // namespace detops::nms::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::nms::SoftNmsEntry<detops::nms::cpu::SoftNmsBackend>;
  m.impl("soft_nms", TORCH_BOX(&Entry::soft_nms));
  m.impl("batched_soft_nms", TORCH_BOX(&Entry::batched_soft_nms));
}
