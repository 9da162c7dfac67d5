// CPU kernels of detops::roi_pool and detops::_roi_pool_backward.
//
// Forward: the maximum of each bin and its position (first maximum in row-major order,
// compared with `>` as torchvision does, so NaN never wins and an all -inf / NaN bin keeps
// the initial -FLT_MAX with argmax -1). Backward: each gradient plane's single writer adds
// grad to the argmax positions of its RoIs, in RoI order.
#include <detops/dispatch.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cfloat>
#include <vector>

#include "cpu/pool_bins.h"
#include "cpu/roi_cpu.h"
#include "roi_checks.h"

namespace detops::roi::cpu {
namespace {

constexpr const char* kOp = "detops.roi_pool";

// One RoI, G consecutive channels (planes sc apart). Every bin is scanned directly in row-major
// order with `>`, exactly as torchvision does, so the first maximum wins. The G channels
// share the bin bookkeeping and give G independent compare/select chains per element,
// which is what bounds a scan of a few elements per bin (bins here are a few pixels).
template <int G, typename S, typename T>
void pool_channels(const PoolBins& b, const S* plane, int64_t sc, int64_t sy, int64_t sx,
                   int64_t width, int64_t pooled_h, int64_t pooled_w, S* out, int64_t out_c,
                   int32_t* argmax) {
  for (int64_t ph = 0; ph < pooled_h; ++ph) {
    const int64_t y0 = b.h_lo[ph], y1 = b.h_hi[ph];
    for (int64_t pw = 0; pw < pooled_w; ++pw) {
      const int64_t bin = ph * pooled_w + pw;
      const int64_t x0 = b.w_lo[pw], x1 = b.w_hi[pw];
      if (y1 <= y0 || x1 <= x0) {
        for (int g = 0; g < G; ++g) {
          out[g * out_c + bin] = static_cast<S>(0);
          argmax[g * out_c + bin] = -1;
        }
        continue;
      }
      T best[G];
      int32_t where[G];
      for (int g = 0; g < G; ++g) {
        best[g] = static_cast<T>(-FLT_MAX);
        where[g] = -1;
      }
      for (int64_t y = y0; y < y1; ++y) {
        const S* row = plane + y * sy;
        const int32_t base = static_cast<int32_t>(y * width);
        for (int64_t x = x0; x < x1; ++x) {
          const S* p = row + x * sx;
          const int32_t here = base + static_cast<int32_t>(x);
          for (int g = 0; g < G; ++g) {
            // Selects, not a branch: which element wins is data-dependent and would mispredict.
            const T v = static_cast<T>(p[g * sc]);
            const bool take = v > best[g];
            where[g] = take ? here : where[g];
            best[g] = take ? v : best[g];
          }
        }
      }
      for (int g = 0; g < G; ++g) {
        out[g * out_c + bin] = static_cast<S>(best[g]);
        argmax[g * out_c + bin] = where[g];
      }
    }
  }
}

template <typename S>
std::tuple<Tensor, Tensor> forward(const Tensor& input, const Tensor& rois_in, double scale,
                                   int64_t pooled_h, int64_t pooled_w) {
  using T = acc_t<S>;
  const int64_t n = input.size(0), c = input.size(1), height = input.size(2), width = input.size(3);
  const Rois<T> rois = read_rois<S, T>(kOp, rois_in, n);
  const int64_t k = rois.size();
  Tensor out = fresh_output(input, {k, c, pooled_h, pooled_w});
  Tensor argmax = fresh_output(input, {k, c, pooled_h, pooled_w}, ScalarType::Int);
  if (k == 0 || c == 0) return {out, argmax};
  const auto bins = pool_bins(rois, static_cast<T>(scale), true, pooled_h, pooled_w, height, width);
  const S* in = input.const_data_ptr<S>();
  const Strides4 st(input);
  S* out_data = out.mutable_data_ptr<S>();
  int32_t* arg_data = argmax.mutable_data_ptr<int32_t>();
  const int64_t nbins = pooled_h * pooled_w;

  // Tasks are (group of kGroup channels, RoI), RoIs in image order within a group so that
  // consecutive tasks read the same few planes while they are in cache.
  constexpr int64_t kGroup = 4;
  const int64_t groups = (c + kGroup - 1) / kGroup;
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(k));
  for (const auto& members : bucket(rois.batch, n)) {
    order.insert(order.end(), members.begin(), members.end());
  }
  const double work = pool_work(bins, pooled_h, pooled_w) / static_cast<double>(k);
  parallel(groups * k, work * kGroup, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t ch = (i / k) * kGroup, r = order[i % k];
      const S* plane = in + st.plane(rois.batch[r], ch);
      S* o = out_data + (r * c + ch) * nbins;
      int32_t* a = arg_data + (r * c + ch) * nbins;
      const PoolBins& b = bins[r];
      if (ch + kGroup <= c) {
        pool_channels<kGroup, S, T>(b, plane, st.c, st.y, st.x, width, pooled_h, pooled_w, o, nbins,
                                    a);
      } else {
        for (int64_t j = 0; ch + j < c; ++j) {
          pool_channels<1, S, T>(b, plane + j * st.c, st.c, st.y, st.x, width, pooled_h, pooled_w,
                                 o + j * nbins, nbins, a + j * nbins);
        }
      }
    }
  });
  return {out, argmax};
}

template <typename S>
Tensor backward(const Tensor& grad, const Tensor& rois_in, const Tensor& argmax_in, int64_t n,
                int64_t c, int64_t height, int64_t width) {
  using T = acc_t<S>;
  const char* op = "detops._roi_pool_backward";
  const Rois<T> rois = read_rois<S, T>(op, rois_in, n);
  const int64_t k = rois.size();
  Tensor grad_input = fresh_output(grad, {n, c, height, width});
  const Tensor argmax = torch::stable::contiguous(argmax_in);
  const int32_t* arg = argmax.const_data_ptr<int32_t>();
  const S* g = grad.const_data_ptr<S>();
  const Strides4 gs(grad);
  S* gi = grad_input.mutable_data_ptr<S>();
  const int64_t pooled_h = grad.size(2), pooled_w = grad.size(3), nbins = pooled_h * pooled_w;
  const int64_t area = height * width;
  const auto groups = bucket(rois.batch, n);

  parallel(c * n, static_cast<double>(area + (k * nbins) / std::max<int64_t>(n, 1)),
           [&](int64_t begin, int64_t end) {
             std::vector<T> scratch;
             for (int64_t i = begin; i < end; ++i) {
               const int64_t ch = i / n, b = i % n;
               accumulate_plane(gi + (b * c + ch) * area, area, scratch, [&](T* acc) {
                 for (int64_t r : groups[b]) {
                   const int32_t* a = arg + (r * c + ch) * nbins;
                   const S* gr = g + r * gs.n + ch * gs.c;
                   for (int64_t ph = 0; ph < pooled_h; ++ph) {
                     for (int64_t pw = 0; pw < pooled_w; ++pw) {
                       const int64_t where = a[ph * pooled_w + pw];
                       if (where >= 0 && where < area) {
                         acc[where] += static_cast<T>(gr[ph * gs.y + pw * gs.x]);
                       }
                     }
                   }
                 }
               });
             }
           });
  return grad_input;
}

std::tuple<Tensor, Tensor> roi_pool_cpu(Tensor input, Tensor rois, double spatial_scale,
                                        int64_t pooled_h, int64_t pooled_w) {
  check_forward(kOp, input, rois, pooled_h, pooled_w, 0, false);
  check_plane_fits_int32(kOp, input);
  return dispatch_floating(input.scalar_type(), kOp, "input", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return forward<S>(input, rois, spatial_scale, pooled_h, pooled_w);
  });
}

Tensor roi_pool_backward_cpu(Tensor grad, Tensor rois, Tensor argmax, double, int64_t pooled_h,
                             int64_t pooled_w, int64_t batch_size, int64_t channels, int64_t height,
                             int64_t width) {
  const char* op = "detops._roi_pool_backward";
  check_backward(op, grad, rois, pooled_h, pooled_w, 0, batch_size, channels, height, width, false);
  check_argmax(op, argmax, grad);
  return dispatch_floating(grad.scalar_type(), op, "grad", [&](auto tag) {
    using S = typename decltype(tag)::type;
    return backward<S>(grad, rois, argmax, batch_size, channels, height, width);
  });
}

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("roi_pool", TORCH_BOX(&detops::roi::cpu::roi_pool_cpu));
  m.impl("_roi_pool_backward", TORCH_BOX(&detops::roi::cpu::roi_pool_backward_cpu));
}
