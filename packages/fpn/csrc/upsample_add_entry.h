// The entry points of fpn_upsample_add and its backward, shared by the CPU and CUDA
// kernels: argument checks, contiguity, output allocation, the empty cases and dtype
// dispatch happen here, once, and the entry sets the device (Backend::Guard). A backend
// satisfies detops/backend.h's concept and supplies
//   template <typename S> static void forward(const Tensor& like, const S* top,
//       const S* lateral, S* out, int64_t planes, int64_t th, int64_t tw, int64_t oh, int64_t ow);
//   template <typename S> static void backward(const Tensor& like, const S* grad,
//       S* grad_top, int64_t planes, int64_t th, int64_t tw, int64_t oh, int64_t ow);
// where `like` is an input on the device (for its stream) and planes = N * C.
#pragma once

#include <detops/backend.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "upsample_add_checks.h"

namespace detops::fpn {

template <typename Backend>
struct UpsampleAddEntry {
  static_assert(is_backend<Backend>());

  static Tensor fpn_upsample_add(Tensor top, Tensor lateral) {
    const char* op = "detops.fpn_upsample_add";
    check_upsample_add(op, top, lateral);
    const typename Backend::Guard guard(top);
    const Tensor t = detops::contiguous(top);
    const Tensor l = detops::contiguous(lateral);
    Tensor out = torch::stable::new_empty(l, {l.size(0), l.size(1), l.size(2), l.size(3)});
    if (out.numel() == 0) return out;
    dispatch_floating(t.scalar_type(), op, "top", [&](auto tag) {
      using S = typename decltype(tag)::type;
      Backend::template forward<S>(t, t.const_data_ptr<S>(), l.const_data_ptr<S>(),
                                   out.mutable_data_ptr<S>(), t.size(0) * t.size(1), t.size(2),
                                   t.size(3), l.size(2), l.size(3));
    });
    return out;
  }

  static Tensor fpn_upsample_add_backward(Tensor grad, int64_t top_height, int64_t top_width) {
    const char* op = "detops._fpn_upsample_add_backward";
    check_upsample_add_backward(op, grad, top_height, top_width);
    const typename Backend::Guard guard(grad);
    const Tensor g = detops::contiguous(grad);
    // Every top element that some output reads is written by the backend; only an empty
    // `grad` (no output reads anything) needs an explicit zero fill.
    if (g.numel() == 0) {
      return torch::stable::new_zeros(g, {g.size(0), g.size(1), top_height, top_width});
    }
    Tensor grad_top = torch::stable::new_empty(g, {g.size(0), g.size(1), top_height, top_width});
    if (grad_top.numel() == 0) return grad_top;
    dispatch_floating(g.scalar_type(), op, "grad", [&](auto tag) {
      using S = typename decltype(tag)::type;
      Backend::template backward<S>(g, g.const_data_ptr<S>(), grad_top.mutable_data_ptr<S>(),
                                    g.size(0) * g.size(1), top_height, top_width, g.size(2),
                                    g.size(3));
    });
    return grad_top;
  }
};

}  // namespace detops::fpn
