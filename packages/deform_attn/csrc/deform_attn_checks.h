// Argument checks and derived sizes shared by the CPU and CUDA entry points of
// multi_scale_deformable_attention and its backward. Every failure names the argument and
// what was expected.
#pragma once

#include <detops/checks.h>
#include <detops/contiguous.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace detops::deform_attn {

inline constexpr const char* kOp = "detops.multi_scale_deformable_attention";
inline constexpr const char* kBackwardOp = "detops._multi_scale_deformable_attention_backward";

// Sizes of one call: value [B, S, H, D], L levels, sampling [B, Q, H, L, P(, 2)].
struct Geometry {
  int64_t B, S, H, D, L, Q, P;
};

// Entries per level in the level table: (height, width, first row of value). The table
// ends with one more entry: 1 if the levels describe value, else 0.
inline constexpr int64_t kLevelFields = 3;
// Pixels per level must be fewer than this (larger levels are not supported).
inline constexpr int64_t kMaxLevelSize = int64_t(1) << 31;

// The values of an int64 tensor on the host (only the CPU backend calls this: its index
// tensors are on the host).
inline std::vector<int64_t> read_int64(const Tensor& t) {
  const Tensor c = detops::contiguous(t);
  const int64_t* p = c.const_data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

inline void check_index_device(const char* op, const char* name, const Tensor& t,
                               const Tensor& value) {
  check(t.is_cpu() || same_device(t, value), op, name,
        " must be on the CPU or on value's device, got ", device_str(t), " and value on ",
        device_str(value));
}

inline void check_int64(const char* op, const char* name, const Tensor& t) {
  check(t.scalar_type() == ScalarType::Long, op, name, " must be an int64 tensor, got ",
        dtype_name(t.scalar_type()));
}

// Checks the arguments' shapes, dtypes and devices (not the values of the index tensors:
// see levels_on_host and, on CUDA, level_table_kernel) and returns the sizes.
inline Geometry check_inputs(const char* op, const Tensor& value, const Tensor& shapes,
                             const Tensor& loc, const Tensor& attn,
                             const std::optional<Tensor>& start_index) {
  check_dim(op, "value", value, 4, "[batch, num_values, num_heads, head_dim]");
  check_floating(op, "value", value);
  check_dim(op, "value_spatial_shapes", shapes, 2, "[num_levels, 2] ((height, width) per level)");
  check(shapes.size(1) == 2, op,
        "value_spatial_shapes must have shape [num_levels, 2] ((height, width) per level), got ",
        shape_str(shapes));
  check(shapes.size(0) > 0, op, "value_spatial_shapes must list at least one level, got shape ",
        shape_str(shapes));
  check_dim(op, "sampling_locations", loc, 6,
            "[batch, num_queries, num_heads, num_levels, num_points, 2]");
  check_dim(op, "attention_weights", attn, 5,
            "[batch, num_queries, num_heads, num_levels, num_points]");
  check_same_dtype(op, "value", value, "sampling_locations", loc);
  check_same_dtype(op, "value", value, "attention_weights", attn);
  check_same_device(op, "value", value, "sampling_locations", loc);
  check_same_device(op, "value", value, "attention_weights", attn);
  check_index_device(op, "value_spatial_shapes", shapes, value);
  check_int64(op, "value_spatial_shapes", shapes);

  Geometry g{};
  g.B = value.size(0);
  g.S = value.size(1);
  g.H = value.size(2);
  g.D = value.size(3);
  g.L = shapes.size(0);
  g.Q = loc.size(1);
  g.P = loc.size(4);
  check(loc.size(0) == g.B && loc.size(2) == g.H && loc.size(3) == g.L && loc.size(5) == 2, op,
        "sampling_locations must have shape [batch, num_queries, num_heads, num_levels, "
        "num_points, 2] = [",
        g.B, ", Q, ", g.H, ", ", g.L,
        ", P, 2] (batch and heads from value, levels from "
        "value_spatial_shapes), got ",
        shape_str(loc));
  check(attn.size(0) == g.B && attn.size(1) == g.Q && attn.size(2) == g.H && attn.size(3) == g.L &&
            attn.size(4) == g.P,
        op, "attention_weights must have shape [", g.B, ", ", g.Q, ", ", g.H, ", ", g.L, ", ", g.P,
        "] (sampling_locations' shape without the last dimension), got ", shape_str(attn));

  if (start_index.has_value()) {
    const Tensor& s = *start_index;
    check_index_device(op, "value_level_start_index", s, value);
    check_int64(op, "value_level_start_index", s);
    check(s.dim() == 1 && s.size(0) == g.L, op,
          "value_level_start_index must be a 1-D tensor of shape [num_levels] = [", g.L,
          "], got shape ", shape_str(s));
  }
  return g;
}

// The level table [L * kLevelFields + 1] from index tensors on the host: (height, width,
// first row of value) per level, the first rows being the exclusive cumulative sum of
// height * width, then 1 (the levels describe value). Raises on any value that does not.
inline std::vector<int64_t> levels_on_host(const char* op, const Geometry& g, const Tensor& shapes,
                                           const std::optional<Tensor>& start_index) {
  const std::vector<int64_t> hw = read_int64(shapes);
  std::vector<int64_t> levels(g.L * kLevelFields + 1, 0);
  int64_t total = 0;
  for (int64_t l = 0; l < g.L; ++l) {
    const int64_t h = hw[2 * l], w = hw[2 * l + 1];
    int64_t size = 0;
    check(h > 0 && w > 0, op, "value_spatial_shapes[", l, "] = (", h, ", ", w,
          ") must be a positive (height, width): levels may not be empty");
    check(mul_fits(h, w, size) && size < kMaxLevelSize, op, "value_spatial_shapes[", l, "] = (", h,
          ", ", w, ") has 2^31 pixels or more, which is not supported");
    levels[l * kLevelFields] = h;
    levels[l * kLevelFields + 1] = w;
    levels[l * kLevelFields + 2] = total;
    check(add_fits(total, size, total), op, "value_spatial_shapes: the level sizes overflow int64");
  }
  check(total == g.S, op, "value has ", g.S,
        " values per head (value.shape[1]), but value_spatial_shapes' levels hold sum(height * "
        "width) = ",
        total);
  if (start_index.has_value()) {
    const std::vector<int64_t> starts = read_int64(*start_index);
    for (int64_t l = 0; l < g.L; ++l) {
      check(starts[l] == levels[l * kLevelFields + 2], op, "value_level_start_index[", l,
            "] = ", starts[l], ", but the levels of value_spatial_shapes before it hold ",
            levels[l * kLevelFields + 2],
            " values (it must be the exclusive cumulative sum of height * width)");
    }
  }
  levels[g.L * kLevelFields] = 1;
  return levels;
}

inline void check_grad_output(const Geometry& g, const Tensor& value, const Tensor& grad) {
  check_dim(kBackwardOp, "grad_output", grad, 3, "[batch, num_queries, num_heads * head_dim]");
  check(grad.size(0) == g.B && grad.size(1) == g.Q && grad.size(2) == g.H * g.D, kBackwardOp,
        "grad_output must have the output's shape [", g.B, ", ", g.Q, ", ", g.H * g.D, "], got ",
        shape_str(grad));
  check_same_dtype(kBackwardOp, "value", value, "grad_output", grad);
  check_same_device(kBackwardOp, "value", value, "grad_output", grad);
}

}  // namespace detops::deform_attn
