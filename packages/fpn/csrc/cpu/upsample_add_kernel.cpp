// CPU kernels of detops::fpn_upsample_add and its backward. Work is split over (n, c)
// planes; per-axis index tables are computed once per call and shared by all planes.
// The backward gathers each top element's gradient from its own output window, so every
// element has one writer: no atomics, bitwise repeatable.
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <vector>

#include "upsample_add_entry.h"
#include "upsample_add_math.h"

namespace detops::fpn::cpu {
namespace {

using torch::stable::Tensor;

// Enough elements per task that a thread wake-up is worth it.
int64_t planes_per_task(int64_t plane_elements) {
  const int64_t target = 1 << 16;
  return plane_elements >= target ? 1 : (target + plane_elements - 1) / plane_elements;
}

std::vector<int64_t> source_table(int64_t in_size, int64_t out_size) {
  std::vector<int64_t> table(out_size);
  for (int64_t d = 0; d < out_size; ++d) table[d] = nearest_source(d, in_size, out_size);
  return table;
}

template <typename S>
void forward_planes(const S* top, const S* lateral, S* out, int64_t planes, int64_t th, int64_t tw,
                    int64_t oh, int64_t ow) {
  const std::vector<int64_t> sy = source_table(th, oh);
  const std::vector<int64_t> sx = source_table(tw, ow);
  torch::stable::parallel_for(0, planes, planes_per_task(oh * ow), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const S* top_plane = top + p * th * tw;
      for (int64_t y = 0; y < oh; ++y) {
        const S* top_row = top_plane + sy[y] * tw;
        const S* lat_row = lateral + (p * oh + y) * ow;
        S* out_row = out + (p * oh + y) * ow;
        for (int64_t x = 0; x < ow; ++x) {
          out_row[x] = static_cast<S>(static_cast<acc_t<S>>(lat_row[x]) +
                                      static_cast<acc_t<S>>(top_row[sx[x]]));
        }
      }
    }
  });
}

template <typename S>
void backward_planes(const S* grad, S* grad_top, int64_t planes, int64_t th, int64_t tw, int64_t oh,
                     int64_t ow) {
  std::vector<int64_t> y_lo(th), y_hi(th), x_lo(tw), x_hi(tw);
  for (int64_t s = 0; s < th; ++s) source_window(s, th, oh, &y_lo[s], &y_hi[s]);
  for (int64_t s = 0; s < tw; ++s) source_window(s, tw, ow, &x_lo[s], &x_hi[s]);
  torch::stable::parallel_for(0, planes, planes_per_task(oh * ow), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const S* g = grad + p * oh * ow;
      for (int64_t ty = 0; ty < th; ++ty) {
        for (int64_t tx = 0; tx < tw; ++tx) {
          acc_t<S> sum = 0;
          for (int64_t y = y_lo[ty]; y < y_hi[ty]; ++y) {
            for (int64_t x = x_lo[tx]; x < x_hi[tx]; ++x)
              sum += static_cast<acc_t<S>>(g[y * ow + x]);
          }
          grad_top[(p * th + ty) * tw + tx] = static_cast<S>(sum);
        }
      }
    }
  });
}

struct UpsampleAddBackend : detops::CpuBackend {
  template <typename S>
  static void forward(const Tensor&, const S* top, const S* lateral, S* out, int64_t planes,
                      int64_t th, int64_t tw, int64_t oh, int64_t ow) {
    forward_planes<S>(top, lateral, out, planes, th, tw, oh, ow);
  }

  template <typename S>
  static void backward(const Tensor&, const S* grad, S* grad_top, int64_t planes, int64_t th,
                       int64_t tw, int64_t oh, int64_t ow) {
    backward_planes<S>(grad, grad_top, planes, th, tw, oh, ow);
  }
};

}  // namespace
}  // namespace detops::fpn::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::fpn::UpsampleAddEntry<detops::fpn::cpu::UpsampleAddBackend>;
  m.impl("fpn_upsample_add", TORCH_BOX(&Entry::fpn_upsample_add));
  m.impl("_fpn_upsample_add_backward", TORCH_BOX(&Entry::fpn_upsample_add_backward));
}
