// CPU kernels of detops::roi_pool and detops::_roi_pool_backward.
//
// Forward: the maximum of each bin and its position (first maximum in row-major order,
// compared with `>` as torchvision does, so NaN never wins and an all -inf / NaN bin keeps
// the initial -FLT_MAX with argmax -1). Backward: each gradient plane's single writer adds
// grad to the argmax positions of its RoIs, in RoI order.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/pool_bins.h"
#include "cpu/roi_cpu.h"
#include "roi_checks.h"
#include <detops/dispatch.h>

namespace detops::roi::cpu {
namespace {

constexpr const char* kOp = "detops.roi_pool";

// out_max[j] = max(in_max[j], row[j]) with `>` (NaN never wins), out_row[j] = y where it
// grew, in_row[j] elsewhere. Separate input and output arrays keep the compiler from
// turning the selects into conditional stores, so the loop vectorises.
template <bool kUnitStride, typename S, typename T>
void update_columns(const S* __restrict row, int64_t sx, int32_t y, int64_t span,
                    const T* __restrict in_max, const int32_t* __restrict in_row,
                    T* __restrict out_max, int32_t* __restrict out_row) {
  for (int64_t j = 0; j < span; ++j) {
    const T v = static_cast<T>(kUnitStride ? row[j] : row[j * sx]);
    const T m = in_max[j];
    const int32_t gt = -static_cast<int32_t>(v > m);  // all ones where v wins
    out_max[j] = gt ? v : m;
    out_row[j] = (y & gt) | (in_row[j] & ~gt);
  }
}

// take ? a : b through bit masks, so that the compiler cannot turn it into a branch.
template <typename V>
inline V pick(bool take, V a, V b) {
  using Bits = std::conditional_t<sizeof(V) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(V) == sizeof(Bits), "pick: 4- or 8-byte values only");
  Bits ab, bb;
  std::memcpy(&ab, &a, sizeof(V));
  std::memcpy(&bb, &b, sizeof(V));
  const Bits mask = Bits(0) - static_cast<Bits>(take);
  const Bits r = (ab & mask) | (bb & ~mask);
  V out;
  std::memcpy(&out, &r, sizeof(V));
  return out;
}

// One RoI, one channel. Per bin row: the running maximum of every column of the RoI over
// the bin's rows (with the first row reaching it), vectorisable; then per bin the best
// column, ties going to the smaller row, then the smaller column: the first maximum in
// row-major order, exactly as a row-major scan with `>` finds it.
template <bool kUnitStride, typename S, typename T>
void pool_plane(const PoolBins& b, const S* plane, int64_t sy, int64_t sx, int64_t width,
                int64_t pooled_h, int64_t pooled_w, T* max_buf, int32_t* row_buf, S* out,
                int32_t* argmax) {
  const int64_t x0 = b.w_lo[0], span = b.span_w();
  for (int64_t ph = 0; ph < pooled_h; ++ph) {
    T* col_max = max_buf;
    int32_t* col_row = row_buf;
    std::fill(col_max, col_max + span, static_cast<T>(-FLT_MAX));
    std::fill(col_row, col_row + span, int32_t(-1));
    for (int64_t y = b.h_lo[ph]; y < b.h_hi[ph]; ++y) {
      T* next_max = col_max == max_buf ? max_buf + span : max_buf;
      int32_t* next_row = col_row == row_buf ? row_buf + span : row_buf;
      update_columns<kUnitStride>(plane + y * sy + x0 * sx, sx, static_cast<int32_t>(y), span,
                                  col_max, col_row, next_max, next_row);
      col_max = next_max;
      col_row = next_row;
    }
    for (int64_t pw = 0; pw < pooled_w; ++pw) {
      const int64_t bin = ph * pooled_w + pw;
      if (b.empty(ph, pw)) {
        out[bin] = static_cast<S>(0);
        argmax[bin] = -1;
        continue;
      }
      T best = static_cast<T>(-FLT_MAX);
      int32_t best_row = -1;
      int64_t best_col = -1;
      for (int64_t x = b.w_lo[pw]; x < b.w_hi[pw]; ++x) {
        // Branch-free: which column wins is data-dependent and mispredicts as a branch.
        const T v = col_max[x - x0];
        const int32_t rw = col_row[x - x0];
        const bool take = (v > best) | ((v == best) & (rw < best_row));
        best = pick(take, v, best);
        best_row = pick(take, rw, best_row);
        best_col = pick(take, x, best_col);
      }
      out[bin] = static_cast<S>(best);
      argmax[bin] = best_row < 0 ? -1 : static_cast<int32_t>(best_row * width + best_col);
    }
  }
}

template <typename S>
std::tuple<Tensor, Tensor> forward(const Tensor& input, const Tensor& rois_in, double scale,
                                   int64_t pooled_h, int64_t pooled_w) {
  using T = acc_t<S>;
  const int64_t n = input.size(0), c = input.size(1), height = input.size(2),
                width = input.size(3);
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

  int64_t max_span = 1;
  for (const PoolBins& b : bins) max_span = std::max(max_span, b.span_w());

  parallel(c * k, pool_work(bins, pooled_h, pooled_w) / k, [&](int64_t begin, int64_t end) {
    std::vector<T> col_max(2 * static_cast<size_t>(max_span));
    std::vector<int32_t> col_row(2 * static_cast<size_t>(max_span));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t ch = i / k, r = i % k;
      const S* plane = in + st.plane(rois.batch[r], ch);
      S* o = out_data + (r * c + ch) * nbins;
      int32_t* a = arg_data + (r * c + ch) * nbins;
      if (st.x == 1) {
        pool_plane<true>(bins[r], plane, st.y, st.x, width, pooled_h, pooled_w, col_max.data(),
                         col_row.data(), o, a);
      } else {
        pool_plane<false>(bins[r], plane, st.y, st.x, width, pooled_h, pooled_w, col_max.data(),
                          col_row.data(), o, a);
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
                             int64_t pooled_w, int64_t batch_size, int64_t channels,
                             int64_t height, int64_t width) {
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
