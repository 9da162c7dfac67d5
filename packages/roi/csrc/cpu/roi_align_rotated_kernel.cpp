// CPU kernels of detops::roi_align_rotated and its backward (geometry in
// roi_align_rotated_math.h, checks and allocation in roi_align_rotated_entry.h).
//
// Each RoI's samples are found once per call (or once per block of channels in the
// backward) as a table of bilinear taps per bin, then applied to every channel. The
// backward splits the gradient into (image, block of channels) tasks: each task alone
// writes its planes, adding its image's RoIs in index order, so there are no atomics and
// the result does not depend on the thread count.
#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/roi_cpu.h"
#include "roi_align_rotated_entry.h"

namespace detops::roi::cpu {
namespace {

template <typename T>
struct TapTable {
  std::vector<std::pair<Tap<T>, Tap<T>>> taps;
  std::vector<int64_t> bin_start;  // taps of bin b: [bin_start[b], bin_start[b + 1])

  void build(const RotatedBox<T>& box, const RotatedArgs& a) {
    taps.clear();
    bin_start.assign(1, 0);
    for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
      for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
        for_each_rotated_sample(
            box, ph, pw, a.height, a.width,
            [&](const Tap<T>& ty, const Tap<T>& tx) { taps.emplace_back(ty, tx); });
        bin_start.push_back(static_cast<int64_t>(taps.size()));
      }
    }
  }
};

template <typename S>
void forward(const RotatedArgs& a, const Tensor& input, Tensor& out) {
  using T = acc_t<S>;
  const S* rois = a.rois.const_data_ptr<S>();
  const S* in = input.const_data_ptr<S>();
  const Strides st = strides_of(input);
  S* o = out.mutable_data_ptr<S>();
  const int64_t bins = a.pooled_h * a.pooled_w;
  const double work = static_cast<double>(a.channels * bins) * 16.0;
  parallel(a.num_rois(), work, [&](int64_t begin, int64_t end) {
    TapTable<T> table;
    for (int64_t k = begin; k < end; ++k) {
      const S* roi = rois + 6 * k;
      const int64_t b = batch_index(roi[0], a.batch);
      const RotatedBox<T> box = rotated_box_of<T>(roi, a);
      table.build(box, a);
      for (int64_t c = 0; c < a.channels; ++c) {
        const S* plane = in + st.plane(b, c);
        S* row = o + (k * a.channels + c) * bins;
        for (int64_t bin = 0; bin < bins; ++bin) {
          T acc = T(0);
          for (int64_t t = table.bin_start[bin]; t < table.bin_start[bin + 1]; ++t) {
            acc += bilinear(plane, st.y, st.x, table.taps[t].first, table.taps[t].second);
          }
          row[bin] = static_cast<S>(acc / box.count);
        }
      }
    }
  });
}

constexpr int64_t kChannelBlock = 16;

template <typename S>
void backward(const RotatedArgs& a, const Tensor& grad, Tensor& grad_input) {
  using T = acc_t<S>;
  const S* rois = a.rois.const_data_ptr<S>();
  const S* g = grad.const_data_ptr<S>();
  const Strides gs = strides_of(grad);
  S* gi = grad_input.mutable_data_ptr<S>();
  const int64_t area = a.height * a.width;
  std::vector<int64_t> image(a.num_rois());
  for (int64_t k = 0; k < a.num_rois(); ++k) image[k] = batch_index(rois[6 * k], a.batch);
  const std::vector<std::vector<int64_t>> by_image = bucket(image, a.batch);
  const int64_t blocks = (a.channels + kChannelBlock - 1) / kChannelBlock;
  const double work = static_cast<double>(kChannelBlock * area) +
                      static_cast<double>(a.num_rois()) / std::max<int64_t>(a.batch, 1) *
                          static_cast<double>(a.pooled_h * a.pooled_w * kChannelBlock) * 16.0;
  parallel(a.batch * blocks, work, [&](int64_t begin, int64_t end) {
    TapTable<T> table;
    std::vector<T> scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks;
      const int64_t c0 = (task % blocks) * kChannelBlock;
      const int64_t c1 = std::min(a.channels, c0 + kChannelBlock);
      S* dst = gi + (n * a.channels + c0) * area;
      const int64_t span = (c1 - c0) * area;
      T* acc;
      if constexpr (is_narrow<S>()) {
        scratch.assign(static_cast<size_t>(span), T(0));
        acc = scratch.data();
      } else {
        std::fill(dst, dst + span, T(0));
        acc = dst;
      }
      for (const int64_t k : by_image[n]) {
        const RotatedBox<T> box = rotated_box_of<T>(rois + 6 * k, a);
        table.build(box, a);
        for (int64_t c = c0; c < c1; ++c) {
          T* plane = acc + (c - c0) * area;
          for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
            for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
              const int64_t bin = ph * a.pooled_w + pw;
              const T gv =
                  static_cast<T>(g[k * gs.n + c * gs.c + ph * gs.y + pw * gs.x]) / box.count;
              for (int64_t t = table.bin_start[bin]; t < table.bin_start[bin + 1]; ++t) {
                const Tap<T>& ty = table.taps[t].first;
                const Tap<T>& tx = table.taps[t].second;
                plane[ty.lo * a.width + tx.lo] += gv * ty.w_lo * tx.w_lo;
                plane[ty.lo * a.width + tx.hi] += gv * ty.w_lo * tx.w_hi;
                plane[ty.hi * a.width + tx.lo] += gv * ty.w_hi * tx.w_lo;
                plane[ty.hi * a.width + tx.hi] += gv * ty.w_hi * tx.w_hi;
              }
            }
          }
        }
      }
      if constexpr (is_narrow<S>()) {
        for (int64_t j = 0; j < span; ++j) dst[j] = static_cast<S>(acc[j]);
      }
    }
  });
}

struct RoiAlignRotatedBackend : RoiCpuBackend {
  template <typename S>
  static void forward(const RotatedArgs& a, const Tensor& input, Tensor& out) {
    cpu::forward<S>(a, input, out);
  }
  template <typename S>
  static void backward(const RotatedArgs& a, const Tensor& grad, Tensor& grad_input) {
    cpu::backward<S>(a, grad, grad_input);
  }
};

}  // namespace
}  // namespace detops::roi::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::roi::RoiAlignRotatedEntry<detops::roi::cpu::RoiAlignRotatedBackend>;
  m.impl("roi_align_rotated", TORCH_BOX(&Entry::roi_align_rotated));
  m.impl("_roi_align_rotated_backward", TORCH_BOX(&Entry::roi_align_rotated_backward));
}
