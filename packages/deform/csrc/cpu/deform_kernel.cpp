// CPU kernels of detops::deform_conv2d and detops::_deform_conv2d_backward.
//
// Per chunk of images, the sampling taps of every (image, offset group, kernel tap,
// output position) are computed once (make_taps) and reused by all the channels of the
// offset group. Work is split so that every output element is written by exactly one task
// and accumulated in a fixed order: im2col and col2im by (image, channel) plane, the
// offset/mask gradients by (image, offset group, kernel tap, block of positions). No
// atomics, and results do not depend on the number of threads.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <vector>

#include "deform_driver.h"
#include "deform_math.h"

namespace detops::deform::cpu {
namespace {

constexpr int64_t kPositionBlock = 512;  // positions per offset-gradient task

// Grain for parallel_for over items of roughly `work` element operations each: pieces of
// at least `min_work` operations, so small problems stay on one thread.
inline int64_t grain_for(int64_t work, int64_t min_work = int64_t(1) << 15) {
  return std::max<int64_t>(1, min_work / std::max<int64_t>(1, work));
}

// The cheap passes (tap tables, output assembly) cost well under a millisecond at the
// sizes where this bites: run them on one thread unless they are large, because each
// parallel region ends in a barrier, and on a loaded machine a barrier waits for a
// descheduled thread.
constexpr int64_t kCheapPassWork = int64_t(1) << 20;

template <typename S, typename T>
class Sampler {
 public:
  Sampler(const Geometry& g, const Chunk& ch, const Tensor& input, const S* offset, const S* mask)
      : g_(g),
        ch_(ch),
        input_(input.const_data_ptr<S>()),
        mask_ptr_(mask),
        rows_(ch.nb * g.offset_groups * g.taps()),
        taps_(rows_ * ch.np),
        mask_(mask != nullptr ? rows_ * ch.np : 0) {
    const int64_t P = g.positions();
    const int64_t K = g.taps();
    const int64_t np = ch.np;
    torch::stable::parallel_for(
        0, rows_, grain_for(np * 8, kCheapPassWork), [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t b = r / (g.offset_groups * K);
            const int64_t grp = (r / K) % g.offset_groups;
            const int64_t k = r % K;
            const int64_t i = k / g.kernel_w;
            const int64_t j = k % g.kernel_w;
            const int64_t image = ch.b0 + b;
            const S* off_y = offset + ((image * g.offset_groups + grp) * 2 * K + 2 * k) * P + ch.p0;
            const S* off_x = off_y + P;
            Taps<T>* out = taps_.data() + r * np;
            int64_t oy = ch.p0 / g.out_w;
            int64_t ox = ch.p0 % g.out_w;
            for (int64_t p = 0; p < np; ++p) {
              const T y = sample_coordinate(oy, g.p.stride_h, g.p.pad_h, i, g.p.dilation_h,
                                            static_cast<T>(off_y[p]));
              const T x = sample_coordinate(ox, g.p.stride_w, g.p.pad_w, j, g.p.dilation_w,
                                            static_cast<T>(off_x[p]));
              out[p] = make_taps(y, x, g.height, g.width);
              if (++ox == g.out_w) {
                ox = 0;
                ++oy;
              }
            }
            if (mask != nullptr) {
              const S* m = mask + ((image * g.offset_groups + grp) * K + k) * P + ch.p0;
              T* dst = mask_.data() + r * np;
              for (int64_t p = 0; p < np; ++p) dst[p] = static_cast<T>(m[p]);
            }
          }
        });
  }

  // col[(c * K + k), b, p] = mask * bilinear(input[b0 + b, c], taps of (b, group(c), k, p)).
  void im2col(T* col) const {
    for_each_plane([&](int64_t b, int64_t c, const Taps<T>* t, const T* m, int64_t at) {
      const S* plane = input_plane(b, c);
      T* dst = col + at;
      for (int64_t p = 0; p < ch_.np; ++p) {
        dst[p] = interpolate(t[p], load_quad<T>(plane, g_.width, t[p]));
      }
      if (m != nullptr) {
        for (int64_t p = 0; p < ch_.np; ++p) dst[p] *= m[p];
      }
    });
  }

  // Adds to grad_input[b0 + b, c] the bilinear weights times mask * grad_col[(c * K + k), b, p]
  // of every (k, p), scattered onto the four neighbours. One task per plane.
  void col2im(const T* grad_col, T* grad_input) const {
    const int64_t W = g_.width;
    for_each_plane([&](int64_t b, int64_t c, const Taps<T>* t, const T* m, int64_t at) {
      T* a = grad_input + ((ch_.b0 + b) * g_.in_channels + c) * g_.height * W;
      const T* gc = grad_col + at;
      for (int64_t p = 0; p < ch_.np; ++p) {
        const Taps<T>& tp = t[p];
        if (!(tp.flags & kInside)) continue;
        const T gv = m != nullptr ? gc[p] * m[p] : gc[p];
        const Quad<T> w = bilinear_weights(tp);
        T* q = a + tp.index;
        if (tp.flags & kTap00) q[0] += w.v00 * gv;
        if (tp.flags & kTap01) q[1] += w.v01 * gv;
        if (tp.flags & kTap10) q[W] += w.v10 * gv;
        if (tp.flags & kTap11) q[W + 1] += w.v11 * gv;
      }
    });
  }

  // Gradients with respect to the offsets (and the mask) of the chunk's taps, summed over
  // the channels of the offset group in order; writes the chunk's columns on the way
  // unless col is nullptr.
  void coord_grad(const T* grad_col, S* grad_offset, S* grad_mask, T* col) const {
    const int64_t np = ch_.np;
    const int64_t P = g_.positions();
    const int64_t K = g_.taps();
    const int64_t nb = ch_.nb;
    const int64_t cpg = g_.channels_per_offset_group();
    const int64_t blocks = (np + kPositionBlock - 1) / kPositionBlock;
    const bool want_mask = grad_mask != nullptr;
    torch::stable::parallel_for(
        0, rows_ * blocks, grain_for(cpg * kPositionBlock * 16), [&](int64_t begin, int64_t end) {
          std::vector<T> acc(3 * kPositionBlock);
          for (int64_t task = begin; task < end; ++task) {
            const int64_t r = task / blocks;
            const int64_t p0 = (task % blocks) * kPositionBlock;
            const int64_t n = std::min(kPositionBlock, np - p0);
            const int64_t b = r / (g_.offset_groups * K);
            const int64_t grp = (r / K) % g_.offset_groups;
            const int64_t k = r % K;
            T* ay = acc.data();
            T* ax = ay + kPositionBlock;
            T* am = ax + kPositionBlock;
            std::fill(acc.begin(), acc.end(), T(0));
            const Taps<T>* t = taps_.data() + r * np + p0;
            const T* m = mask_ptr_ != nullptr ? mask_.data() + r * np + p0 : nullptr;
            for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
              const S* plane = input_plane(b, c);
              const int64_t at = ((c * K + k) * nb + b) * np + p0;
              const T* gc = grad_col + at;
              T* cc = col != nullptr ? col + at : nullptr;
              for (int64_t p = 0; p < n; ++p) {
                if (!(t[p].flags & kAllTaps)) {
                  // As im2col: sample (zero here) times mask.
                  if (cc != nullptr) cc[p] = m != nullptr ? T(0) * m[p] : T(0);
                  continue;
                }
                const Quad<T> v = load_quad<T>(plane, g_.width, t[p]);
                const T sample = interpolate(t[p], v);
                if (cc != nullptr) cc[p] = m != nullptr ? sample * m[p] : sample;
                ay[p] += gc[p] * grad_y(t[p], v);
                ax[p] += gc[p] * grad_x(t[p], v);
                if (want_mask) am[p] += gc[p] * sample;
              }
            }
            const int64_t image = ch_.b0 + b;
            const int64_t first = ch_.p0 + p0;  // position in the image
            S* gy = grad_offset + ((image * g_.offset_groups + grp) * 2 * K + 2 * k) * P + first;
            S* gx = gy + P;
            for (int64_t p = 0; p < n; ++p) {
              gy[p] = static_cast<S>(m != nullptr ? m[p] * ay[p] : ay[p]);
              gx[p] = static_cast<S>(m != nullptr ? m[p] * ax[p] : ax[p]);
            }
            if (want_mask) {
              S* gm = grad_mask + ((image * g_.offset_groups + grp) * K + k) * P + first;
              for (int64_t p = 0; p < n; ++p) gm[p] = static_cast<S>(am[p]);
            }
          }
        });
  }

 private:
  // One task per (image b, channel c) plane; within it, body(b, c, taps, mask, at) for each
  // kernel tap k in order, with the taps and mask rows of (b, group(c), k) (mask nullptr
  // without one) and `at` the column offset of row (c * K + k), image b.
  template <typename F>
  void for_each_plane(const F& body) const {
    const int64_t np = ch_.np;
    const int64_t K = g_.taps();
    const int64_t C = g_.in_channels;
    torch::stable::parallel_for(
        0, ch_.nb * C, grain_for(K * np * 8), [&](int64_t begin, int64_t end) {
          for (int64_t task = begin; task < end; ++task) {
            const int64_t b = task / C;
            const int64_t c = task % C;
            for (int64_t k = 0; k < K; ++k) {
              const int64_t r = row(b, c, k);
              const T* m = mask_ptr_ != nullptr ? mask_.data() + r * np : nullptr;
              body(b, c, taps_.data() + r * np, m, ((c * K + k) * ch_.nb + b) * np);
            }
          }
        });
  }

  const S* input_plane(int64_t b, int64_t c) const {
    return input_ + ((ch_.b0 + b) * g_.in_channels + c) * g_.height * g_.width;
  }
  // Row of the tap tables for image b of the chunk, channel c, kernel tap k.
  int64_t row(int64_t b, int64_t c, int64_t k) const {
    const int64_t grp = c / g_.channels_per_offset_group();
    return (b * g_.offset_groups + grp) * g_.taps() + k;
  }

  const Geometry& g_;
  Chunk ch_;
  const S* input_;
  const S* mask_ptr_;
  int64_t rows_;
  std::vector<Taps<T>> taps_;  // [nb, offset_groups, K, np]
  std::vector<T> mask_;        // same layout; empty without a mask
};

struct Backend {
  // 24 MiB: below glibc's largest mmap threshold (32 MiB), so the allocator reuses the
  // buffers instead of mapping and page-faulting them in on every call.
  static constexpr int64_t kColumnBytes = int64_t(24) << 20;

  template <typename S, typename T>
  using Sampler = cpu::Sampler<S, T>;

  // out[b0 + b, o, p0 + p] = prod[o, b, p] + bias[o], converted to S.
  template <typename S, typename T>
  static void finish_output(const Geometry& g, const Chunk& ch, const T* prod, const S* bias,
                            S* out) {
    const int64_t O = g.out_channels;
    const int64_t np = ch.np;
    torch::stable::parallel_for(0, ch.nb * O, grain_for(np, kCheapPassWork),
                                [&](int64_t begin, int64_t end) {
                                  for (int64_t task = begin; task < end; ++task) {
                                    const int64_t b = task / O;
                                    const int64_t o = task % O;
                                    const T* src = prod + (o * ch.nb + b) * np;
                                    S* dst = out + ((ch.b0 + b) * O + o) * g.positions() + ch.p0;
                                    if (bias != nullptr) {
                                      const T bo = static_cast<T>(bias[o]);
                                      for (int64_t p = 0; p < np; ++p)
                                        dst[p] = static_cast<S>(src[p] + bo);
                                    } else {
                                      for (int64_t p = 0; p < np; ++p)
                                        dst[p] = static_cast<S>(src[p]);
                                    }
                                  }
                                });
  }
};

Tensor deform_conv2d_cpu(Tensor input, Tensor offset, Tensor weight, std::optional<Tensor> bias,
                         std::optional<Tensor> mask, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w) {
  return forward<Backend>(input, offset, weight, bias, mask,
                          {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w});
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> deform_conv2d_backward_cpu(
    Tensor grad_out, Tensor input, Tensor offset, Tensor weight, std::optional<Tensor> mask,
    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
    int64_t dilation_w, bool need_input, bool need_offset_mask, bool need_weight) {
  return backward<Backend>(grad_out, input, offset, weight, mask,
                           {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w},
                           {need_input, need_offset_mask, need_weight});
}

}  // namespace
}  // namespace detops::deform::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  m.impl("deform_conv2d", TORCH_BOX(&detops::deform::cpu::deform_conv2d_cpu));
  m.impl("_deform_conv2d_backward", TORCH_BOX(&detops::deform::cpu::deform_conv2d_backward_cpu));
}
