// CPU kernels of detops::ps_roi_align and detops::_ps_roi_align_backward.
//
// Output channel c_out at bin (ph, pw) is roi_align of input channel
// ps_channel(c_out, ph, pw) over that bin (boxes shifted by -0.5, no minimum size). The
// per-RoI axis tables of cpu/align_tables.h give each bin's rows and columns; the backward
// splits gradient planes over threads (one input channel = one (c_out, ph, pw)).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "cpu/align_kernel.h"
#include "roi_entry.h"

namespace detops::roi::cpu {
namespace {

// Sum over bin (ph, pw) of the interpolated plane, before dividing by count.
template <typename S, typename T>
T bin_sum(const AlignTables<T>& t, const S* plane, const Strides& st, int64_t ph, int64_t pw) {
  T acc = T(0);
  for (int64_t ey = t.y.offset[ph]; ey < t.y.offset[ph + 1]; ++ey) {
    const S* row = plane + t.y.pos[ey] * st.y;
    T s = T(0);
    for (int64_t ex = t.x.offset[pw]; ex < t.x.offset[pw + 1]; ++ex) {
      s += t.x.weight[ex] * static_cast<T>(row[t.x.pos[ex] * st.x]);
    }
    acc += t.y.weight[ey] * s;
  }
  return acc;
}

struct PsRoiAlignBackend : RoiCpuBackend {
  template <typename S>
  static void forward(const RoiArgs& a, const Tensor& input, Tensor& out) {
    using T = acc_t<S>;
    const AlignParams p{a.pooled_h, a.pooled_w, a.sampling_ratio, /*aligned=*/true};
    const int64_t nbins = p.pooled_h * p.pooled_w, c_out = a.channels_out();
    const Rois<T> rois = read_rois<S, T>(a.rois, a.batch);
    const int64_t k = rois.size();
    const std::vector<MapShape> map{{a.height, a.width, a.scale}};
    const auto tables = build_tables(rois, std::vector<int64_t>(k, 0), map, p);
    double work = 0;
    for (const auto& t : tables) work += static_cast<double>(t.y.pos.size() * t.x.pos.size());
    const S* in = input.const_data_ptr<S>();
    const Strides st = strides_of(input);
    S* out_data = out.mutable_data_ptr<S>();

    parallel(c_out * k, work / k / std::max<int64_t>(std::min(p.pooled_h, p.pooled_w), 1),
             [&](int64_t begin, int64_t end) {
               for (int64_t i = begin; i < end; ++i) {
                 const int64_t co = i / k, r = i % k;
                 const AlignTables<T>& t = tables[r];
                 S* o = out_data + (r * c_out + co) * nbins;
                 for (int64_t ph = 0; ph < p.pooled_h; ++ph) {
                   for (int64_t pw = 0; pw < p.pooled_w; ++pw) {
                     const S* plane = in + st.plane(rois.batch[r],
                                                    ps_channel(co, ph, pw, p.pooled_h, p.pooled_w));
                     o[ph * p.pooled_w + pw] =
                         static_cast<S>(bin_sum(t, plane, st, ph, pw) / t.count);
                   }
                 }
               }
             });
  }

  template <typename S>
  static void backward(const RoiArgs& a, const Tensor& grad, Tensor& grad_input) {
    using T = acc_t<S>;
    const AlignParams p{a.pooled_h, a.pooled_w, a.sampling_ratio, /*aligned=*/true};
    const int64_t n = a.batch, c = a.channels, width = a.width;
    const Rois<T> rois = read_rois<S, T>(a.rois, n);
    const int64_t k = rois.size();
    const std::vector<MapShape> map{{a.height, a.width, a.scale}};
    const auto tables = build_tables(rois, std::vector<int64_t>(k, 0), map, p);
    const S* g = grad.const_data_ptr<S>();
    const Strides gs = strides_of(grad);
    S* gi = grad_input.mutable_data_ptr<S>();
    const int64_t area = a.height * a.width;
    const auto groups = bucket(rois.batch, n);

    parallel(c * n, static_cast<double>(area) + 16.0 * k / std::max<int64_t>(n, 1),
             [&](int64_t begin, int64_t end) {
               std::vector<T> scratch;
               for (int64_t i = begin; i < end; ++i) {
                 const int64_t ch = i / n, b = i % n;
                 const int64_t pw = ch % p.pooled_w, ph = (ch / p.pooled_w) % p.pooled_h;
                 const int64_t co = ch / (p.pooled_h * p.pooled_w);
                 accumulate_plane(gi + (b * c + ch) * area, area, scratch, [&](T* acc) {
                   for (int64_t r : groups[b]) {
                     const AlignTables<T>& t = tables[r];
                     const T gv =
                         static_cast<T>(g[r * gs.n + co * gs.c + ph * gs.y + pw * gs.x]) / t.count;
                     for (int64_t ey = t.y.offset[ph]; ey < t.y.offset[ph + 1]; ++ey) {
                       T* row = acc + t.y.pos[ey] * width;
                       const T gy = t.y.weight[ey] * gv;
                       for (int64_t ex = t.x.offset[pw]; ex < t.x.offset[pw + 1]; ++ex) {
                         row[t.x.pos[ex]] += t.x.weight[ex] * gy;
                       }
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
  using Entry = detops::roi::PsRoiAlignEntry<detops::roi::cpu::PsRoiAlignBackend>;
  m.impl("ps_roi_align", TORCH_BOX(&Entry::ps_roi_align));
  m.impl("_ps_roi_align_backward", TORCH_BOX(&Entry::ps_roi_align_backward));
}
