// Argument checks and derived sizes shared by the CPU and CUDA entry points of
// deform_conv2d and its backward. Every failure names the argument and what was expected.
#pragma once

#include <detops/checks.h>

#include <cstdint>
#include <optional>

namespace detops::deform {

inline constexpr const char* kOp = "detops.deform_conv2d";
inline constexpr const char* kBackwardOp = "detops._deform_conv2d_backward";

struct Params {
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// Every size the kernels need, derived once from the (checked) arguments.
struct Geometry {
  int64_t batch, in_channels, height, width;
  int64_t out_channels, kernel_h, kernel_w;
  int64_t groups, offset_groups;
  int64_t out_h, out_w;
  Params p;
  bool use_mask;

  int64_t taps() const { return kernel_h * kernel_w; }
  int64_t positions() const { return out_h * out_w; }
  int64_t channels_per_offset_group() const { return in_channels / offset_groups; }
};

inline void check_params(const char* op, const Params& p) {
  check(p.stride_h > 0 && p.stride_w > 0, op, "stride must be positive, got (", p.stride_h, ", ",
        p.stride_w, ")");
  check(p.pad_h >= 0 && p.pad_w >= 0, op, "padding must be non-negative, got (", p.pad_h, ", ",
        p.pad_w, ")");
  check(p.dilation_h > 0 && p.dilation_w > 0, op, "dilation must be positive, got (", p.dilation_h,
        ", ", p.dilation_w, ")");
}

// One spatial axis: the padded input size and the dilated kernel's span, both exact or
// `fits` false (the arguments are user-given int64 values, e.g. dilation 2^62).
struct Extent {
  int64_t padded, span;
  bool fits;
};

inline Extent extent(int64_t size, int64_t pad, int64_t dilation, int64_t kernel) {
  Extent e{};
  int64_t two_pad = 0, reach = 0;
  e.fits = mul_fits(pad, 2, two_pad) && add_fits(size, two_pad, e.padded) &&
           mul_fits(dilation, kernel - 1, reach) && add_fits(reach, 1, e.span);
  return e;
}

inline Geometry check_inputs(const char* op, const Tensor& input, const Tensor& offset,
                             const Tensor& weight, const std::optional<Tensor>& mask,
                             const std::optional<Tensor>& bias, const Params& p) {
  check_params(op, p);
  check_dim(op, "input", input, 4, "[batch, in_channels, height, width]");
  check_dim(op, "offset", offset, 4,
            "[batch, 2 * offset_groups * kernel_h * kernel_w, out_height, out_width]");
  check_dim(op, "weight", weight, 4, "[out_channels, in_channels / groups, kernel_h, kernel_w]");
  check_floating(op, "input", input);
  check_same_dtype(op, "input", input, "offset", offset);
  check_same_dtype(op, "input", input, "weight", weight);
  check_same_device(op, "input", input, "offset", offset);
  check_same_device(op, "input", input, "weight", weight);

  Geometry g{};
  g.p = p;
  g.batch = input.size(0);
  g.in_channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.out_channels = weight.size(0);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  check(g.kernel_h > 0 && g.kernel_w > 0, op, "weight must have a non-empty kernel, got shape ",
        shape_str(weight));
  check(g.in_channels > 0, op, "input must have at least one channel, got shape ",
        shape_str(input));
  check(weight.size(1) > 0, op,
        "weight.shape[1] (in_channels / groups) must be positive, got shape ", shape_str(weight));
  check(g.in_channels % weight.size(1) == 0, op, "input has ", g.in_channels,
        " channels, which is not a multiple of weight.shape[1] = ", weight.size(1),
        " (in_channels must be divisible by groups = in_channels / weight.shape[1])");
  g.groups = g.in_channels / weight.size(1);
  check(g.out_channels % g.groups == 0, op, "weight.shape[0] (out_channels) = ", g.out_channels,
        " must be divisible by groups = ", g.groups);

  const int64_t taps = g.kernel_h * g.kernel_w;
  // The messages below also carry torchvision's phrases (the parenthesised parts), so code
  // that matches torchvision's errors keeps working.
  check(offset.size(1) > 0 && offset.size(1) % (2 * taps) == 0, op,
        "offset must have 2 * offset_groups * kernel_h * kernel_w channels, a positive multiple "
        "of 2 * ",
        g.kernel_h, " * ", g.kernel_w, " = ", 2 * taps, ", got offset.shape[1] = ", offset.size(1),
        " (the shape of the offset tensor at dimension 1 is not valid)");
  g.offset_groups = offset.size(1) / (2 * taps);
  check(g.in_channels % g.offset_groups == 0, op, "input has ", g.in_channels,
        " channels, which is not divisible by offset_groups = ", g.offset_groups,
        " (offset.shape[1] / (2 * kernel_h * kernel_w))");

  const Extent eh = extent(g.height, p.pad_h, p.dilation_h, g.kernel_h);
  const Extent ew = extent(g.width, p.pad_w, p.dilation_w, g.kernel_w);
  check(eh.fits && ew.fits, op, "padding (", p.pad_h, ", ", p.pad_w, ") and dilation (",
        p.dilation_h, ", ", p.dilation_w, ") with input size (", g.height, ", ", g.width,
        ") and kernel (", g.kernel_h, ", ", g.kernel_w,
        ") give a padded input or dilated kernel larger than 2^63 - 1");
  check(eh.padded >= eh.span && ew.padded >= ew.span, op, "input of spatial size (", g.height, ", ",
        g.width, ") with padding (", p.pad_h, ", ", p.pad_w,
        ") is smaller than the dilated kernel (", eh.span, ", ", ew.span, ")");
  g.out_h = (eh.padded - eh.span) / p.stride_h + 1;
  g.out_w = (ew.padded - ew.span) / p.stride_w + 1;
  check(offset.size(0) == g.batch, op, "offset must have the batch size of input (", g.batch,
        "), got offset.shape[0] = ", offset.size(0), " (invalid batch size of offset)");
  check(offset.size(2) == g.out_h && offset.size(3) == g.out_w, op,
        "offset must have the output's spatial size (", g.out_h, ", ", g.out_w, "), got (",
        offset.size(2), ", ", offset.size(3), ") (offset output dims: (", offset.size(2), ", ",
        offset.size(3), ") - computed output dims: (", g.out_h, ", ", g.out_w, "))");
  check(g.height * g.width < (int64_t(1) << 31), op,
        "input planes of 2^31 pixels or more are not supported, got (", g.height, ", ", g.width,
        ")");

  g.use_mask = mask.has_value();
  if (g.use_mask) {
    const Tensor& m = *mask;
    check_dim(op, "mask", m, 4,
              "[batch, offset_groups * kernel_h * kernel_w, out_height, out_width]");
    check_same_dtype(op, "input", input, "mask", m);
    check_same_device(op, "input", input, "mask", m);
    check(m.size(1) == g.offset_groups * taps, op,
          "mask must have offset_groups * kernel_h * kernel_w = ", g.offset_groups, " * ",
          g.kernel_h, " * ", g.kernel_w, " = ", g.offset_groups * taps,
          " channels, got mask.shape[1] = ", m.size(1),
          " (mask.shape[1] is not valid: got: ", m.size(1), " expected: ", g.offset_groups * taps,
          ")");
    check(m.size(0) == g.batch, op, "mask must have the batch size of input (", g.batch,
          "), got mask.shape[0] = ", m.size(0), " (invalid batch size of mask)");
    check(m.size(2) == g.out_h && m.size(3) == g.out_w, op,
          "mask must have the output's spatial size (", g.out_h, ", ", g.out_w, "), got (",
          m.size(2), ", ", m.size(3), ") (mask output dims: (", m.size(2), ", ", m.size(3),
          ") - computed output dims: (", g.out_h, ", ", g.out_w, "))");
  }
  if (bias.has_value()) {
    const Tensor& b = *bias;
    check(b.dim() == 1 && b.size(0) == g.out_channels, op,
          "bias must be a 1-D tensor of shape [out_channels] = [", g.out_channels, "], got shape ",
          shape_str(b));
    check_same_dtype(op, "input", input, "bias", b);
    check_same_device(op, "input", input, "bias", b);
  }
  return g;
}

inline void check_grad_output(const Geometry& g, const Tensor& input, const Tensor& grad_out) {
  check_dim(kBackwardOp, "grad_output", grad_out, 4,
            "[batch, out_channels, out_height, out_width]");
  check(grad_out.size(0) == g.batch && grad_out.size(1) == g.out_channels &&
            grad_out.size(2) == g.out_h && grad_out.size(3) == g.out_w,
        kBackwardOp, "grad_output must have the output's shape [", g.batch, ", ", g.out_channels,
        ", ", g.out_h, ", ", g.out_w, "], got ", shape_str(grad_out));
  check_same_dtype(kBackwardOp, "input", input, "grad_output", grad_out);
  check_same_device(kBackwardOp, "input", input, "grad_output", grad_out);
}

}  // namespace detops::deform
