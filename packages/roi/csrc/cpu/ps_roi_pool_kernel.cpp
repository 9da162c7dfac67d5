// CPU kernels of detops::ps_roi_pool and detops::_ps_roi_pool_backward.
//
// Output channel c_out at bin (ph, pw) averages input channel ps_channel(c_out, ph, pw)
// over the bin. Bins are clamped to [0, size - 1] like torchvision's forward (so the last
// row and column are never read); the backward is the exact gradient of this forward.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "cpu/pool_bins.h"
#include "cpu/roi_cpu.h"
#include "roi_entry.h"

namespace detops::roi::cpu {
namespace {

struct PsRoiPoolBackend : RoiCpuBackend {
  template <typename S>
  static void forward(const RoiArgs& a, const Tensor& input, Tensor& out) {
    using T = acc_t<S>;
    const int64_t pooled_h = a.pooled_h, pooled_w = a.pooled_w, c_out = a.channels_out();
    const Rois<T> rois = read_rois<S, T>(a.rois, a.batch);
    const int64_t k = rois.size();
    const auto bins = pool_bins(rois, static_cast<T>(a.scale), PoolOp::kPsRoiPool, pooled_h,
                                pooled_w, a.height, a.width);
    const S* in = input.const_data_ptr<S>();
    const Strides st = strides_of(input);
    S* out_data = out.mutable_data_ptr<S>();
    const int64_t nbins = pooled_h * pooled_w;

    parallel(c_out * k, pool_work(bins, pooled_h, pooled_w) / k, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t co = i / k, r = i % k;
        const PoolBins& b = bins[r];
        S* o = out_data + (r * c_out + co) * nbins;
        for (int64_t ph = 0; ph < pooled_h; ++ph) {
          for (int64_t pw = 0; pw < pooled_w; ++pw) {
            const S* plane =
                in + st.plane(rois.batch[r], ps_channel(co, ph, pw, pooled_h, pooled_w));
            o[ph * pooled_w + pw] = static_cast<S>(
                bin_mean<S, T>(plane, st.y, st.x, b.h_lo[ph], b.h_hi[ph], b.w_lo[pw], b.w_hi[pw]));
          }
        }
      }
    });
  }

  template <typename S>
  static void backward(const RoiArgs& a, const Tensor& grad, Tensor& grad_input) {
    using T = acc_t<S>;
    const int64_t n = a.batch, c = a.channels, width = a.width;
    const int64_t pooled_h = a.pooled_h, pooled_w = a.pooled_w;
    const Rois<T> rois = read_rois<S, T>(a.rois, n);
    const auto bins = pool_bins(rois, static_cast<T>(a.scale), PoolOp::kPsRoiPool, pooled_h,
                                pooled_w, a.height, a.width);
    const S* g = grad.const_data_ptr<S>();
    const Strides gs = strides_of(grad);
    S* gi = grad_input.mutable_data_ptr<S>();
    const int64_t area = a.height * a.width;
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
  }
};

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::roi::PsRoiPoolEntry<detops::roi::cpu::PsRoiPoolBackend>;
  m.impl("ps_roi_pool", TORCH_BOX(&Entry::ps_roi_pool));
  m.impl("_ps_roi_pool_backward", TORCH_BOX(&Entry::ps_roi_pool_backward));
}
