// The device-independent half of deform_conv2d: argument checks, batch chunking and the
// matrix products (through torch's matmul). The device-specific half is a Backend:
//
//   template <typename S, typename T> class Backend::Sampler {
//     Sampler(const Geometry&, int64_t b0, int64_t nb, const Tensor& input /* contiguous */,
//             const S* offset, const S* mask /* or nullptr */);
//     void im2col(T* col);                            // col: [C * K, nb, P]
//     void col2im(const T* grad_col, S* grad_input);  // grad_input: whole [B, C, H, W]
//     void coord_grad(const T* grad_col, S* grad_offset, S* grad_mask /* or nullptr */);
//   };
//   template <typename S, typename T> static void Backend::finish_output(
//       const Geometry&, int64_t b0, int64_t nb, const T* prod /* [Oc, nb, P] */,
//       const S* bias /* or nullptr */, S* out /* whole [B, Oc, oh, ow] */);
//
// S is the tensor dtype, T the accumulation type (float32 for float16/bfloat16). With
// C = in_channels, K = kernel_h * kernel_w, P = out_h * out_w and G = groups, the column
// buffer of a chunk of nb images is [C * K, nb * P] = [G, C * K / G, nb * P], so
// out = weight[G, Oc / G, C * K / G] @ col is one batched product per chunk. Chunks are
// as many whole images as fit the column budget (at least one), so memory stays bounded
// for any batch size.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <vector>

#include <detops/dispatch.h>

#include "deform_checks.h"

namespace detops::deform {

using torch::stable::Tensor;

// Bytes one column buffer may take (the backward holds two). Override with the
// environment variable DETOPS_DEFORM_COLUMN_BYTES (read once).
inline int64_t column_budget_bytes() {
  static const int64_t budget = [] {
    const char* env = std::getenv("DETOPS_DEFORM_COLUMN_BYTES");
    if (env != nullptr) {
      const long long v = std::atoll(env);
      if (v > 0) return static_cast<int64_t>(v);
    }
    return int64_t(64) << 20;
  }();
  return budget;
}

inline int64_t images_per_chunk(const Geometry& g, int64_t element_bytes) {
  const int64_t per_image = g.in_channels * g.taps() * g.positions() * element_bytes;
  return std::max<int64_t>(1, std::min<int64_t>(g.batch, column_budget_bytes() / per_image));
}

template <typename T>
constexpr ScalarType scalar_type_of() {
  return sizeof(T) == 8 ? ScalarType::Double : ScalarType::Float;
}

// `t` in dtype `dtype`, contiguous (no copy when it already is).
inline Tensor as_contiguous(const Tensor& t, ScalarType dtype) {
  Tensor c = t.scalar_type() == dtype ? t : torch::stable::to(t, dtype);
  return torch::stable::contiguous(c);
}

// Gradients of one chunk's images, in the chunk's [Oc, nb * P] layout and dtype T.
inline Tensor grad_output_columns(const Geometry& g, const Tensor& grad_out, int64_t b0,
                                  int64_t nb, ScalarType acc) {
  Tensor chunk = grad_out;  // narrow() takes a non-const handle
  chunk = torch::stable::narrow(chunk, 0, b0, nb);
  chunk = torch::stable::view(chunk, {nb, g.out_channels, g.positions()});
  chunk = as_contiguous(torch::stable::transpose(chunk, 0, 1), acc);
  return torch::stable::view(chunk, {g.groups, g.out_channels / g.groups, nb * g.positions()});
}

// Dimension list for torch::stable::sum (the list must outlive the call: pass a temporary).
inline std::optional<torch::headeronly::IntHeaderOnlyArrayRef> dims(
    std::initializer_list<int64_t> d) {
  return torch::headeronly::IntHeaderOnlyArrayRef(d.begin(), d.size());
}

template <typename S>
const S* optional_ptr(const std::optional<Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<S>() : nullptr;
}

template <typename Backend>
Tensor forward(const Tensor& input_in, const Tensor& offset_in, const Tensor& weight_in,
               const std::optional<Tensor>& bias_in, const std::optional<Tensor>& mask_in,
               const Params& params) {
  const Geometry g = check_inputs(kOp, input_in, offset_in, weight_in, mask_in, bias_in, params);
  const Tensor input = torch::stable::contiguous(input_in);
  const Tensor offset = torch::stable::contiguous(offset_in);
  std::optional<Tensor> mask, bias;
  if (mask_in.has_value()) mask = torch::stable::contiguous(*mask_in);
  if (bias_in.has_value()) bias = torch::stable::contiguous(*bias_in);

  Tensor out = torch::stable::new_empty(input, {g.batch, g.out_channels, g.out_h, g.out_w});
  if (g.batch == 0 || g.out_channels == 0) return out;

  dispatch_floating(input.scalar_type(), kOp, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    constexpr ScalarType acc = scalar_type_of<T>();
    const int64_t ck = g.in_channels * g.taps();
    const int64_t P = g.positions();
    const Tensor w = torch::stable::view(as_contiguous(weight_in, acc),
                                         {g.groups, g.out_channels / g.groups, ck / g.groups});
    const int64_t chunk = images_per_chunk(g, sizeof(T));
    Tensor col_storage = torch::stable::new_empty(input, {ck * chunk * P}, acc);
    for (int64_t b0 = 0; b0 < g.batch; b0 += chunk) {
      const int64_t nb = std::min(chunk, g.batch - b0);
      Tensor col = torch::stable::view(torch::stable::narrow(col_storage, 0, 0, ck * nb * P),
                                       {g.groups, ck / g.groups, nb * P});
      typename Backend::template Sampler<S, T> sampler(g, b0, nb, input,
                                                       offset.const_data_ptr<S>(),
                                                       optional_ptr<S>(mask));
      sampler.im2col(col.mutable_data_ptr<T>());
      const Tensor prod = torch::stable::matmul(w, col);  // [G, Oc / G, nb * P]
      Backend::template finish_output<S, T>(g, b0, nb, prod.const_data_ptr<T>(),
                                            optional_ptr<S>(bias), out.mutable_data_ptr<S>());
    }
  });
  return out;
}

// (grad_input, grad_offset, grad_weight, grad_mask, grad_bias). grad_mask is empty ([0])
// when there is no mask; grad_bias is always computed (the sum of grad_output).
template <typename Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward(
    const Tensor& grad_out_in, const Tensor& input_in, const Tensor& offset_in,
    const Tensor& weight_in, const std::optional<Tensor>& mask_in, const Params& params) {
  const Geometry g =
      check_inputs(kBackwardOp, input_in, offset_in, weight_in, mask_in, std::nullopt, params);
  check_grad_output(g, input_in, grad_out_in);
  const Tensor input = torch::stable::contiguous(input_in);
  const Tensor offset = torch::stable::contiguous(offset_in);
  const Tensor grad_out = torch::stable::contiguous(grad_out_in);
  std::optional<Tensor> mask;
  if (mask_in.has_value()) mask = torch::stable::contiguous(*mask_in);

  Tensor grad_input = torch::stable::new_zeros(input, {g.batch, g.in_channels, g.height, g.width});
  Tensor grad_offset = torch::stable::new_zeros(offset, offset.sizes());
  Tensor grad_mask = mask.has_value() ? torch::stable::new_zeros(*mask, mask->sizes())
                                      : torch::stable::new_empty(input, {0});
  Tensor grad_weight = torch::stable::new_zeros(weight_in, weight_in.sizes());
  Tensor grad_bias = torch::stable::new_zeros(input, {g.out_channels});
  if (g.batch == 0 || g.out_channels == 0) {
    return {grad_input, grad_offset, grad_weight, grad_mask, grad_bias};
  }

  dispatch_floating(input.scalar_type(), kBackwardOp, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    constexpr ScalarType acc = scalar_type_of<T>();
    const int64_t ck = g.in_channels * g.taps();
    const int64_t ckg = ck / g.groups;
    const int64_t ocg = g.out_channels / g.groups;
    const int64_t P = g.positions();
    const Tensor w = torch::stable::view(as_contiguous(weight_in, acc), {g.groups, ocg, ckg});
    const Tensor w_t = torch::stable::transpose(w, 1, 2);  // [G, CK / G, Oc / G]
    const int64_t chunk = images_per_chunk(g, sizeof(T));
    const int64_t chunks = (g.batch + chunk - 1) / chunk;
    Tensor col_storage = torch::stable::new_empty(input, {ck * chunk * P}, acc);
    // One weight-gradient slice per chunk, summed at the end in a fixed order.
    Tensor gw_parts = torch::stable::new_empty(input, {chunks, g.groups, ocg, ckg}, acc);
    for (int64_t b0 = 0, c = 0; b0 < g.batch; b0 += chunk, ++c) {
      const int64_t nb = std::min(chunk, g.batch - b0);
      Tensor col = torch::stable::view(torch::stable::narrow(col_storage, 0, 0, ck * nb * P),
                                       {g.groups, ckg, nb * P});
      typename Backend::template Sampler<S, T> sampler(g, b0, nb, input,
                                                       offset.const_data_ptr<S>(),
                                                       optional_ptr<S>(mask));
      const Tensor go = grad_output_columns(g, grad_out, b0, nb, acc);  // [G, Oc / G, nb * P]
      const Tensor grad_col = torch::stable::matmul(w_t, go);            // [G, CK / G, nb * P]
      sampler.col2im(grad_col.const_data_ptr<T>(), grad_input.mutable_data_ptr<S>());
      sampler.coord_grad(grad_col.const_data_ptr<T>(), grad_offset.mutable_data_ptr<S>(),
                         mask.has_value() ? grad_mask.mutable_data_ptr<S>() : nullptr);
      sampler.im2col(col.mutable_data_ptr<T>());
      Tensor part = torch::stable::select(gw_parts, 0, c);
      torch::stable::copy_(part, torch::stable::matmul(go, torch::stable::transpose(col, 1, 2)));
    }
    Tensor gw = chunks == 1 ? torch::stable::select(gw_parts, 0, 0)
                            : torch::stable::sum(gw_parts, dims({0}));
    torch::stable::copy_(grad_weight, torch::stable::view(gw, weight_in.sizes()));
    torch::stable::copy_(grad_bias,
                         torch::stable::sum(grad_out, dims({0, 2, 3}), false, acc));
  });
  return {grad_input, grad_offset, grad_weight, grad_mask, grad_bias};
}

}  // namespace detops::deform
