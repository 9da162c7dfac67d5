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

#include "deform_entry.h"
#include "deform_layout_math.h"
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
  Sampler(const Layout& layout, const Tensor& input, const S* offset, const S* mask)
      : d_(layout),
        input_(input.const_data_ptr<S>()),
        mask_ptr_(mask),
        rows_(layout.nb * layout.og * layout.K),
        taps_(rows_ * layout.np),
        mask_(mask != nullptr ? rows_ * layout.np : 0) {
    torch::stable::parallel_for(0, rows_, grain_for(d_.np * 8, kCheapPassWork),
                                [&](int64_t begin, int64_t end) {
                                  for (int64_t r = begin; r < end; ++r) tabulate(r, offset, mask);
                                });
  }

  // col[(c * K + k), b, p] = mask * bilinear(input[b0 + b, c], taps of (b, group(c), k, p)).
  void im2col(T* col) const {
    for_each_plane([&](int64_t b, int64_t c, const Taps<T>* t, const T* m, int64_t at) {
      const S* plane = input_plane(b, c);
      T* dst = col + at;
      for (int64_t p = 0; p < d_.np; ++p) {
        dst[p] = interpolate(t[p], load_quad<T>(plane, d_.W, t[p]));
      }
      if (m != nullptr) {
        for (int64_t p = 0; p < d_.np; ++p) dst[p] *= m[p];
      }
    });
  }

  // Adds to grad_input[b0 + b, c] the bilinear weights times mask * grad_col[(c * K + k), b, p]
  // of every (k, p), scattered onto the four neighbours. One task per plane: one writer per
  // element, in a fixed order, so deterministic with or without the flag.
  void col2im(const T* grad_col, Tensor& grad_input_tensor, bool /*deterministic*/) const {
    T* grad_input = grad_input_tensor.mutable_data_ptr<T>();
    for_each_plane([&](int64_t b, int64_t c, const Taps<T>* t, const T* m, int64_t at) {
      // Locals, not members: the stores below would otherwise make the compiler reload
      // them on every position (measured: +4% instructions).
      const int64_t W = d_.W;
      const int64_t np = d_.np;
      T* a = grad_input + d_.plane(b, c);
      const T* gc = grad_col + at;
      for (int64_t p = 0; p < np; ++p) {
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
    const int64_t np = d_.np;
    const int64_t cpg = d_.cpg;
    const int64_t blocks = (np + kPositionBlock - 1) / kPositionBlock;
    const bool want_mask = grad_mask != nullptr;
    torch::stable::parallel_for(
        0, rows_ * blocks, grain_for(cpg * kPositionBlock * 16), [&](int64_t begin, int64_t end) {
          const Layout d = d_;  // a local copy: sizes stay in registers across the stores
          std::vector<T> acc(3 * kPositionBlock);
          for (int64_t task = begin; task < end; ++task) {
            const int64_t r = task / blocks;
            const int64_t p0 = (task % blocks) * kPositionBlock;
            const int64_t n = std::min(kPositionBlock, np - p0);
            const int64_t b = r / (d.og * d.K);
            const int64_t grp = (r / d.K) % d.og;
            const int64_t k = r % d.K;
            T* ay = acc.data();
            T* ax = ay + kPositionBlock;
            T* am = ax + kPositionBlock;
            std::fill(acc.begin(), acc.end(), T(0));
            const Taps<T>* t = taps_.data() + r * np + p0;
            const T* m = mask_ptr_ != nullptr ? mask_.data() + r * np + p0 : nullptr;
            for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
              const S* plane = input_plane(b, c);
              const int64_t at = d.column(c, k, b, p0);
              const T* gc = grad_col + at;
              T* cc = col != nullptr ? col + at : nullptr;
              for (int64_t p = 0; p < n; ++p) {
                if (!(t[p].flags & kAllTaps)) {
                  // As im2col: sample (zero here) times mask.
                  if (cc != nullptr) cc[p] = m != nullptr ? T(0) * m[p] : T(0);
                  continue;
                }
                const Quad<T> v = load_quad<T>(plane, d.W, t[p]);
                const T sample = interpolate(t[p], v);
                if (cc != nullptr) cc[p] = m != nullptr ? sample * m[p] : sample;
                ay[p] += gc[p] * grad_y(t[p], v);
                ax[p] += gc[p] * grad_x(t[p], v);
                if (want_mask) am[p] += gc[p] * sample;
              }
            }
            const int64_t first = d.p0 + p0;  // position in the image
            S* gy = grad_offset + d.offset_row(b, grp, k) + first;
            S* gx = gy + d.P;
            for (int64_t p = 0; p < n; ++p) {
              gy[p] = static_cast<S>(m != nullptr ? m[p] * ay[p] : ay[p]);
              gx[p] = static_cast<S>(m != nullptr ? m[p] * ax[p] : ax[p]);
            }
            if (want_mask) {
              S* gm = grad_mask + d.mask_row(b, grp, k) + first;
              for (int64_t p = 0; p < n; ++p) gm[p] = static_cast<S>(am[p]);
            }
          }
        });
  }

 private:
  // Row r = (image b, group grp, tap k) of the tap and mask tables: taps_at() and mask_at()
  // of every position of the chunk, the coordinates formed incrementally instead of with a
  // division per position.
  void tabulate(int64_t r, const S* offset, const S* mask) {
    const Layout& d = d_;
    const int64_t np = d.np;
    const int64_t b = r / (d.og * d.K);
    const int64_t grp = (r / d.K) % d.og;
    const int64_t k = r % d.K;
    const int64_t i = k / d.kernel_w;
    const int64_t j = k % d.kernel_w;
    const S* off_y = offset + d.offset_row(b, grp, k) + d.p0;
    const S* off_x = off_y + d.P;
    Taps<T>* out = taps_.data() + r * np;
    int64_t oy = d.p0 / d.out_w;
    int64_t ox = d.p0 % d.out_w;
    for (int64_t p = 0; p < np; ++p) {
      const T y = d.sample_y(oy, i, static_cast<T>(off_y[p]));
      const T x = d.sample_x(ox, j, static_cast<T>(off_x[p]));
      out[p] = make_taps(y, x, d.H, d.W);
      if (++ox == d.out_w) {
        ox = 0;
        ++oy;
      }
    }
    if (mask != nullptr) {
      const S* m = mask + d.mask_row(b, grp, k) + d.p0;
      T* dst = mask_.data() + r * np;
      for (int64_t p = 0; p < np; ++p) dst[p] = static_cast<T>(m[p]);
    }
  }

  // One task per (image b, channel c) plane; within it, body(b, c, taps, mask, at) for each
  // kernel tap k in order, with the taps and mask rows of (b, group(c), k) (mask nullptr
  // without one) and `at` the column offset of row (c * K + k), image b.
  template <typename F>
  void for_each_plane(const F& body) const {
    const int64_t np = d_.np;
    const int64_t K = d_.K;
    const int64_t C = d_.C;
    torch::stable::parallel_for(
        0, d_.nb * C, grain_for(K * np * 8), [&](int64_t begin, int64_t end) {
          for (int64_t task = begin; task < end; ++task) {
            const int64_t b = task / C;
            const int64_t c = task % C;
            for (int64_t k = 0; k < K; ++k) {
              const int64_t r = row(b, c, k);
              const T* m = mask_ptr_ != nullptr ? mask_.data() + r * np : nullptr;
              body(b, c, taps_.data() + r * np, m, d_.column(c, k, b, 0));
            }
          }
        });
  }

  const S* input_plane(int64_t b, int64_t c) const { return input_ + d_.plane(b, c); }
  // Row of the tap tables for image b of the chunk, channel c, kernel tap k.
  int64_t row(int64_t b, int64_t c, int64_t k) const {
    return (b * d_.og + d_.group_of(c)) * d_.K + k;
  }

  Layout d_;
  const S* input_;
  const S* mask_ptr_;
  int64_t rows_;
  std::vector<Taps<T>> taps_;  // [nb, offset_groups, K, np]
  std::vector<T> mask_;        // same layout; empty without a mask
};

struct DeformBackend : detops::CpuBackend {
  // 24 MiB: below glibc's largest mmap threshold (32 MiB), so the allocator reuses the
  // buffers instead of mapping and page-faulting them in on every call.
  static constexpr int64_t kColumnBytes = int64_t(24) << 20;

  template <typename S, typename T>
  using Sampler = cpu::Sampler<S, T>;

  // out[b0 + b, o, p0 + p] = prod[o, b, p] + bias[o], converted to S.
  template <typename S, typename T>
  static void finish_output(const Layout& d, const T* prod, const S* bias, S* out) {
    const int64_t np = d.np;
    torch::stable::parallel_for(0, d.nb * d.O, grain_for(np, kCheapPassWork),
                                [&](int64_t begin, int64_t end) {
                                  for (int64_t task = begin; task < end; ++task) {
                                    const int64_t b = task / d.O;
                                    const int64_t o = task % d.O;
                                    const T* src = prod + d.product(o, b, 0);
                                    S* dst = out + d.output(b, o, 0);
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

}  // namespace
}  // namespace detops::deform::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::deform::DeformEntry<detops::deform::cpu::DeformBackend>;
  m.impl("deform_conv2d", TORCH_BOX(&Entry::deform_conv2d));
  m.impl("_deform_conv2d_backward", TORCH_BOX(&Entry::deform_conv2d_backward));
}
