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
#include "roi_checks.h"

namespace detops::roi::cpu {
namespace {

// Sum over bin (ph, pw) of the interpolated plane, before dividing by count.
template <typename S, typename T>
T bin_sum(const AlignTables<T>& t, const S* plane, const Strides4& st, int64_t ph, int64_t pw) {
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

template <typename S>
Tensor forward(const char* op, const Tensor& input, const Tensor& rois_in, double scale,
               const AlignParams& p) {
  using T = acc_t<S>;
  const int64_t n = input.size(0), c = input.size(1);
  const int64_t nbins = p.pooled_h * p.pooled_w, c_out = c / nbins;
  const Rois<T> rois = read_rois<S, T>(op, rois_in, n);
  const int64_t k = rois.size();
  Tensor out = fresh_output(input, {k, c_out, p.pooled_h, p.pooled_w});
  if (k == 0 || c_out == 0) return out;
  const std::vector<LevelShape> level{{input.size(2), input.size(3), scale}};
  const auto tables = build_tables(rois, std::vector<int64_t>(k, 0), level, p);
  double work = 0;
  for (const auto& t : tables) work += static_cast<double>(t.y.pos.size() * t.x.pos.size());
  const S* in = input.const_data_ptr<S>();
  const Strides4 st(input);
  S* out_data = out.mutable_data_ptr<S>();

  parallel(c_out * k, work / k / std::max<int64_t>(std::min(p.pooled_h, p.pooled_w), 1),
           [&](int64_t begin, int64_t end) {
             for (int64_t i = begin; i < end; ++i) {
               const int64_t co = i / k, r = i % k;
               const AlignTables<T>& t = tables[r];
               S* o = out_data + (r * c_out + co) * nbins;
               for (int64_t ph = 0; ph < p.pooled_h; ++ph) {
                 for (int64_t pw = 0; pw < p.pooled_w; ++pw) {
                   const S* plane =
                       in + st.plane(rois.batch[r], ps_channel(co, ph, pw, p.pooled_h, p.pooled_w));
                   o[ph * p.pooled_w + pw] =
                       static_cast<S>(bin_sum(t, plane, st, ph, pw) / t.count);
                 }
               }
             }
           });
  return out;
}

template <typename S>
Tensor backward(const char* op, const Tensor& grad, const Tensor& rois_in, double scale,
                const AlignParams& p, int64_t n, int64_t c, int64_t height, int64_t width) {
  using T = acc_t<S>;
  const Rois<T> rois = read_rois<S, T>(op, rois_in, n);
  const int64_t k = rois.size();
  Tensor grad_input = fresh_output(grad, {n, c, height, width});
  const std::vector<LevelShape> level{{height, width, scale}};
  const auto tables = build_tables(rois, std::vector<int64_t>(k, 0), level, p);
  const S* g = grad.const_data_ptr<S>();
  const Strides4 gs(grad);
  S* gi = grad_input.mutable_data_ptr<S>();
  const int64_t area = height * width;
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
  return grad_input;
}

Tensor ps_roi_align_cpu(Tensor input, Tensor rois, double spatial_scale, int64_t pooled_h,
                        int64_t pooled_w, int64_t sampling_ratio) {
  const char* op = "detops.ps_roi_align";
  check_forward(op, input, rois, pooled_h, pooled_w, sampling_ratio, true);
  const AlignParams p{pooled_h, pooled_w, sampling_ratio, /*aligned=*/true};
  return dispatch_floating(input.scalar_type(), op, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return forward<S>(op, input, rois, spatial_scale, p);
  });
}

Tensor ps_roi_align_backward_cpu(Tensor grad, Tensor rois, double spatial_scale, int64_t pooled_h,
                                 int64_t pooled_w, int64_t sampling_ratio, int64_t batch_size,
                                 int64_t channels, int64_t height, int64_t width) {
  const char* op = "detops._ps_roi_align_backward";
  check_backward(op, grad, rois, pooled_h, pooled_w, sampling_ratio, batch_size, channels, height,
                 width, true);
  const AlignParams p{pooled_h, pooled_w, sampling_ratio, /*aligned=*/true};
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return backward<S>(op, grad, rois, spatial_scale, p, batch_size, channels, height, width);
  });
}

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("ps_roi_align", TORCH_BOX(&detops::roi::cpu::ps_roi_align_cpu));
  m.impl("_ps_roi_align_backward", TORCH_BOX(&detops::roi::cpu::ps_roi_align_backward_cpu));
}
