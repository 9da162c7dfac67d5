// Nearest-neighbour index math of F.interpolate(mode="nearest") with an output size, shared
// by the CPU and CUDA kernels: same special cases and the same float rounding as PyTorch.
#pragma once

#include <detops/macros.h>

#include <cmath>
#include <cstdint>

namespace detops::fpn {

// Source index that output index `dst` reads along an axis of in_size -> out_size.
DETOPS_INLINE int64_t nearest_source(int64_t dst, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const int64_t src = static_cast<int64_t>(floorf(static_cast<float>(dst) * scale));
  return src < in_size - 1 ? src : in_size - 1;
}

// The output indices [*lo, *hi) that read source index `src` (empty when none does).
// nearest_source is non-decreasing in dst, so they form one run; the exact bounds are
// found by testing a window around the rational estimate with nearest_source itself.
DETOPS_INLINE void source_window(int64_t src, int64_t in_size, int64_t out_size, int64_t* lo,
                                 int64_t* hi) {
  int64_t first = (src * out_size) / in_size - 2;
  int64_t last = ((src + 1) * out_size + in_size - 1) / in_size + 2;
  if (first < 0) first = 0;
  if (last > out_size) last = out_size;
  if (src == in_size - 1) last = out_size;  // the last source also takes the clamped tail
  while (first < last && nearest_source(first, in_size, out_size) < src) ++first;
  int64_t end = first;
  while (end < last && nearest_source(end, in_size, out_size) == src) ++end;
  *lo = first;
  *hi = end;
}

}  // namespace detops::fpn
