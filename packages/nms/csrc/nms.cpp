// Schemas of the detops NMS ops. Kernels: cpu/nms_kernel.cpp, cuda/nms_kernel.cu.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(detops, m) {
  // Indices of the boxes kept by greedy NMS, in decreasing score order.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // Same, with boxes of different idxs (classes) never suppressing each other.
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
}
