// CPU kernels of detops::roi_align, detops::multi_level_roi_align and their backward ops
// (loops in cpu/align_kernel.h; checks and allocation in roi_entry.h). multi_level pools
// each RoI on its own FPN level in one pass instead of one call per level and a scatter;
// results equal per-level roi_align.
#include <torch/csrc/stable/library.h>

#include "cpu/align_kernel.h"
#include "roi_entry.h"

namespace detops::roi::cpu {
namespace {

struct RoiAlignBackend : RoiCpuBackend {
  template <typename S>
  static void forward(const AlignArgs& a, const std::vector<Tensor>& features, Tensor& out) {
    align_forward<S>(a, features, out);
  }

  template <typename S>
  static void backward(const AlignArgs& a, const Tensor& grad, std::vector<Tensor>& grads) {
    align_backward<S>(a, grad, grads);
  }
};

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::roi::RoiAlignEntry<detops::roi::cpu::RoiAlignBackend>;
  m.impl("roi_align", TORCH_BOX(&Entry::roi_align));
  m.impl("_roi_align_backward", TORCH_BOX(&Entry::roi_align_backward));
  m.impl("multi_level_roi_align", TORCH_BOX(&Entry::multi_level_roi_align));
  m.impl("_multi_level_roi_align_backward", TORCH_BOX(&Entry::multi_level_roi_align_backward));
}
