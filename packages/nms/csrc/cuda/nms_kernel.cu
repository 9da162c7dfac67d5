// CUDA kernels of detops::nms and detops::batched_nms: the block-bitmask algorithm.
//
// Boxes are sorted by score on the device (for batched_nms, then stably by class, so each
// class is one contiguous run). mask_kernel compares every 64-box row tile with every
// later 64-box column tile and writes one 64-bit word per (box, column tile): bit j set
// when the box suppresses box j of that tile (same class only). keep_kernel then walks the
// tiles in order on the device, so the mask never travels to the host; the only host
// round-trip is nonzero() sizing the output.
#include <detops/aten_call.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>
#include <vector>

#include "nms_entry.h"
#include "nms_math.h"

namespace detops::nms::cuda {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int kTile = 64;          // boxes per tile: one bit each in a 64-bit word
constexpr int kKeepThreads = 256;  // threads of the single keep_kernel block

template <typename S, typename T>
__global__ void mask_kernel(const S* __restrict__ boxes, const int64_t* __restrict__ cls, int64_t n,
                            int64_t words, T threshold, unsigned long long* __restrict__ mask) {
  const int64_t row_tile = blockIdx.y;
  const int64_t col_tile = blockIdx.x;
  if (col_tile < row_tile) return;  // only later boxes can be suppressed
  const int64_t row_start = row_tile * kTile;
  const int64_t col_start = col_tile * kTile;
  const int rows = static_cast<int>(min(n - row_start, int64_t(kTile)));
  const int cols = static_cast<int>(min(n - col_start, int64_t(kTile)));

  __shared__ Box<T> tile[kTile];
  __shared__ int64_t tile_cls[kTile];
  const int t = threadIdx.x;
  if (t < cols) {
    const S* b = boxes + 4 * (col_start + t);
    tile[t] = make_box(static_cast<T>(b[0]), static_cast<T>(b[1]), static_cast<T>(b[2]),
                       static_cast<T>(b[3]));
    tile_cls[t] = cls != nullptr ? cls[col_start + t] : 0;
  }
  __syncthreads();
  if (t >= rows) return;

  const int64_t i = row_start + t;
  const S* a = boxes + 4 * i;
  const Box<T> row = make_box(static_cast<T>(a[0]), static_cast<T>(a[1]), static_cast<T>(a[2]),
                              static_cast<T>(a[3]));
  const int64_t a_cls = cls != nullptr ? cls[i] : 0;
  unsigned long long bits = 0;
  // Classes ascend along the sorted list: a tile wholly of other classes has no pairs.
  const bool same_class_possible = tile_cls[0] <= a_cls && a_cls <= tile_cls[cols - 1];
  if (same_class_possible) {
    for (int j = (row_tile == col_tile) ? t + 1 : 0; j < cols; ++j) {
      if (tile_cls[j] == a_cls && suppresses(row, tile[j], threshold)) bits |= 1ULL << j;
    }
  }
  mask[i * words + col_tile] = bits;
}

// Sequential greedy pass over the tiles, on one block. `removed` (words, zeroed) holds the
// boxes suppressed so far; kept[rank_of[p]] (or kept[p]) is set for every kept position p.
// Stops once `limit` boxes are kept (positions in score order: nms, not batched_nms).
__global__ void keep_kernel(const unsigned long long* __restrict__ mask, int64_t n, int64_t words,
                            unsigned long long* __restrict__ removed,
                            const int64_t* __restrict__ rank_of, int64_t limit,
                            bool* __restrict__ kept) {
  __shared__ unsigned long long diagonal[kTile];
  __shared__ unsigned long long tile_kept;
  __shared__ int64_t kept_so_far;
  const int t = threadIdx.x;
  if (t == 0) kept_so_far = 0;
  for (int64_t w = 0; w < words; ++w) {
    const int64_t start = w * kTile;
    const int count = static_cast<int>(min(n - start, int64_t(kTile)));
    if (t < count) diagonal[t] = mask[(start + t) * words + w];
    __syncthreads();
    if (t == 0) {
      unsigned long long gone = removed[w];
      unsigned long long keep_bits = 0;
      for (int k = 0; k < count && kept_so_far < limit; ++k) {
        if (!((gone >> k) & 1ULL)) {
          keep_bits |= 1ULL << k;
          gone |= diagonal[k];
          ++kept_so_far;
        }
      }
      tile_kept = keep_bits;
    }
    __syncthreads();
    const unsigned long long keep_bits = tile_kept;
    // Read by every thread between the same two barriers: all leave together.
    const bool done = kept_so_far >= limit;
    for (int64_t later = w + 1 + t; !done && later < words; later += blockDim.x) {
      unsigned long long acc = removed[later];
      for (unsigned long long bits = keep_bits; bits != 0; bits &= bits - 1) {
        const int k = __ffsll(static_cast<long long>(bits)) - 1;
        acc |= mask[(start + k) * words + later];
      }
      removed[later] = acc;
    }
    if (t < count && ((keep_bits >> t) & 1ULL)) {
      const int64_t p = start + t;
      kept[rank_of != nullptr ? rank_of[p] : p] = true;
    }
    __syncthreads();
    if (done) return;
  }
}

template <typename S>
Tensor run_bitmask(const Tensor& boxes, const Tensor& scores, const Tensor* idxs,
                   double iou_threshold, int64_t limit) {
  using T = acc_t<S>;
  const char* op = idxs != nullptr ? "detops.batched_nms" : "detops.nms";
  const int64_t n = boxes.size(0);
  cudaStream_t stream = detops::cuda::current_stream(boxes);

  const Tensor order = sort_stable(scores, 0, /*descending=*/true).second;  // rank -> box
  Tensor candidates = order;                                                // position -> box
  Tensor rank_of;                                                           // position -> rank
  Tensor cls;                                                               // position -> class
  if (idxs != nullptr) {
    const Tensor cls_by_rank = torch::stable::index_select(*idxs, 0, order);
    auto by_class = sort_stable(cls_by_rank, 0, /*descending=*/false);
    cls = detops::contiguous(by_class.first);
    rank_of = detops::contiguous(by_class.second);
    candidates = torch::stable::index_select(order, 0, rank_of);
  }
  const Tensor sorted_boxes = detops::contiguous(torch::stable::index_select(boxes, 0, candidates));

  const int64_t words = (n + kTile - 1) / kTile;
  Tensor mask = torch::stable::new_empty(boxes, {n * words}, ScalarType::Long);
  auto* mask_data = reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>());
  const dim3 tiles(static_cast<unsigned>(words), static_cast<unsigned>(words));
  detops::cuda::launch<mask_kernel<S, T>>(op, detops::cuda::Shape(tiles, kTile, stream),
                                          sorted_boxes.const_data_ptr<S>(),
                                          idxs != nullptr ? cls.const_data_ptr<int64_t>() : nullptr,
                                          n, words, threshold_in<T>(iou_threshold), mask_data);

  Tensor removed = torch::stable::new_zeros(boxes, {words}, ScalarType::Long);
  Tensor kept = torch::stable::new_zeros(boxes, {n}, ScalarType::Bool);
  detops::cuda::launch<keep_kernel>(
      op, detops::cuda::Shape(1, kKeepThreads, stream), mask_data, n, words,
      reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
      idxs != nullptr ? rank_of.const_data_ptr<int64_t>() : nullptr,
      idxs != nullptr ? kNoLimit : limit, kept.mutable_data_ptr<bool>());

  Tensor result = torch::stable::index_select(order, 0, nonzero_1d(kept));
  // batched_nms walks the positions class by class: the limit applies to the merged list.
  if (result.size(0) > limit) result = torch::stable::narrow(result, 0, 0, limit);
  return result;
}

// One image after the other (each sorts, masks and keeps on the device); the rows are
// written into one [K, 2] output.
template <typename S>
Tensor run_per_image(const Tensor& boxes, const Tensor& scores, const Tensor* idxs,
                     double iou_threshold, int64_t limit) {
  const int64_t images = boxes.size(0);
  std::vector<Tensor> kept;
  int64_t total = 0;
  for (int64_t b = 0; b < images; ++b) {
    const Tensor classes = idxs != nullptr ? torch::stable::select(*idxs, 0, b) : Tensor();
    kept.push_back(run_bitmask<S>(torch::stable::select(boxes, 0, b),
                                  torch::stable::select(scores, 0, b),
                                  idxs != nullptr ? &classes : nullptr, iou_threshold, limit));
    total += kept.back().size(0);
  }
  Tensor out = torch::stable::new_empty(boxes, {total, 2}, ScalarType::Long);
  int64_t offset = 0;
  for (int64_t b = 0; b < images; ++b) {
    const int64_t k = kept[b].size(0);
    if (k == 0) continue;
    Tensor rows = torch::stable::narrow(out, 0, offset, k);
    torch::stable::fill_(torch::stable::select(rows, 1, 0), static_cast<double>(b));
    Tensor box_column = torch::stable::select(rows, 1, 1);
    torch::stable::copy_(box_column, kept[b]);
    offset += k;
  }
  return out;
}

struct NmsBackend : detops::CudaBackend {
  static constexpr int64_t kMaxBoxes = int64_t(65535) * kTile;  // grid.y limit on row tiles
  template <typename S>
  static Tensor run(const Tensor& boxes, const Tensor& scores, const Tensor* idxs, double thr,
                    int64_t limit) {
    return run_bitmask<S>(boxes, scores, idxs, thr, limit);
  }
  template <typename S>
  static Tensor run_per_image(const Tensor& boxes, const Tensor& scores, const Tensor* idxs,
                              double thr, int64_t limit) {
    return cuda::run_per_image<S>(boxes, scores, idxs, thr, limit);
  }
};

}  // namespace
}  // namespace detops::nms::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::nms::NmsEntry<detops::nms::cuda::NmsBackend>;
  m.impl("nms", TORCH_BOX(&Entry::nms));
  m.impl("batched_nms", TORCH_BOX(&Entry::batched_nms));
  m.impl("nms_per_image", TORCH_BOX(&Entry::nms_per_image));
}
