// The device-independent half of deform_conv2d: the op entry points (DeformEntry), argument
// checks, the device guard, dtype dispatch, output allocation, chunking and the matrix
// products (through torch's matmul). The device-specific half is a Backend
// (detops/backend.h), which holds only loops (CPU) or thread mapping and launches (CUDA);
// the index formulas both use are deform_layout_math.h:
//
//   static constexpr int64_t Backend::kColumnBytes;  // default column budget
//   template <typename S, typename T> class Backend::Sampler {
//     Sampler(const Layout& /* of the chunk */, const Tensor& input /* contiguous */,
//             const S* offset, const S* mask /* or nullptr */);
//     void im2col(T* col);                             // col: [C * K, nb, np]
//     // Adds into grad_input, the whole [B, C, H, W] in T; deterministic: in an order-free way.
//     void col2im(const T* grad_col, Tensor& grad_input, bool deterministic);
//     // Offset and mask gradients; also writes the chunk's columns, as im2col would, unless
//     // col is nullptr (the weight gradient needs them; this pass reads the same neighbours).
//     void coord_grad(const T* grad_col, S* grad_offset, S* grad_mask /* or nullptr */,
//                     T* col /* or nullptr */);
//   };
//   template <typename S, typename T> static void Backend::finish_output(
//       const Layout&, const T* prod /* [Oc, nb, np] */, const S* bias /* or nullptr */,
//       S* out /* whole [B, Oc, out_h, out_w] */);
//
// S is the tensor dtype, T the accumulation type (float32 for float16/bfloat16). With
// C = in_channels, K = kernel_h * kernel_w, P = out_h * out_w and G = groups, a chunk is
// nb whole images, or one image's output positions [p0, p0 + np) when a single image does
// not fit the column budget. Its column buffer is [C * K, nb * np] = [G, C * K / G, nb * np],
// so out = weight[G, Oc / G, C * K / G] @ col is one batched product per chunk. Every
// buffer of a chunk stays within the budget, so memory is bounded for any batch and image
// size, and buffers stay small enough for the allocator to reuse them without page faults.
#pragma once

#include <detops/backend.h>
#include <detops/contiguous.h>
#include <detops/dispatch.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <vector>

#include "deform_checks.h"
#include "deform_layout_math.h"

namespace detops::deform {

using torch::stable::Tensor;

// Bytes one column-sized buffer of a chunk may take: the backend's default (see
// Backend::kColumnBytes), or the environment variable DETOPS_DEFORM_COLUMN_BYTES (read once).
inline int64_t column_budget_bytes(int64_t backend_default) {
  static const int64_t from_env = [] {
    const char* env = std::getenv("DETOPS_DEFORM_COLUMN_BYTES");
    const long long v = env != nullptr ? std::atoll(env) : 0;
    return v > 0 ? static_cast<int64_t>(v) : int64_t(0);
  }();
  return from_env > 0 ? from_env : backend_default;
}

// The chunks, in a fixed order: whole images while they fit, else slices of one image.
inline std::vector<Chunk> make_chunks(const Geometry& g, int64_t element_bytes, int64_t budget) {
  const int64_t P = g.positions();
  const int64_t per_position = g.in_channels * g.taps() * element_bytes;
  std::vector<Chunk> chunks;
  if (per_position * P <= budget) {
    const int64_t nb = std::max<int64_t>(1, budget / (per_position * P));
    for (int64_t b0 = 0; b0 < g.batch; b0 += nb) {
      chunks.push_back({b0, std::min(nb, g.batch - b0), /*p0=*/0, /*np=*/P});
    }
  } else {
    const int64_t pieces = (per_position * P + budget - 1) / budget;
    const int64_t np = (P + pieces - 1) / pieces;  // balanced slices
    for (int64_t b = 0; b < g.batch; ++b) {
      for (int64_t p0 = 0; p0 < P; p0 += np) chunks.push_back({b, 1, p0, std::min(np, P - p0)});
    }
  }
  return chunks;
}

template <typename T>
constexpr ScalarType scalar_type_of() {
  return sizeof(T) == 8 ? ScalarType::Double : ScalarType::Float;
}

// `t` in dtype `dtype`, contiguous (no copy when it already is).
inline Tensor as_contiguous(const Tensor& t, ScalarType dtype) {
  Tensor c = t.scalar_type() == dtype ? t : torch::stable::to(t, dtype);
  return detops::contiguous(c);
}

// Dimension list for torch::stable::sum (the list must outlive the call: pass a temporary).
inline std::optional<torch::headeronly::IntHeaderOnlyArrayRef> dims(
    std::initializer_list<int64_t> d) {
  return torch::headeronly::IntHeaderOnlyArrayRef(d.begin(), d.size());
}

// grad_out of one chunk in the column layout [G, Oc / G, nb * np], dtype `acc`.
inline Tensor grad_output_columns(const Geometry& g, const Tensor& grad_out, const Chunk& ch,
                                  ScalarType acc) {
  Tensor t = torch::stable::view(grad_out, {g.batch, g.out_channels, g.positions()});
  t = torch::stable::narrow(t, 0, ch.b0, ch.nb);
  t = torch::stable::narrow(t, 2, ch.p0, ch.np);
  t = as_contiguous(torch::stable::transpose(t, 0, 1), acc);  // [Oc, nb, np]
  return torch::stable::view(t, {g.groups, g.out_channels / g.groups, ch.nb * ch.np});
}

// A [G, C * K / G, nb * np] view of the first elements of `storage`.
inline Tensor column_view(const Geometry& g, Tensor& storage, const Chunk& ch) {
  const int64_t ck = g.in_channels * g.taps();
  Tensor flat = torch::stable::narrow(storage, 0, 0, ck * ch.nb * ch.np);
  return torch::stable::view(flat, {g.groups, ck / g.groups, ch.nb * ch.np});
}

inline int64_t largest_chunk(const std::vector<Chunk>& chunks) {
  int64_t n = 0;
  for (const Chunk& c : chunks) n = std::max(n, c.nb * c.np);
  return n;
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
  const Tensor input = detops::contiguous(input_in);
  const Tensor offset = detops::contiguous(offset_in);
  std::optional<Tensor> mask, bias;
  if (mask_in.has_value()) mask = detops::contiguous(*mask_in);
  if (bias_in.has_value()) bias = detops::contiguous(*bias_in);

  Tensor out = torch::stable::new_empty(input, {g.batch, g.out_channels, g.out_h, g.out_w});
  if (g.batch == 0 || g.out_channels == 0) return out;

  dispatch_floating(input.scalar_type(), kOp, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = acc_t<S>;
    constexpr ScalarType acc = scalar_type_of<T>();
    const int64_t ck = g.in_channels * g.taps();
    const Tensor w = torch::stable::view(as_contiguous(weight_in, acc),
                                         {g.groups, g.out_channels / g.groups, ck / g.groups});
    const std::vector<Chunk> chunks =
        make_chunks(g, sizeof(T), column_budget_bytes(Backend::kColumnBytes));
    Tensor col_storage = torch::stable::new_empty(input, {ck * largest_chunk(chunks)}, acc);
    for (const Chunk& ch : chunks) {
      Tensor col = column_view(g, col_storage, ch);
      const Layout layout(g, ch);
      typename Backend::template Sampler<S, T> sampler(layout, input, offset.const_data_ptr<S>(),
                                                       optional_ptr<S>(mask));
      sampler.im2col(col.mutable_data_ptr<T>());
      const Tensor prod = torch::stable::matmul(w, col);  // [G, Oc / G, nb * np]
      Backend::template finish_output<S, T>(layout, prod.const_data_ptr<T>(), optional_ptr<S>(bias),
                                            out.mutable_data_ptr<S>());
    }
  });
  return out;
}

// Which gradients the caller needs; the others come back as zeros, uncomputed.
struct Needed {
  bool input, offset_mask, weight;
};

// (grad_input, grad_offset, grad_weight, grad_mask, grad_bias). grad_mask is empty ([0])
// when there is no mask; grad_bias is always computed (the sum of grad_output).
template <typename Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward(
    const Tensor& grad_out_in, const Tensor& input_in, const Tensor& offset_in,
    const Tensor& weight_in, const std::optional<Tensor>& mask_in, const Params& params,
    const Needed& need, bool deterministic) {
  const Geometry g =
      check_inputs(kBackwardOp, input_in, offset_in, weight_in, mask_in, std::nullopt, params);
  check_grad_output(g, input_in, grad_out_in);
  const Tensor input = detops::contiguous(input_in);
  const Tensor offset = detops::contiguous(offset_in);
  const Tensor grad_out = detops::contiguous(grad_out_in);
  std::optional<Tensor> mask;
  if (mask_in.has_value()) mask = detops::contiguous(*mask_in);

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
    const int64_t ocg = g.out_channels / g.groups;
    const Tensor w =
        torch::stable::view(as_contiguous(weight_in, acc), {g.groups, ocg, ck / g.groups});
    const Tensor w_t = torch::stable::transpose(w, 1, 2);  // [G, CK / G, Oc / G]
    // The input gradient accumulates over chunks in T (float32 for narrow types).
    const bool narrow_type = input.scalar_type() != acc;
    Tensor grad_input_acc = narrow_type && need.input
                                ? torch::stable::new_zeros(input, grad_input.sizes(), acc)
                                : grad_input;
    const std::vector<Chunk> chunks =
        make_chunks(g, sizeof(T), column_budget_bytes(Backend::kColumnBytes));
    Tensor col_storage = torch::stable::new_empty(input, {ck * largest_chunk(chunks)}, acc);
    Tensor gw;  // [G, Oc / G, CK / G], summed over chunks in order
    const bool need_grad_col = need.input || need.offset_mask;
    for (const Chunk& ch : chunks) {
      if (!need_grad_col && !need.weight) break;
      Tensor col = column_view(g, col_storage, ch);
      typename Backend::template Sampler<S, T> sampler(
          Layout(g, ch), input, offset.const_data_ptr<S>(), optional_ptr<S>(mask));
      const Tensor go = grad_output_columns(g, grad_out, ch, acc);  // [G, Oc / G, nb * np]
      T* col_ptr = need.weight ? col.mutable_data_ptr<T>() : nullptr;
      if (need_grad_col) {
        const Tensor grad_col = torch::stable::matmul(w_t, go);  // [G, CK / G, nb * np]
        if (need.input) {
          sampler.col2im(grad_col.const_data_ptr<T>(), grad_input_acc, deterministic);
        }
        if (need.offset_mask) {
          sampler.coord_grad(grad_col.const_data_ptr<T>(), grad_offset.mutable_data_ptr<S>(),
                             mask.has_value() ? grad_mask.mutable_data_ptr<S>() : nullptr, col_ptr);
        }
      }
      if (!need.weight) continue;
      if (!need.offset_mask) sampler.im2col(col_ptr);
      const Tensor part = torch::stable::matmul(go, torch::stable::transpose(col, 1, 2));
      gw = gw.defined() ? torch::stable::subtract(gw, part, -1.0) : part;  // gw + part
    }
    if (narrow_type && need.input) torch::stable::copy_(grad_input, grad_input_acc);
    if (need.weight) torch::stable::copy_(grad_weight, torch::stable::view(gw, weight_in.sizes()));
    torch::stable::copy_(grad_bias,
                         torch::stable::sum(grad_out, dims({0, 2, 3}), /*keepdim=*/false, acc));
  });
  return {grad_input, grad_offset, grad_weight, grad_mask, grad_bias};
}

// The op entry points of both devices: a device file registers DeformEntry<its backend>,
// whose functions are named after the ops.
template <typename Backend>
struct DeformEntry {
  static_assert(is_backend<Backend>());

  static Tensor deform_conv2d(Tensor input, Tensor offset, Tensor weight,
                              std::optional<Tensor> bias, std::optional<Tensor> mask,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t dilation_h, int64_t dilation_w) {
    const typename Backend::Guard guard(input);
    return forward<Backend>(input, offset, weight, bias, mask,
                            {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w});
  }

  static std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> deform_conv2d_backward(
      Tensor grad_out, Tensor input, Tensor offset, Tensor weight, std::optional<Tensor> mask,
      int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
      int64_t dilation_w, bool need_input, bool need_offset_mask, bool need_weight,
      bool deterministic) {
    const typename Backend::Guard guard(input);
    return backward<Backend>(grad_out, input, offset, weight, mask,
                             {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w},
                             {need_input, need_offset_mask, need_weight}, deterministic);
  }
};

}  // namespace detops::deform
