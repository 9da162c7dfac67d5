// Schemas of the detops FPN ops. Entry points: upsample_add_entry.h; kernels:
// cpu/upsample_add_kernel.cpp, cuda/upsample_add_kernel.cu.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // lateral + nearest-upsample(top, size=lateral's H x W): FPN's top-down step in one pass.
  m.def("fpn_upsample_add(Tensor top, Tensor lateral) -> Tensor");
  // Gradient of fpn_upsample_add with respect to `top` (the lateral gradient is `grad`).
  m.def("_fpn_upsample_add_backward(Tensor grad, SymInt top_height, SymInt top_width) -> Tensor");
}
