// Schemas of the detops multi-scale deformable attention ops. Entry points:
// deform_attn_entry.h; kernels: cpu/deform_attn_kernel.cpp, cuda/deform_attn_kernel.cu.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // value [B, S, H, D], value_spatial_shapes [L, 2] (int64 (height, width) per level),
  // sampling_locations [B, Q, H, L, P, 2] (normalised (x, y)), attention_weights
  // [B, Q, H, L, P] -> [B, Q, H * D]. value_level_start_index, when given, must be the
  // exclusive cumulative sum of height * width (it is checked, not trusted).
  m.def(
      "multi_scale_deformable_attention(Tensor value, Tensor value_spatial_shapes, "
      "Tensor sampling_locations, Tensor attention_weights, "
      "Tensor? value_level_start_index=None) -> Tensor");
  // Its gradients: (value, sampling_locations, attention_weights). Those whose need_* flag
  // is false come back as zeros without being computed. With `deterministic`
  // (torch.are_deterministic_algorithms_enabled() when autograd calls it) the CUDA value
  // gradient is an order-free fixed-point sum (detops/scatter_add.cuh) instead of float
  // atomics; the CPU kernels are deterministic either way.
  m.def(
      "_multi_scale_deformable_attention_backward(Tensor grad_output, Tensor value, "
      "Tensor value_spatial_shapes, Tensor sampling_locations, Tensor attention_weights, "
      "Tensor? value_level_start_index=None, bool need_value=True, "
      "bool need_sampling=True, bool deterministic=False) -> (Tensor, Tensor, Tensor)");
}
