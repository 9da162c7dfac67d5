// Schemas of the detops sigmoid focal loss ops. Entry points: focal_loss_entry.h; kernels:
// cpu/focal_loss_kernel.cpp, cuda/focal_loss_kernel.cu.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // inputs (logits) and targets of one shape and floating dtype -> the loss per element
  // (reduction "none") or its mean or sum as a 0-dim tensor. alpha < 0: no class weighting.
  m.def(
      "sigmoid_focal_loss(Tensor inputs, Tensor targets, float alpha=0.25, float gamma=2., "
      "str reduction=\"none\") -> Tensor");
  // Its gradients (inputs, targets), recomputed from inputs and targets. grad_output has
  // the loss's shape. With need_targets false the targets gradient is not computed and comes
  // back as an empty tensor of shape [0].
  m.def(
      "_sigmoid_focal_loss_backward(Tensor grad_output, Tensor inputs, Tensor targets, "
      "float alpha, float gamma, str reduction, bool need_targets) -> (Tensor, Tensor)");
}
