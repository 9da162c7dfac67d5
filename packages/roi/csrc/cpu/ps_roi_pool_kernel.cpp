// CPU kernels of detops::ps_roi_pool and detops::_ps_roi_pool_backward.
//
// Output channel c_out at bin (ph, pw) averages input channel ps_channel(c_out, ph, pw)
// over the bin. Bins are clamped to [0, size - 1] like torchvision's forward (so the last
// row and column are never read); the backward is the exact gradient of this forward.
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "cpu/pool_bins.h"
#include "cpu/roi_cpu.h"
#include "roi_checks.h"

namespace detops::roi::cpu {
namespace {

template <typename S>
Tensor forward(const char* op, const Tensor& input, const Tensor& rois_in, double scale,
               int64_t pooled_h, int64_t pooled_w) {
  using T = acc_t<S>;
  const int64_t n = input.size(0), c = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t c_out = c / (pooled_h * pooled_w);
  const Rois<T> rois = read_rois<S, T>(op, rois_in, n);
  const int64_t k = rois.size();
  Tensor out = fresh_output(input, {k, c_out, pooled_h, pooled_w});
  if (k == 0 || c_out == 0) return out;
  const auto bins =
      pool_bins(rois, static_cast<T>(scale), false, pooled_h, pooled_w, height, width);
  const S* in = input.const_data_ptr<S>();
  const Strides4 st(input);
  S* out_data = out.mutable_data_ptr<S>();
  const int64_t nbins = pooled_h * pooled_w;

  parallel(c_out * k, pool_work(bins, pooled_h, pooled_w) / k, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t co = i / k, r = i % k;
      const PoolBins& b = bins[r];
      S* o = out_data + (r * c_out + co) * nbins;
      for (int64_t ph = 0; ph < pooled_h; ++ph) {
        for (int64_t pw = 0; pw < pooled_w; ++pw) {
          if (b.empty(ph, pw)) {
            o[ph * pooled_w + pw] = static_cast<S>(0);
            continue;
          }
          const S* plane = in + st.plane(rois.batch[r], ps_channel(co, ph, pw, pooled_h, pooled_w));
          T sum = T(0);
          for (int64_t y = b.h_lo[ph]; y < b.h_hi[ph]; ++y) {
            const S* row = plane + y * st.y;
            for (int64_t x = b.w_lo[pw]; x < b.w_hi[pw]; ++x) sum += static_cast<T>(row[x * st.x]);
          }
          o[ph * pooled_w + pw] = static_cast<S>(sum / static_cast<T>(b.area(ph, pw)));
        }
      }
    }
  });
  return out;
}

template <typename S>
Tensor backward(const char* op, const Tensor& grad, const Tensor& rois_in, double scale, int64_t n,
                int64_t c, int64_t height, int64_t width) {
  using T = acc_t<S>;
  const int64_t pooled_h = grad.size(2), pooled_w = grad.size(3);
  const Rois<T> rois = read_rois<S, T>(op, rois_in, n);
  const int64_t k = rois.size();
  Tensor grad_input = fresh_output(grad, {n, c, height, width});
  const auto bins =
      pool_bins(rois, static_cast<T>(scale), false, pooled_h, pooled_w, height, width);
  const S* g = grad.const_data_ptr<S>();
  const Strides4 gs(grad);
  S* gi = grad_input.mutable_data_ptr<S>();
  const int64_t area = height * width;
  const auto groups = bucket(rois.batch, n);
  const double work =
      static_cast<double>(area) +
      pool_work(bins, pooled_h, pooled_w) / static_cast<double>(std::max<int64_t>(c * n, 1));

  parallel(c * n, work, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t ch = i / n, b = i % n;
      const int64_t pw = ch % pooled_w, ph = (ch / pooled_w) % pooled_h;
      const int64_t co = ch / (pooled_h * pooled_w);
      accumulate_plane(gi + (b * c + ch) * area, area, scratch, [&](T* acc) {
        for (int64_t r : groups[b]) {
          const PoolBins& bb = bins[r];
          if (bb.empty(ph, pw)) continue;
          const T gv = static_cast<T>(g[r * gs.n + co * gs.c + ph * gs.y + pw * gs.x]) /
                       static_cast<T>(bb.area(ph, pw));
          for (int64_t y = bb.h_lo[ph]; y < bb.h_hi[ph]; ++y) {
            T* row = acc + y * width;
            for (int64_t x = bb.w_lo[pw]; x < bb.w_hi[pw]; ++x) row[x] += gv;
          }
        }
      });
    }
  });
  return grad_input;
}

Tensor ps_roi_pool_cpu(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                       int64_t pooled_w) {
  const char* op = "detops.ps_roi_pool";
  check_forward(op, input, rois, pooled_h, pooled_w, 0, true);
  return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return forward<S>(op, input, rois, spatial_scale, pooled_h, pooled_w);
  });
}

Tensor ps_roi_pool_backward_cpu(Tensor grad, Tensor rois, double spatial_scale, int64_t pooled_h,
                                int64_t pooled_w, int64_t batch_size, int64_t channels,
                                int64_t height, int64_t width) {
  const char* op = "detops._ps_roi_pool_backward";
  check_backward(op, grad, rois, pooled_h, pooled_w, 0, batch_size, channels, height, width, true);
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return backward<S>(op, grad, rois, spatial_scale, batch_size, channels, height, width);
  });
}

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("ps_roi_pool", TORCH_BOX(&detops::roi::cpu::ps_roi_pool_cpu));
  m.impl("_ps_roi_pool_backward", TORCH_BOX(&detops::roi::cpu::ps_roi_pool_backward_cpu));
}
