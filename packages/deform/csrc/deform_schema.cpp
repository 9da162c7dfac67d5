// Schemas of the detops deformable-convolution ops. Entry points: deform_entry.h; kernels:
// cpu/deform_kernel.cpp, cuda/deform_kernel.cu. groups and offset_groups are inferred from the
// shapes of weight and offset, as torchvision.ops.deform_conv2d does.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // Deformable convolution (v1 without mask, v2 with mask): [B, Oc, out_h, out_w].
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? bias, Tensor? mask, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w) "
      "-> Tensor");
  // Its gradients: (input, offset, weight, mask, bias). grad_mask is empty ([0]) when mask
  // is None; grad_bias is the sum of grad_out over batch and positions. Gradients whose
  // need_* flag is false come back as zeros without being computed. With `deterministic`
  // (torch.are_deterministic_algorithms_enabled() when autograd calls it) the CUDA input
  // gradient is an order-free fixed-point sum (detops/scatter_add.cuh) instead of float
  // atomics; the CPU kernels are deterministic either way.
  m.def(
      "_deform_conv2d_backward(Tensor grad_out, Tensor input, Tensor offset, Tensor weight, "
      "Tensor? mask, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, "
      "int dilation_w, bool need_input=True, bool need_offset_mask=True, bool need_weight=True, "
      "bool deterministic=False) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
