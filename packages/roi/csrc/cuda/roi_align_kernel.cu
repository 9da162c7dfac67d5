// CUDA kernels of detops::roi_align, detops::multi_level_roi_align and their backward ops.
// One thread per output bin; the backward scatters with atomics into a float32 (float64)
// buffer. Levels are passed by value (at most kMaxLevels); roi_align is the one-level case.
#include <torch/csrc/stable/library.h>

#include <vector>

#include "cuda/roi_cuda.cuh"
#include "level_checks.h"

namespace detops::roi::cuda {
namespace {

constexpr int kMaxLevels = 8;

template <typename P, typename T>
struct Levels {
  P data[kMaxLevels];
  Strides st[kMaxLevels];
  int64_t height[kMaxLevels], width[kMaxLevels];
  T scale[kMaxLevels];
};

struct Params {
  int64_t rois, channels, pooled_h, pooled_w, sampling_ratio;
  bool aligned;
};

template <typename S, typename T>
__device__ AlignBox<T> box_of(const S* roi, T scale, const Params& p) {
  return align_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                   static_cast<T>(roi[4]), scale, p.aligned ? T(0.5) : T(0), !p.aligned, p.pooled_h,
                   p.pooled_w, p.sampling_ratio);
}

template <typename S, typename T>
__global__ void forward_kernel(Levels<const S*, T> lv, const S* __restrict__ rois,
                               const int64_t* __restrict__ level, Params p, S* __restrict__ out) {
  const int64_t total = p.rois * p.channels * p.pooled_h * p.pooled_w;
  DETOPS_CUDA_LOOP(i, total) {
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const int64_t r = at.roi, ch = at.channel, ph = at.ph, pw = at.pw;
    const S* roi = rois + 5 * r;
    const int l = level != nullptr ? static_cast<int>(level[r]) : 0;
    if (l < 0) {  // kNoLevel: a zero row
      out[i] = S(0);
      continue;
    }
    const AlignBox<T> box = box_of(roi, lv.scale[l], p);
    const Strides st = lv.st[l];
    const S* plane = lv.data[l] + batch_of(roi) * st.n + ch * st.c;
    T acc = T(0);
    for_each_sample(
        box, ph, pw, lv.height[l], lv.width[l],
        [&](const Tap<T>& ty, const Tap<T>& tx) { acc += interpolate(plane, st, ty, tx); });
    out[i] = static_cast<S>(acc / box.count);
  }
}

template <typename S, typename T>
__global__ void backward_kernel(Levels<T*, T> lv, const S* __restrict__ grad, Strides gs,
                                const S* __restrict__ rois, const int64_t* __restrict__ level,
                                Params p) {
  const int64_t total = p.rois * p.channels * p.pooled_h * p.pooled_w;
  DETOPS_CUDA_LOOP(i, total) {
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const int64_t r = at.roi, ch = at.channel, ph = at.ph, pw = at.pw;
    const S* roi = rois + 5 * r;
    const int l = level != nullptr ? static_cast<int>(level[r]) : 0;
    if (l < 0) continue;  // kNoLevel: no gradient
    const AlignBox<T> box = box_of(roi, lv.scale[l], p);
    const int64_t h = lv.height[l], w = lv.width[l];
    T* plane = lv.data[l] + (batch_of(roi) * p.channels + ch) * h * w;
    const T g = static_cast<T>(grad[r * gs.n + ch * gs.c + ph * gs.y + pw * gs.x]) / box.count;
    for_each_sample(box, ph, pw, h, w,
                    [&](const Tap<T>& ty, const Tap<T>& tx) { scatter(plane, w, ty, tx, g); });
  }
}

template <typename S>
Tensor forward(const char* op, const std::vector<Tensor>& inputs, const std::vector<double>& scales,
               const Tensor& rois_in, const Tensor* levels, const Params& p) {
  using T = acc_t<S>;
  const Tensor& first = inputs[0];
  check_batch_on_host<S>(op, rois_in, first.size(0));
  Tensor out = torch::stable::new_empty(first, {p.rois, p.channels, p.pooled_h, p.pooled_w});
  if (p.rois == 0 || p.channels == 0) return out;
  torch::stable::accelerator::DeviceGuard guard(first.get_device_index());
  const Tensor rois = torch::stable::contiguous(rois_in);
  Tensor lvl;
  if (levels != nullptr) lvl = torch::stable::contiguous(*levels);
  Levels<const S*, T> lv{};
  for (size_t l = 0; l < inputs.size(); ++l) {
    lv.data[l] = inputs[l].const_data_ptr<S>();
    lv.st[l] = strides_of(inputs[l]);
    lv.height[l] = inputs[l].size(2);
    lv.width[l] = inputs[l].size(3);
    lv.scale[l] = static_cast<T>(scales[l]);
  }
  const int64_t total = out.numel();
  forward_kernel<S, T><<<detops::cuda::grid_for(total, kThreads), kThreads, 0,
                         detops::cuda::current_stream(first)>>>(
      lv, rois.const_data_ptr<S>(), levels != nullptr ? lvl.const_data_ptr<int64_t>() : nullptr, p,
      out.mutable_data_ptr<S>());
  detops::cuda::check_launch(op);
  return out;
}

template <typename S>
std::vector<Tensor> backward(const char* op, const Tensor& grad, const Tensor& rois_in,
                             const Tensor* levels, const std::vector<double>& scales,
                             const std::vector<int64_t>& heights,
                             const std::vector<int64_t>& widths, int64_t n, const Params& p) {
  using T = acc_t<S>;
  check_batch_on_host<S>(op, rois_in, n);
  std::vector<Tensor> buffers;
  Levels<T*, T> lv{};
  for (size_t l = 0; l < scales.size(); ++l) {
    buffers.push_back(grad_buffer<S>(grad, n, p.channels, heights[l], widths[l]));
    lv.data[l] = buffers.back().template mutable_data_ptr<T>();
    lv.height[l] = heights[l];
    lv.width[l] = widths[l];
    lv.scale[l] = static_cast<T>(scales[l]);
  }
  const int64_t total = p.rois * p.channels * p.pooled_h * p.pooled_w;
  if (total > 0) {
    torch::stable::accelerator::DeviceGuard guard(grad.get_device_index());
    const Tensor rois = torch::stable::contiguous(rois_in);
    Tensor lvl;
    if (levels != nullptr) lvl = torch::stable::contiguous(*levels);
    backward_kernel<S, T><<<detops::cuda::grid_for(total, kThreads), kThreads, 0,
                            detops::cuda::current_stream(grad)>>>(
        lv, grad.const_data_ptr<S>(), strides_of(grad), rois.const_data_ptr<S>(),
        levels != nullptr ? lvl.const_data_ptr<int64_t>() : nullptr, p);
    detops::cuda::check_launch(op);
  }
  std::vector<Tensor> grads;
  for (const Tensor& b : buffers) grads.push_back(finish_grad<S>(b, grad.scalar_type()));
  return grads;
}

Tensor roi_align_cuda(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                      int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  const char* op = "detops.roi_align";
  check_forward(op, input, rois, pooled_h, pooled_w, sampling_ratio, false);
  const Params p{rois.size(0), input.size(1), pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return forward<S>(op, {input}, {spatial_scale}, rois, nullptr, p);
  });
}

Tensor roi_align_backward_cuda(Tensor grad, Tensor rois, double spatial_scale, int64_t pooled_h,
                               int64_t pooled_w, int64_t batch_size, int64_t channels,
                               int64_t height, int64_t width, int64_t sampling_ratio,
                               bool aligned) {
  const char* op = "detops._roi_align_backward";
  check_backward(op, grad, rois, pooled_h, pooled_w, sampling_ratio, batch_size, channels, height,
                 width, false);
  const Params p{rois.size(0), channels, pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return backward<S>(op, grad, rois, nullptr, {spatial_scale}, {height}, {width}, batch_size,
                       p)[0];
  });
}

Tensor multi_level_cuda(std::vector<Tensor> features, std::vector<double> scales, Tensor rois,
                        Tensor levels, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                        bool aligned) {
  const char* op = "detops.multi_level_roi_align";
  check_levels(op, features, scales, rois, levels, pooled_h, pooled_w, sampling_ratio, kMaxLevels);
  const Tensor host_levels = to_host(levels);
  read_levels(op, host_levels.const_data_ptr<int64_t>(), host_levels.size(0),
              static_cast<int64_t>(features.size()));
  const Params p{rois.size(0), features[0].size(1), pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(features[0].scalar_type(), op, "features", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return forward<S>(op, features, scales, rois, &levels, p);
  });
}

std::vector<Tensor> multi_level_backward_cuda(Tensor grad, Tensor rois, Tensor levels,
                                              std::vector<double> scales,
                                              std::vector<int64_t> heights,
                                              std::vector<int64_t> widths, int64_t batch_size,
                                              int64_t channels, int64_t pooled_h, int64_t pooled_w,
                                              int64_t sampling_ratio, bool aligned) {
  const char* op = "detops._multi_level_roi_align_backward";
  check_levels_backward(op, grad, rois, levels, scales, heights, widths, batch_size, channels,
                        pooled_h, pooled_w, sampling_ratio, kMaxLevels);
  const Tensor host_levels = to_host(levels);
  read_levels(op, host_levels.const_data_ptr<int64_t>(), host_levels.size(0),
              static_cast<int64_t>(scales.size()));
  const Params p{rois.size(0), channels, pooled_h, pooled_w, sampling_ratio, aligned};
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return backward<S>(op, grad, rois, &levels, scales, heights, widths, batch_size, p);
  });
}

}  // namespace
}  // namespace detops::roi::cuda

STABLE_TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("roi_align", TORCH_BOX(&detops::roi::cuda::roi_align_cuda));
  m.impl("_roi_align_backward", TORCH_BOX(&detops::roi::cuda::roi_align_backward_cuda));
  m.impl("multi_level_roi_align", TORCH_BOX(&detops::roi::cuda::multi_level_cuda));
  m.impl("_multi_level_roi_align_backward",
         TORCH_BOX(&detops::roi::cuda::multi_level_backward_cuda));
}
