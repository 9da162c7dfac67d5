// The device-independent half of multi_scale_deformable_attention: the op entry points
// (DeformAttnEntry), argument checks, dtype dispatch, output allocation and the device guard.
// The device-specific half is a Backend (detops/backend.h) holding only loops (CPU) or
// thread mapping and launches (CUDA):
//
//   (CUDA only) static void Backend::level_table(const Geometry&,
//       const int64_t* shapes /* [L, 2] */, const int64_t* starts /* [L] or nullptr */,
//       int64_t* table /* [L * kLevelFields + 1] */);
//   template <typename S, typename T> static void Backend::forward(
//       const Geometry&, const Inputs<S>&, S* out /* [B, Q, H * D] */);
//   template <typename S, typename T> static void Backend::backward(
//       const Geometry&, const Inputs<S>&, const S* grad_out /* [B, Q, H * D] */,
//       Tensor* grad_value /* [B, S, H, D] in T, zeroed, accumulated into; or nullptr */,
//       S* grad_loc /* [B, Q, H, L, P, 2], or nullptr */,
//       S* grad_attn /* [B, Q, H, L, P], or nullptr */,
//       bool deterministic /* grad_value's sums bitwise repeatable */);
//
// S is the tensor dtype, T the accumulation type (float32 for float16/bfloat16). Every
// pointer is to contiguous memory on value's device.
#pragma once

#include <detops/backend.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "deform_attn_checks.h"

namespace detops::deform_attn {

using torch::stable::Tensor;

template <typename S>
struct Inputs {
  const S* value;         // [B, S, H, D]
  const S* loc;           // [B, Q, H, L, P, 2]
  const S* attn;          // [B, Q, H, L, P]
  const S* zeros;         // D zeros: the row a neighbour outside its level reads
  const int64_t* levels;  // [L * kLevelFields + 1]: height, width, first row of value per
                          // level, then 1 if the levels describe value (see level_table)
};

template <typename T>
constexpr ScalarType scalar_type_of() {
  return sizeof(T) == 8 ? ScalarType::Double : ScalarType::Float;
}

// The level table (see kLevelFields) on value's device. The CPU reads the index tensors,
// which are on the host, and raises on values that do not describe value. CUDA never reads
// device data on the host (that would wait for the stream): the table is built and checked
// by a kernel, from the index tensors copied to the device if they are not there (a copy
// from the host does not wait for the stream), and where the levels do not describe value
// the kernels give NaN instead of an error.
template <typename Backend>
Tensor level_table(const char* op, const Geometry& g, const Tensor& value, const Tensor& shapes,
                   const std::optional<Tensor>& start_index) {
  const int64_t n = g.L * kLevelFields + 1;
  Tensor table = torch::stable::new_empty(value, {n}, ScalarType::Long);
  if constexpr (reads_data_on_host<Backend>()) {
    const std::vector<int64_t> levels = levels_on_host(op, g, shapes, start_index);
    std::copy(levels.begin(), levels.end(), table.mutable_data_ptr<int64_t>());
  } else {
    const auto on_device = [&](const Tensor& t) {
      return detops::contiguous(
          same_device(t, value) ? t : torch::stable::to(t, value.device(), /*non_blocking=*/true));
    };
    const Tensor hw = on_device(shapes);
    std::optional<Tensor> starts;
    if (start_index.has_value()) starts = on_device(*start_index);
    Backend::level_table(g, hw.const_data_ptr<int64_t>(),
                         starts.has_value() ? starts->const_data_ptr<int64_t>() : nullptr,
                         table.mutable_data_ptr<int64_t>());
  }
  return table;
}

// The contiguous tensors a kernel reads, and the pointers to them.
template <typename S>
struct Prepared {
  Tensor value, loc, attn, zeros, levels;
  Inputs<S> ptrs() const {
    return {value.const_data_ptr<S>(), loc.const_data_ptr<S>(), attn.const_data_ptr<S>(),
            zeros.const_data_ptr<S>(), levels.const_data_ptr<int64_t>()};
  }
};

template <typename S>
Prepared<S> prepare(const Geometry& g, const Tensor& value, const Tensor& loc, const Tensor& attn,
                    const Tensor& levels) {
  Prepared<S> p{detops::contiguous(value), detops::contiguous(loc), detops::contiguous(attn),
                torch::stable::new_zeros(value, {g.D > 0 ? g.D : 1}), levels};
  return p;
}

template <typename Backend>
Tensor forward(const Tensor& value, const Tensor& shapes, const Tensor& loc, const Tensor& attn,
               const std::optional<Tensor>& start_index) {
  const Geometry g = check_inputs(kOp, value, shapes, loc, attn, start_index);
  const Tensor levels = level_table<Backend>(kOp, g, value, shapes, start_index);
  Tensor out = torch::stable::new_empty(value, {g.B, g.Q, g.H * g.D});
  if (out.numel() == 0) return out;
  dispatch_floating(value.scalar_type(), kOp, "value", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    const Prepared<S> p = prepare<S>(g, value, loc, attn, levels);
    Backend::template forward<S, T>(g, p.ptrs(), out.mutable_data_ptr<S>());
  });
  return out;
}

// (grad_value, grad_sampling_locations, grad_attention_weights); unneeded ones are zeros.
template <typename Backend>
std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& grad_in, const Tensor& value,
                                            const Tensor& shapes, const Tensor& loc,
                                            const Tensor& attn,
                                            const std::optional<Tensor>& start_index,
                                            bool need_value, bool need_sampling,
                                            bool deterministic) {
  const Geometry g = check_inputs(kBackwardOp, value, shapes, loc, attn, start_index);
  check_grad_output(g, value, grad_in);
  const Tensor levels = level_table<Backend>(kBackwardOp, g, value, shapes, start_index);
  Tensor grad_value = torch::stable::new_zeros(value, value.sizes());
  Tensor grad_loc = torch::stable::new_zeros(loc, loc.sizes());
  Tensor grad_attn = torch::stable::new_zeros(attn, attn.sizes());
  if (grad_in.numel() == 0 || g.L * g.P == 0 || (!need_value && !need_sampling)) {
    return {grad_value, grad_loc, grad_attn};
  }
  dispatch_floating(value.scalar_type(), kBackwardOp, "value", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    constexpr ScalarType acc = scalar_type_of<T>();
    const Prepared<S> p = prepare<S>(g, value, loc, attn, levels);
    const Tensor grad = detops::contiguous(grad_in);
    // The value gradient accumulates in T (float32 for narrow types), then is rounded once.
    const bool narrow_type = value.scalar_type() != acc;
    Tensor gv = narrow_type && need_value ? torch::stable::new_zeros(value, value.sizes(), acc)
                                          : grad_value;
    Backend::template backward<S, T>(
        g, p.ptrs(), grad.const_data_ptr<S>(), need_value ? &gv : nullptr,
        need_sampling ? grad_loc.mutable_data_ptr<S>() : nullptr,
        need_sampling ? grad_attn.mutable_data_ptr<S>() : nullptr, deterministic);
    if (narrow_type && need_value) torch::stable::copy_(grad_value, gv);
  });
  return {grad_value, grad_loc, grad_attn};
}

// The op entry points of both devices: a device file registers
// DeformAttnEntry<its backend>, whose functions are named after the ops.
template <typename Backend>
struct DeformAttnEntry {
  static_assert(is_backend<Backend>());

  static Tensor multi_scale_deformable_attention(Tensor value, Tensor value_spatial_shapes,
                                                 Tensor sampling_locations,
                                                 Tensor attention_weights,
                                                 std::optional<Tensor> value_level_start_index) {
    const typename Backend::Guard guard(value);
    return forward<Backend>(value, value_spatial_shapes, sampling_locations, attention_weights,
                            value_level_start_index);
  }

  static std::tuple<Tensor, Tensor, Tensor> multi_scale_deformable_attention_backward(
      Tensor grad_output, Tensor value, Tensor value_spatial_shapes, Tensor sampling_locations,
      Tensor attention_weights, std::optional<Tensor> value_level_start_index, bool need_value,
      bool need_sampling, bool deterministic) {
    const typename Backend::Guard guard(value);
    return backward<Backend>(grad_output, value, value_spatial_shapes, sampling_locations,
                             attention_weights, value_level_start_index, need_value, need_sampling,
                             deterministic);
  }
};

}  // namespace detops::deform_attn
