// CPU kernels of detops::roi_pool and detops::_roi_pool_backward.
//
// Forward: the maximum of each bin and its position (first maximum in row-major order,
// compared with `>` as torchvision does, so NaN never wins and an all -inf / NaN bin keeps
// the initial -FLT_MAX with argmax -1). Backward: each gradient plane's single writer adds
// grad to the argmax positions of its RoIs, in RoI order.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "cpu/pool_bins.h"
#include "cpu/roi_cpu.h"
#include "roi_entry.h"

namespace detops::roi::cpu {
namespace {

// One RoI, G consecutive channels (planes sc apart): every bin scanned by bin_max.
template <int G, typename S, typename T>
void pool_channels(const PoolBins& b, const S* plane, int64_t sc, int64_t sy, int64_t sx,
                   int64_t width, int64_t pooled_h, int64_t pooled_w, S* out, int64_t out_c,
                   int32_t* argmax) {
  for (int64_t ph = 0; ph < pooled_h; ++ph) {
    for (int64_t pw = 0; pw < pooled_w; ++pw) {
      const int64_t bin = ph * pooled_w + pw;
      T best[G];
      int32_t where[G];
      bin_max<G, S, T>(plane, sc, sy, sx, width, b.h_lo[ph], b.h_hi[ph], b.w_lo[pw], b.w_hi[pw],
                       best, where);
      for (int g = 0; g < G; ++g) {
        out[g * out_c + bin] = static_cast<S>(best[g]);
        argmax[g * out_c + bin] = where[g];
      }
    }
  }
}

struct RoiPoolBackend : RoiCpuBackend {
  template <typename S>
  static void forward(const RoiArgs& a, const Tensor& input, Tensor& out, Tensor& argmax) {
    using T = acc_t<S>;
    const int64_t c = a.channels, width = a.width, pooled_h = a.pooled_h, pooled_w = a.pooled_w;
    const Rois<T> rois = read_rois<S, T>(a.rois, a.batch);
    const int64_t k = rois.size();
    const auto bins = pool_bins(rois, static_cast<T>(a.scale), PoolOp::kRoiPool, pooled_h, pooled_w,
                                a.height, width);
    const S* in = input.const_data_ptr<S>();
    const Strides st = strides_of(input);
    S* out_data = out.mutable_data_ptr<S>();
    int32_t* arg_data = argmax.mutable_data_ptr<int32_t>();
    const int64_t nbins = pooled_h * pooled_w;

    // Tasks are (group of kGroup channels, RoI), RoIs in image order within a group so that
    // consecutive tasks read the same few planes while they are in cache.
    constexpr int64_t kGroup = 4;
    const int64_t groups = (c + kGroup - 1) / kGroup;
    std::vector<int64_t> order;
    order.reserve(static_cast<size_t>(k));
    for (const auto& members : bucket(rois.batch, a.batch)) {
      order.insert(order.end(), members.begin(), members.end());
    }
    const double work = pool_work(bins, pooled_h, pooled_w) / static_cast<double>(k);
    parallel(groups * k, work * kGroup, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t ch = (i / k) * kGroup, r = order[i % k];
        const S* plane = in + st.plane(rois.batch[r], ch);
        S* o = out_data + (r * c + ch) * nbins;
        int32_t* am = arg_data + (r * c + ch) * nbins;
        const PoolBins& b = bins[r];
        if (ch + kGroup <= c) {
          pool_channels<kGroup, S, T>(b, plane, st.c, st.y, st.x, width, pooled_h, pooled_w, o,
                                      nbins, am);
        } else {
          for (int64_t j = 0; ch + j < c; ++j) {
            pool_channels<1, S, T>(b, plane + j * st.c, st.c, st.y, st.x, width, pooled_h, pooled_w,
                                   o + j * nbins, nbins, am + j * nbins);
          }
        }
      }
    });
  }

  // Each gradient plane's single writer adds grad at the argmax positions of its RoIs, in
  // RoI order.
  template <typename S>
  static void backward(const RoiArgs& a, const Tensor& grad, const Tensor& argmax,
                       Tensor& grad_input) {
    using T = acc_t<S>;
    const int64_t n = a.batch, c = a.channels;
    const Rois<T> rois = read_rois<S, T>(a.rois, n);
    const int64_t k = rois.size();
    const int32_t* arg = argmax.const_data_ptr<int32_t>();
    const S* g = grad.const_data_ptr<S>();
    const Strides gs = strides_of(grad);
    S* gi = grad_input.mutable_data_ptr<S>();
    const int64_t pooled_h = a.pooled_h, pooled_w = a.pooled_w, nbins = pooled_h * pooled_w;
    const int64_t area = a.height * a.width;
    const auto groups = bucket(rois.batch, n);

    parallel(c * n, static_cast<double>(area + (k * nbins) / std::max<int64_t>(n, 1)),
             [&](int64_t begin, int64_t end) {
               std::vector<T> scratch;
               for (int64_t i = begin; i < end; ++i) {
                 const int64_t ch = i / n, b = i % n;
                 accumulate_plane(gi + (b * c + ch) * area, area, scratch, [&](T* acc) {
                   for (int64_t r : groups[b]) {
                     const int32_t* am = arg + (r * c + ch) * nbins;
                     const S* gr = g + r * gs.n + ch * gs.c;
                     for (int64_t ph = 0; ph < pooled_h; ++ph) {
                       for (int64_t pw = 0; pw < pooled_w; ++pw) {
                         const int64_t where = am[ph * pooled_w + pw];
                         if (where >= 0 && where < area) {
                           acc[where] += static_cast<T>(gr[ph * gs.y + pw * gs.x]);
                         }
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
  using Entry = detops::roi::RoiPoolEntry<detops::roi::cpu::RoiPoolBackend>;
  m.impl("roi_pool", TORCH_BOX(&Entry::roi_pool));
  m.impl("_roi_pool_backward", TORCH_BOX(&Entry::roi_pool_backward));
}
