// Argument checks of fpn_upsample_add, shared by the CPU and CUDA entry points.
#pragma once

#include <detops/checks.h>

namespace detops::fpn {

inline void check_upsample_add(const char* op, const Tensor& top, const Tensor& lateral) {
  check_defined(op, "top", top);
  check_defined(op, "lateral", lateral);
  check_dim(op, "top", top, 4, "[N, C, H, W]");
  check_dim(op, "lateral", lateral, 4, "[N, C, H, W]");
  check(top.size(0) == lateral.size(0) && top.size(1) == lateral.size(1), op,
        "top and lateral must have the same batch size and channels, got top ", shape_str(top),
        " and lateral ", shape_str(lateral));
  check_floating(op, "top", top);
  check_same_dtype(op, "top", top, "lateral", lateral);
  check_same_device(op, "top", top, "lateral", lateral);
  const bool any_planes = top.size(0) > 0 && top.size(1) > 0;
  check(!any_planes || lateral.size(2) == 0 || lateral.size(3) == 0 ||
            (top.size(2) > 0 && top.size(3) > 0),
        op, "top must have a non-empty spatial size to be upsampled to lateral's ", lateral.size(2),
        "x", lateral.size(3), ", got top ", shape_str(top));
}

inline void check_upsample_add_backward(const char* op, const Tensor& grad, int64_t top_height,
                                        int64_t top_width) {
  check_defined(op, "grad", grad);
  check_dim(op, "grad", grad, 4, "[N, C, H, W]");
  check_floating(op, "grad", grad);
  check(top_height >= 0 && top_width >= 0, op, "top_height and top_width must be >= 0, got ",
        top_height, " and ", top_width);
}

}  // namespace detops::fpn
