// CUDA kernels of detops::box_iou_rotated, nms_rotated and batched_nms_rotated.
//
// iou_kernel: one thread per (i, j) pair, grid-stride. NMS: boxes are sorted by score on
// the device (then stably by class for batched_nms_rotated, so each class is one run);
// mask_kernel compares each 64-box row tile with each later 64-box column tile and sets bit
// j of word (box, column tile) when the box suppresses box j; keep_kernel walks the tiles
// in order on one block. All of them use nms_rotated_math.h's iou, in double. It is not the
// CPU's bit for bit: CUDA's cos/sin may differ from the C library's in the last place and
// nvcc contracts products into fmas, so the two agree to about 1e-15 relative, and NMS can
// only differ for an IoU that close to the threshold.
#include <detops/aten_call.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>

#include "nms_rotated_entry.h"
#include "nms_rotated_math.h"

namespace detops::nms::rotated::cuda {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int kTile = 64;          // boxes per mask word
constexpr int kKeepThreads = 256;  // threads of the one keep_kernel block

template <typename S>
__device__ __host__ inline RBox load(const S* b) {
  return make_rbox(b[0], b[1], b[2], b[3], b[4]);
}

template <typename S>
__global__ void iou_kernel(const S* __restrict__ boxes1, const S* __restrict__ boxes2, int64_t n,
                           int64_t m, S* __restrict__ out) {
  DETOPS_CUDA_LOOP(k, n * m) {
    const int64_t i = k / m, j = k - i * m;
    out[k] = static_cast<S>(static_cast<acc_t<S>>(iou(load(boxes1 + 5 * i), load(boxes2 + 5 * j))));
  }
}

template <typename S>
__global__ void mask_kernel(const S* __restrict__ boxes, const int64_t* __restrict__ cls, int64_t n,
                            int64_t words, double threshold,
                            unsigned long long* __restrict__ mask) {
  const int64_t row_tile = blockIdx.y, col_tile = blockIdx.x;
  if (col_tile < row_tile) return;  // a box only suppresses later ones
  const int64_t row_start = row_tile * kTile, col_start = col_tile * kTile;
  const int rows = static_cast<int>(min(n - row_start, int64_t(kTile)));
  const int cols = static_cast<int>(min(n - col_start, int64_t(kTile)));
  __shared__ RBox tile[kTile];
  __shared__ int64_t tile_cls[kTile];
  const int t = threadIdx.x;
  if (t < cols) {
    tile[t] = load(boxes + 5 * (col_start + t));
    tile_cls[t] = cls != nullptr ? cls[col_start + t] : 0;
  }
  __syncthreads();
  if (t >= rows) return;
  const int64_t i = row_start + t;
  const RBox row = load(boxes + 5 * i);
  const int64_t row_cls = cls != nullptr ? cls[i] : 0;
  unsigned long long bits = 0;
  for (int j = (row_tile == col_tile) ? t + 1 : 0; j < cols; ++j) {
    if (tile_cls[j] == row_cls && iou(row, tile[j]) > threshold) bits |= 1ULL << j;
  }
  mask[i * words + col_tile] = bits;
}

// The greedy pass. `removed` (words, zero on entry) collects the suppressed positions;
// kept[p] is set for each kept position p. Thread 0 settles one tile at a time (the
// boxes inside a tile depend on each other); then all threads fold the tile's kept rows
// into the later words of `removed`.
__global__ void keep_kernel(const unsigned long long* __restrict__ mask, int64_t n, int64_t words,
                            unsigned long long* __restrict__ removed, bool* __restrict__ kept) {
  __shared__ unsigned long long tile_kept;
  const int t = threadIdx.x;
  for (int64_t w = 0; w < words; ++w) {
    const int64_t start = w * kTile;
    const int count = static_cast<int>(min(n - start, int64_t(kTile)));
    if (t == 0) {
      unsigned long long gone = removed[w], keep = 0;
      for (int k = 0; k < count; ++k) {
        if ((gone >> k) & 1ULL) continue;
        keep |= 1ULL << k;
        gone |= mask[(start + k) * words + w];
      }
      tile_kept = keep;
    }
    __syncthreads();
    const unsigned long long keep = tile_kept;
    for (int64_t later = w + 1 + t; later < words; later += blockDim.x) {
      unsigned long long acc = removed[later];
      for (int k = 0; k < count; ++k) {
        if ((keep >> k) & 1ULL) acc |= mask[(start + k) * words + later];
      }
      removed[later] = acc;
    }
    if (t < count) kept[start + t] = (keep >> t) & 1ULL;
    // tile_kept is rewritten by the next tile's thread 0 only after everyone read it.
    __syncthreads();
  }
}

// kept_by_rank[position_rank[p]] = kept[p]: batched positions back to score ranks.
__global__ void rank_kernel(const bool* __restrict__ kept,
                            const int64_t* __restrict__ position_rank, int64_t n,
                            bool* __restrict__ kept_by_rank) {
  DETOPS_CUDA_LOOP(p, n) {
    kept_by_rank[position_rank[p]] = kept[p];
  }
}

template <typename S>
void iou_matrix(const Tensor& boxes1, const Tensor& boxes2, Tensor& out) {
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  cudaStream_t stream = detops::cuda::current_stream(boxes1);
  detops::cuda::launch<iou_kernel<S>>("detops.box_iou_rotated", detops::cuda::over(n * m, stream),
                                      boxes1.const_data_ptr<S>(), boxes2.const_data_ptr<S>(), n, m,
                                      out.mutable_data_ptr<S>());
}

template <typename S>
Tensor nms(const Tensor& boxes, const Tensor& scores, const Tensor* idxs, double threshold) {
  const char* op = idxs != nullptr ? "detops.batched_nms_rotated" : "detops.nms_rotated";
  const int64_t n = boxes.size(0);
  cudaStream_t stream = detops::cuda::current_stream(boxes);

  const Tensor order = sort_stable(scores, 0, /*descending=*/true).second;  // rank -> box
  Tensor position_box = order;
  Tensor position_rank;  // batched only
  Tensor cls;            // batched only: class of each position, ascending
  if (idxs != nullptr) {
    auto by_class = sort_stable(torch::stable::index_select(*idxs, 0, order), 0, false);
    cls = detops::contiguous(by_class.first);
    position_rank = detops::contiguous(by_class.second);
    position_box = torch::stable::index_select(order, 0, position_rank);
  }
  const Tensor sorted = detops::contiguous(torch::stable::index_select(boxes, 0, position_box));

  const int64_t words = (n + kTile - 1) / kTile;
  Tensor mask = torch::stable::new_empty(boxes, {n * words}, ScalarType::Long);
  auto* mask_data = reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>());
  const dim3 tiles(static_cast<unsigned>(words), static_cast<unsigned>(words));
  detops::cuda::launch<mask_kernel<S>>(
      op, detops::cuda::Shape(tiles, kTile, stream), sorted.const_data_ptr<S>(),
      idxs != nullptr ? cls.const_data_ptr<int64_t>() : nullptr, n, words, threshold, mask_data);
  Tensor removed = torch::stable::new_zeros(boxes, {words}, ScalarType::Long);
  Tensor kept = torch::stable::new_zeros(boxes, {n}, ScalarType::Bool);
  detops::cuda::launch<keep_kernel>(
      op, detops::cuda::Shape(1, kKeepThreads, stream), mask_data, n, words,
      reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
      kept.mutable_data_ptr<bool>());
  if (idxs == nullptr) return torch::stable::index_select(order, 0, nonzero_1d(kept));
  // Back to score order: the kept positions' ranks, ascending.
  Tensor kept_by_rank = torch::stable::new_empty(boxes, {n}, ScalarType::Bool);
  detops::cuda::launch<rank_kernel>(op, detops::cuda::over(n, stream), kept.const_data_ptr<bool>(),
                                    position_rank.const_data_ptr<int64_t>(), n,
                                    kept_by_rank.mutable_data_ptr<bool>());
  return torch::stable::index_select(order, 0, nonzero_1d(kept_by_rank));
}

struct NmsRotatedBackend : detops::CudaBackend {
  static constexpr int64_t kMaxBoxes = int64_t(65535) * kTile;  // row tiles along gridDim.y
  template <typename S>
  static void iou(const Tensor& boxes1, const Tensor& boxes2, Tensor& out) {
    iou_matrix<S>(boxes1, boxes2, out);
  }
  template <typename S>
  static Tensor nms(const Tensor& boxes, const Tensor& scores, const Tensor* idxs, double thr) {
    return cuda::nms<S>(boxes, scores, idxs, thr);
  }
};

}  // namespace
}  // namespace detops::nms::rotated::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry =
      detops::nms::rotated::NmsRotatedEntry<detops::nms::rotated::cuda::NmsRotatedBackend>;
  m.impl("box_iou_rotated", TORCH_BOX(&Entry::box_iou_rotated));
  m.impl("nms_rotated", TORCH_BOX(&Entry::nms_rotated));
  m.impl("batched_nms_rotated", TORCH_BOX(&Entry::batched_nms_rotated));
}
