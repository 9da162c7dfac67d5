// The entry points of the RoI ops, shared by their CPU and CUDA kernels: argument checks
// (roi_checks.h), the device guard, dtype dispatch and output allocation are written here
// once, per op. A device backend (detops/backend.h) supplies only the loops (cpu/*.cpp) or
// the thread mapping, atomics and launches (cuda/*.cu); each device file registers
// `<Op>Entry<its backend>`, whose functions are named after the ops.
//
// Besides its per-op forward / backward, every backend declares, for the align entry,
// `static constexpr size_t kMaxLevels` (maps one call takes); the package's backends get it
// from cpu::RoiCpuBackend or cuda::RoiCudaBackend.
//
// Data-dependent validity is the one thing the devices treat differently. The CPU kernels
// read rois and levels on the host anyway, so there (detops::reads_data_on_host) a batch
// index that is not an integer in [0, N) or a level that is neither -1 nor in [0, L) raises
// a RuntimeError naming rois[k, 0] or levels[k]. Reading a CUDA tensor on the host would
// synchronise the stream on every call, so the CUDA kernels apply the same predicates per
// RoI (batch_index, has_level in roi_math.h) and give an invalid RoI a zero output row
// (roi_pool: argmax -1) and no gradient; they never index memory with it.
#pragma once

#include <detops/backend.h>
#include <detops/contiguous.h>
#include <detops/cpu_memory.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "roi_checks.h"
#include "roi_math.h"

namespace detops::roi {

inline Strides strides_of(const Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The dtype a narrow S accumulates in (acc_t<S>).
template <typename S>
ScalarType acc_scalar_type() {
  return sizeof(S) == 8 ? ScalarType::Double : ScalarType::Float;
}

// A new, uninitialised output on like's device, backed by huge pages when it is a large CPU
// tensor (see detops/cpu_memory.h): the backends write every element of it.
inline Tensor new_output(const Tensor& like, torch::headeronly::IntHeaderOnlyArrayRef size,
                         std::optional<ScalarType> dtype = std::nullopt) {
  Tensor t = torch::stable::new_empty(like, size, dtype);
  advise_huge_pages(t);
  return t;
}

// A feature map's size and the factor from box to map coordinates.
struct MapShape {
  int64_t height, width;
  double scale;
};

// What the roi_align / multi_level_roi_align entry hands its backend, arguments checked.
struct AlignArgs {
  const char* op;
  Tensor rois;    // [K, 5], contiguous
  Tensor levels;  // [K] int64, contiguous; undefined for roi_align (every RoI on map 0)
  std::vector<MapShape> maps;
  int64_t batch, channels;  // N and C, shared by every map
  int64_t pooled_h, pooled_w, sampling_ratio;
  bool aligned;
  bool deterministic = false;  // backward: order-free sums (detops/scatter_add.cuh)

  int64_t num_rois() const { return rois.size(0); }
};

// What the roi_pool / ps_roi_align / ps_roi_pool entries hand their backend.
struct RoiArgs {
  const char* op;
  Tensor rois;                             // [K, 5], contiguous
  int64_t batch, channels, height, width;  // the input's [N, C, H, W]
  int64_t pooled_h, pooled_w;
  int64_t sampling_ratio;  // ps_roi_align only
  double scale;
  bool deterministic = false;  // backward: order-free sums (detops/scatter_add.cuh)

  int64_t num_rois() const { return rois.size(0); }
  // Output channels of the position-sensitive ops.
  int64_t channels_out() const { return channels / (pooled_h * pooled_w); }
};

template <typename Backend, typename S>
void check_data(const char* op, const Tensor& rois, int64_t batch, const Tensor* levels,
                int64_t num_levels) {
  if constexpr (reads_data_on_host<Backend>()) {
    if (levels != nullptr) {
      check_level_values(op, levels->const_data_ptr<int64_t>(), levels->size(0), num_levels);
    }
    check_batch_indices(op, rois.const_data_ptr<S>(), rois.size(0), rois.size(1), batch);
  }
}

// The single-map forward entries: checks the data, allocates [K, c_out, pooled_h,
// pooled_w] and runs run(tag, out) unless the output is empty.
template <typename Backend, typename F>
Tensor single_map_forward(const RoiArgs& a, const Tensor& input, int64_t c_out, F&& run) {
  const typename Backend::Guard guard(input);
  return dispatch_floating(input.scalar_type(), a.op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    check_data<Backend, S>(a.op, a.rois, a.batch, nullptr, 0);
    Tensor out = new_output(input, {a.num_rois(), c_out, a.pooled_h, a.pooled_w});
    if (out.numel() > 0) run(tag, out);
    return out;
  });
}

// The single-map backward entries: checks the data and returns the input's gradient
// [N, C, H, W] in grad's dtype, zeros when grad is empty, else what run(tag, grad_input)
// writes into an uninitialised tensor.
template <typename Backend, typename F>
Tensor single_map_backward(const RoiArgs& a, const Tensor& grad, F&& run) {
  const typename Backend::Guard guard(grad);
  return dispatch_floating(grad.scalar_type(), a.op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    check_data<Backend, S>(a.op, a.rois, a.batch, nullptr, 0);
    if (grad.numel() == 0) {
      return torch::stable::new_zeros(grad, {a.batch, a.channels, a.height, a.width});
    }
    Tensor grad_input = new_output(grad, {a.batch, a.channels, a.height, a.width});
    run(tag, grad_input);
    return grad_input;
  });
}

// ---------------------------------------------------------------------------------------
// roi_align and multi_level_roi_align (roi_align is the one-level case). Backend provides
//   template <typename S> static void forward(const AlignArgs&, const std::vector<Tensor>&
//       features, Tensor& out);                    // out: [K, C, pooled_h, pooled_w]
//   template <typename S> static void backward(const AlignArgs&, const Tensor& grad,
//       std::vector<Tensor>& grads);               // grads[l]: [N, C, H_l, W_l]
// Outputs are uninitialised and never empty: the backend writes every element.

template <typename Backend>
struct RoiAlignEntry {
  static_assert(is_backend<Backend>());

  static Tensor roi_align(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                          int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
    const char* op = "detops.roi_align";
    check_forward(op, input, rois, {pooled_h, pooled_w, sampling_ratio, Channels::kSame});
    const AlignArgs a{op,
                      detops::contiguous(rois),
                      Tensor(),
                      {{input.size(2), input.size(3), spatial_scale}},
                      input.size(0),
                      input.size(1),
                      pooled_h,
                      pooled_w,
                      sampling_ratio,
                      aligned};
    return forward(a, {input}, "input");
  }

  static Tensor roi_align_backward(Tensor grad, Tensor rois, double spatial_scale, int64_t pooled_h,
                                   int64_t pooled_w, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned, bool deterministic) {
    const char* op = "detops._roi_align_backward";
    check_backward(op, grad, rois, {pooled_h, pooled_w, sampling_ratio, Channels::kSame},
                   {batch_size, channels, height, width});
    const AlignArgs a{op,
                      detops::contiguous(rois),
                      Tensor(),
                      {{height, width, spatial_scale}},
                      batch_size,
                      channels,
                      pooled_h,
                      pooled_w,
                      sampling_ratio,
                      aligned,
                      deterministic};
    return backward(a, grad)[0];
  }

  static Tensor multi_level_roi_align(std::vector<Tensor> features, std::vector<double> scales,
                                      Tensor rois, Tensor levels, int64_t pooled_h,
                                      int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
    const char* op = "detops.multi_level_roi_align";
    check_levels(op, features, scales, rois, levels, pooled_h, pooled_w, sampling_ratio,
                 Backend::kMaxLevels);
    std::vector<MapShape> maps;
    for (size_t l = 0; l < features.size(); ++l) {
      maps.push_back({features[l].size(2), features[l].size(3), scales[l]});
    }
    const AlignArgs a{op,
                      detops::contiguous(rois),
                      detops::contiguous(levels),
                      std::move(maps),
                      features[0].size(0),
                      features[0].size(1),
                      pooled_h,
                      pooled_w,
                      sampling_ratio,
                      aligned};
    return forward(a, features, "features");
  }

  static std::vector<Tensor> multi_level_roi_align_backward(
      Tensor grad, Tensor rois, Tensor levels, std::vector<double> scales,
      std::vector<int64_t> heights, std::vector<int64_t> widths, int64_t batch_size,
      int64_t channels, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned,
      bool deterministic) {
    const char* op = "detops._multi_level_roi_align_backward";
    check_levels_backward(op, grad, rois, levels, scales, heights, widths, batch_size, channels,
                          pooled_h, pooled_w, sampling_ratio, Backend::kMaxLevels);
    std::vector<MapShape> maps;
    for (size_t l = 0; l < scales.size(); ++l) maps.push_back({heights[l], widths[l], scales[l]});
    const AlignArgs a{op,
                      detops::contiguous(rois),
                      detops::contiguous(levels),
                      std::move(maps),
                      batch_size,
                      channels,
                      pooled_h,
                      pooled_w,
                      sampling_ratio,
                      aligned,
                      deterministic};
    return backward(a, grad);
  }

 private:
  template <typename S>
  static void check(const AlignArgs& a) {
    check_data<Backend, S>(a.op, a.rois, a.batch, a.levels.defined() ? &a.levels : nullptr,
                           static_cast<int64_t>(a.maps.size()));
  }

  static Tensor forward(const AlignArgs& a, const std::vector<Tensor>& features, const char* arg) {
    const typename Backend::Guard guard(features[0]);
    return dispatch_floating(features[0].scalar_type(), a.op, arg, [&](auto tag) {
      using S = typename decltype(tag)::type;
      check<S>(a);
      Tensor out = new_output(features[0], {a.num_rois(), a.channels, a.pooled_h, a.pooled_w});
      if (out.numel() > 0) Backend::template forward<S>(a, features, out);
      return out;
    });
  }

  static std::vector<Tensor> backward(const AlignArgs& a, const Tensor& grad) {
    const typename Backend::Guard guard(grad);
    return dispatch_floating(grad.scalar_type(), a.op, "grad", [&](auto tag) {
      using S = typename decltype(tag)::type;
      check<S>(a);
      std::vector<Tensor> grads;
      for (const MapShape& m : a.maps) {
        grads.push_back(
            grad.numel() > 0
                ? new_output(grad, {a.batch, a.channels, m.height, m.width})
                : torch::stable::new_zeros(grad, {a.batch, a.channels, m.height, m.width}));
      }
      if (grad.numel() > 0) Backend::template backward<S>(a, grad, grads);
      return grads;
    });
  }
};

// ---------------------------------------------------------------------------------------
// roi_pool. Backend provides
//   template <typename S> static void forward(const RoiArgs&, const Tensor& input,
//       Tensor& out, Tensor& argmax);              // both [K, C, pooled_h, pooled_w]
//   template <typename S> static void backward(const RoiArgs&, const Tensor& grad,
//       const Tensor& argmax, Tensor& grad_input); // argmax contiguous; grad_input [N, C, H, W]

template <typename Backend>
struct RoiPoolEntry {
  static_assert(is_backend<Backend>());

  static std::tuple<Tensor, Tensor> roi_pool(Tensor input, Tensor rois, double spatial_scale,
                                             int64_t pooled_h, int64_t pooled_w) {
    const char* op = "detops.roi_pool";
    check_forward(op, input, rois, {pooled_h, pooled_w, kNoSampling, Channels::kSame});
    check_plane_fits_int32(op, input);
    const RoiArgs a = args(op, rois, input.size(0), input.size(1), input.size(2), input.size(3),
                           pooled_h, pooled_w, spatial_scale);
    const typename Backend::Guard guard(input);
    return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
      using S = typename decltype(tag)::type;
      check_data<Backend, S>(op, a.rois, a.batch, nullptr, 0);
      Tensor out = new_output(input, {a.num_rois(), a.channels, pooled_h, pooled_w});
      Tensor argmax =
          new_output(input, {a.num_rois(), a.channels, pooled_h, pooled_w}, ScalarType::Int);
      if (out.numel() > 0) Backend::template forward<S>(a, input, out, argmax);
      return std::make_tuple(out, argmax);
    });
  }

  static Tensor roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, double spatial_scale,
                                  int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width,
                                  bool deterministic) {
    const char* op = "detops._roi_pool_backward";
    check_backward(op, grad, rois, {pooled_h, pooled_w, kNoSampling, Channels::kSame},
                   {batch_size, channels, height, width});
    check_argmax(op, argmax, grad);
    RoiArgs a =
        args(op, rois, batch_size, channels, height, width, pooled_h, pooled_w, spatial_scale);
    a.deterministic = deterministic;
    const Tensor arg = detops::contiguous(argmax);
    return single_map_backward<Backend>(a, grad, [&](auto tag, Tensor& grad_input) {
      using S = typename decltype(tag)::type;
      Backend::template backward<S>(a, grad, arg, grad_input);
    });
  }

 private:
  static RoiArgs args(const char* op, const Tensor& rois, int64_t n, int64_t c, int64_t h,
                      int64_t w, int64_t pooled_h, int64_t pooled_w, double scale) {
    return {op, detops::contiguous(rois), n, c, h, w, pooled_h, pooled_w, kNoSampling, scale};
  }
};

// ---------------------------------------------------------------------------------------
// ps_roi_align and ps_roi_pool. Backend provides
//   template <typename S> static void forward(const RoiArgs&, const Tensor& input,
//       Tensor& out);                              // [K, C / (pooled_h * pooled_w), ...]
//   template <typename S> static void backward(const RoiArgs&, const Tensor& grad,
//       Tensor& grad_input);                       // [N, C, H, W]

enum class PsOp {
  kAlign,  // ps_roi_align: takes a sampling_ratio
  kPool,   // ps_roi_pool
};

template <typename Backend, PsOp kPsOp>
struct PsEntry {
  static_assert(is_backend<Backend>());

  static constexpr bool kSampled = kPsOp == PsOp::kAlign;
  static constexpr const char* kOp = kSampled ? "detops.ps_roi_align" : "detops.ps_roi_pool";
  static constexpr const char* kBackwardOp =
      kSampled ? "detops._ps_roi_align_backward" : "detops._ps_roi_pool_backward";

  static Tensor forward(const Tensor& input, const Tensor& rois, double spatial_scale,
                        int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio) {
    check_forward(kOp, input, rois,
                  {pooled_h, pooled_w, sampling_ratio, Channels::kPositionSensitive});
    const RoiArgs a{kOp,
                    detops::contiguous(rois),
                    input.size(0),
                    input.size(1),
                    input.size(2),
                    input.size(3),
                    pooled_h,
                    pooled_w,
                    sampling_ratio,
                    spatial_scale};
    return single_map_forward<Backend>(a, input, a.channels_out(), [&](auto tag, Tensor& out) {
      using S = typename decltype(tag)::type;
      Backend::template forward<S>(a, input, out);
    });
  }

  static Tensor backward(const Tensor& grad, const Tensor& rois, double spatial_scale,
                         int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                         int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                         bool deterministic) {
    check_backward(kBackwardOp, grad, rois,
                   {pooled_h, pooled_w, sampling_ratio, Channels::kPositionSensitive},
                   {batch_size, channels, height, width});
    const RoiArgs a{
        kBackwardOp, detops::contiguous(rois), batch_size,    channels,     height, width, pooled_h,
        pooled_w,    sampling_ratio,           spatial_scale, deterministic};
    return single_map_backward<Backend>(a, grad, [&](auto tag, Tensor& grad_input) {
      using S = typename decltype(tag)::type;
      Backend::template backward<S>(a, grad, grad_input);
    });
  }

  // The op schemas, with and without sampling_ratio.
  static Tensor ps_roi_align(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                             int64_t pooled_w, int64_t sampling_ratio) {
    return forward(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  }
  static Tensor ps_roi_align_backward(Tensor grad, Tensor rois, double spatial_scale,
                                      int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                                      int64_t batch_size, int64_t channels, int64_t height,
                                      int64_t width, bool deterministic) {
    return backward(grad, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, batch_size,
                    channels, height, width, deterministic);
  }
  static Tensor ps_roi_pool(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                            int64_t pooled_w) {
    return forward(input, rois, spatial_scale, pooled_h, pooled_w, kNoSampling);
  }
  static Tensor ps_roi_pool_backward(Tensor grad, Tensor rois, double spatial_scale,
                                     int64_t pooled_h, int64_t pooled_w, int64_t batch_size,
                                     int64_t channels, int64_t height, int64_t width,
                                     bool deterministic) {
    return backward(grad, rois, spatial_scale, pooled_h, pooled_w, kNoSampling, batch_size,
                    channels, height, width, deterministic);
  }
};

template <typename Backend>
using PsRoiAlignEntry = PsEntry<Backend, PsOp::kAlign>;
template <typename Backend>
using PsRoiPoolEntry = PsEntry<Backend, PsOp::kPool>;

}  // namespace detops::roi
