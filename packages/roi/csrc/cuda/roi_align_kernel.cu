// CUDA kernels of detops::roi_align, detops::multi_level_roi_align and their backward ops.
// One thread per output bin; the backward scatters into one float32 (float64) accumulator
// for all levels (detops/scatter_add.cuh). Levels are passed by value (at most kMaxLevels);
// roi_align is the one-level case. A RoI whose batch index or level is invalid gets a zero
// row and no gradient.
#include <torch/csrc/stable/library.h>

#include <vector>

#include "cuda/roi_cuda.cuh"
#include "roi_entry.h"

namespace detops::roi::cuda {
namespace {

constexpr int kMaxLevels = static_cast<int>(RoiCudaBackend::kMaxLevels);

template <typename P, typename T>
struct Levels {
  P data[kMaxLevels];
  Strides st[kMaxLevels];
  int64_t height[kMaxLevels], width[kMaxLevels];
  T scale[kMaxLevels];
  int64_t count;
};

struct Params {
  int64_t rois, batch, channels, pooled_h, pooled_w, sampling_ratio;
  bool aligned;
};

// The map of RoI r (level[r], or 0 without levels) and its image; false when either is
// invalid.
template <typename S, typename P, typename T>
__device__ __forceinline__ bool locate(const Levels<P, T>& lv, const S* roi, const int64_t* level,
                                       int64_t r, const Params& p, int64_t& l, int64_t& b) {
  l = level != nullptr ? level[r] : 0;
  b = batch_index(roi[0], p.batch);
  return has_level(l, lv.count) && b >= 0;
}

template <typename S, typename T>
__device__ __forceinline__ AlignBox<T> box_of(const S* roi, T scale, const Params& p) {
  return roi_align_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                       static_cast<T>(roi[4]), scale, p.aligned, p.pooled_h, p.pooled_w,
                       p.sampling_ratio);
}

template <typename S, typename T>
__global__ void forward_kernel(Levels<const S*, T> lv, const S* __restrict__ rois,
                               const int64_t* __restrict__ level, Params p, S* __restrict__ out) {
  const int64_t total = p.rois * p.channels * p.pooled_h * p.pooled_w;
  DETOPS_CUDA_LOOP(i, total) {
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const S* roi = rois + 5 * at.roi;
    int64_t l, b;
    if (!locate(lv, roi, level, at.roi, p, l, b)) {
      out[i] = S(0);
      continue;
    }
    const AlignBox<T> box = box_of(roi, lv.scale[l], p);
    const Strides st = lv.st[l];
    const S* plane = lv.data[l] + st.plane(b, at.channel);
    T acc = T(0);
    for_each_sample(
        box, at.ph, at.pw, lv.height[l], lv.width[l],
        [&](const Tap<T>& ty, const Tap<T>& tx) { acc += bilinear(plane, st.y, st.x, ty, tx); });
    out[i] = static_cast<S>(acc / box.count);
  }
}

template <typename S, typename T, typename Add>
__global__ void backward_kernel(Levels<T*, T> lv, const S* __restrict__ grad, Strides gs,
                                const S* __restrict__ rois, const int64_t* __restrict__ level,
                                Params p, Add add) {
  const int64_t total = p.rois * p.channels * p.pooled_h * p.pooled_w;
  DETOPS_CUDA_LOOP(i, total) {
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const S* roi = rois + 5 * at.roi;
    int64_t l, b;
    if (!locate(lv, roi, level, at.roi, p, l, b)) continue;
    const AlignBox<T> box = box_of(roi, lv.scale[l], p);
    const int64_t h = lv.height[l], w = lv.width[l];
    T* plane = lv.data[l] + (b * p.channels + at.channel) * h * w;
    const T g =
        static_cast<T>(grad[at.roi * gs.n + at.channel * gs.c + at.ph * gs.y + at.pw * gs.x]) /
        box.count;
    for_each_sample(box, at.ph, at.pw, h, w,
                    [&](const Tap<T>& ty, const Tap<T>& tx) { scatter(plane, w, ty, tx, g, add); });
  }
}

template <typename P, typename T>
Levels<P, T> levels_of(const AlignArgs& a) {
  Levels<P, T> lv{};
  lv.count = static_cast<int64_t>(a.maps.size());
  for (size_t l = 0; l < a.maps.size(); ++l) {
    lv.height[l] = a.maps[l].height;
    lv.width[l] = a.maps[l].width;
    lv.scale[l] = static_cast<T>(a.maps[l].scale);
  }
  return lv;
}

Params params_of(const AlignArgs& a) {
  return {a.num_rois(), a.batch, a.channels, a.pooled_h, a.pooled_w, a.sampling_ratio, a.aligned};
}

const int64_t* level_data(const AlignArgs& a) {
  return a.levels.defined() ? a.levels.const_data_ptr<int64_t>() : nullptr;
}

struct RoiAlignBackend : RoiCudaBackend {
  template <typename S>
  static void forward(const AlignArgs& a, const std::vector<Tensor>& features, Tensor& out) {
    using T = acc_t<S>;
    Levels<const S*, T> lv = levels_of<const S*, T>(a);
    for (size_t l = 0; l < features.size(); ++l) {
      lv.data[l] = features[l].const_data_ptr<S>();
      lv.st[l] = strides_of(features[l]);
    }
    detops::cuda::launch<forward_kernel<S, T>>(
        a.op, detops::cuda::over(out.numel(), detops::cuda::current_stream(out)), lv,
        a.rois.const_data_ptr<S>(), level_data(a), params_of(a), out.mutable_data_ptr<S>());
  }

  template <typename S>
  static void backward(const AlignArgs& a, const Tensor& grad, std::vector<Tensor>& grads) {
    using T = acc_t<S>;
    // scatter_add's adders address one buffer: with several levels, level l is the slice of
    // a flat accumulator at offset[l]; a single level accumulates as the other RoI ops do.
    if (grads.size() == 1) {
      accumulate_grad<S>(a, grads[0], [&](auto add, T* accumulator) {
        launch_backward<S>(a, grad, {accumulator}, add);
      });
      return;
    }
    std::vector<int64_t> offset{0};
    for (const Tensor& g : grads) offset.push_back(offset.back() + g.numel());
    Tensor flat = torch::stable::new_zeros(grad, {offset.back()}, acc_scalar_type<S>());
    T* data = flat.mutable_data_ptr<T>();
    std::vector<T*> planes;
    for (size_t l = 0; l < grads.size(); ++l) planes.push_back(data + offset[l]);
    detops::cuda::scatter_add<T>(a.op, flat, a.deterministic,
                                 [&](auto add) { launch_backward<S>(a, grad, planes, add); });
    for (size_t l = 0; l < grads.size(); ++l) {
      const Tensor slice = torch::stable::narrow(flat, 0, offset[l], grads[l].numel());
      torch::stable::copy_(grads[l], torch::stable::view(slice, grads[l].sizes()));
    }
  }

 private:
  template <typename S, typename Add>
  static void launch_backward(const AlignArgs& a, const Tensor& grad,
                              const std::vector<acc_t<S>*>& planes, Add add) {
    using T = acc_t<S>;
    Levels<T*, T> lv = levels_of<T*, T>(a);
    for (size_t l = 0; l < planes.size(); ++l) lv.data[l] = planes[l];
    detops::cuda::launch<backward_kernel<S, T, Add>>(
        a.op, detops::cuda::over(grad.numel(), detops::cuda::current_stream(grad)), lv,
        grad.const_data_ptr<S>(), strides_of(grad), a.rois.const_data_ptr<S>(), level_data(a),
        params_of(a), add);
  }
};

}  // namespace
}  // namespace detops::roi::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::roi::RoiAlignEntry<detops::roi::cuda::RoiAlignBackend>;
  m.impl("roi_align", TORCH_BOX(&Entry::roi_align));
  m.impl("_roi_align_backward", TORCH_BOX(&Entry::roi_align_backward));
  m.impl("multi_level_roi_align", TORCH_BOX(&Entry::multi_level_roi_align));
  m.impl("_multi_level_roi_align_backward", TORCH_BOX(&Entry::multi_level_roi_align_backward));
}
