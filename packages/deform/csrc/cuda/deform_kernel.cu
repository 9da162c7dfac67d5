// CUDA kernels of detops::deform_conv2d and detops::_deform_conv2d_backward. The sampling
// math is deform_math.h and the index formulas deform_layout_math.h (both shared with the
// CPU kernels); the entry points, checks, products and batch chunking are deform_entry.h.
// Here: thread mapping, atomics and launches only.
//
// Threads run along output positions (the fastest-varying index of the column buffer, the
// offsets and the mask), so those loads and stores coalesce. The input gradient is
// scattered into a float32 (float64 for double) buffer (detops/scatter_add.cuh); the offset and
// mask gradients are one thread per (image, offset group, tap, position) summing over the
// group's channels, without atomics.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>
#include <detops/scatter_add.cuh>

#include "deform_entry.h"
#include "deform_layout_math.h"
#include "deform_math.h"

namespace detops::deform::cuda {
namespace {

constexpr int64_t kChannelBlock = 16;  // channels sampled per im2col thread

// One thread per (channel block, image, group, tap, position), position fastest, so
// neighbouring threads read neighbouring offsets and write neighbouring columns.
template <typename S, typename T>
__global__ void im2col_kernel(Layout d, int64_t n, const S* __restrict__ input,
                              const S* __restrict__ offset, const S* __restrict__ mask,
                              T* __restrict__ col) {
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t k = (e / d.np) % d.K;
    const int64_t grp = (e / (d.np * d.K)) % d.og;
    const int64_t b = (e / (d.np * d.K * d.og)) % d.nb;
    const int64_t cb = e / (d.np * d.K * d.og * d.nb);
    const Taps<T> t = taps_at<T>(d, offset, b, grp, k, d.p0 + q);
    const T m = mask_at<T>(d, mask, b, grp, k, d.p0 + q);
    const int64_t c_begin = grp * d.cpg + cb * kChannelBlock;
    const int64_t c_end = min(c_begin + kChannelBlock, (grp + 1) * d.cpg);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const T v = interpolate(t, load_quad<T>(input + d.plane(b, c), d.W, t));
      col[d.column(c, k, b, q)] = mask == nullptr ? v : v * m;
    }
  }
}

// One thread per column element (channel, tap, image, position), in the column buffer's
// order: scatters onto the input gradient (accumulation type, the whole batch).
template <typename S, typename T, typename Add>
__global__ void col2im_kernel(Layout d, int64_t n, const S* __restrict__ offset,
                              const S* __restrict__ mask, const T* __restrict__ grad_col,
                              T* __restrict__ grad_input, Add add) {
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t b = (e / d.np) % d.nb;
    const int64_t k = (e / (d.np * d.nb)) % d.K;
    const int64_t c = e / (d.np * d.nb * d.K);
    const int64_t grp = d.group_of(c);
    const Taps<T> t = taps_at<T>(d, offset, b, grp, k, d.p0 + q);
    if (!(t.flags & kInside)) continue;
    const T gv = grad_col[e] * mask_at<T>(d, mask, b, grp, k, d.p0 + q);
    const Quad<T> w = bilinear_weights(t);
    T* at = grad_input + d.plane(b, c) + t.index;
    if (t.flags & kTap00) add(at, w.v00 * gv);
    if (t.flags & kTap01) add(at + 1, w.v01 * gv);
    if (t.flags & kTap10) add(at + d.W, w.v10 * gv);
    if (t.flags & kTap11) add(at + d.W + 1, w.v11 * gv);
  }
}

// One thread per (image, group, tap, position): offset (and mask) gradients, summed over
// the group's channels in order (as the CPU kernel does); also writes the chunk's columns
// (as im2col_kernel would) unless col is nullptr.
template <typename S, typename T>
__global__ void coord_kernel(Layout d, int64_t n, const S* __restrict__ input,
                             const S* __restrict__ offset, const S* __restrict__ mask,
                             const T* __restrict__ grad_col, S* __restrict__ grad_offset,
                             S* __restrict__ grad_mask, T* __restrict__ col) {
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t k = (e / d.np) % d.K;
    const int64_t grp = (e / (d.np * d.K)) % d.og;
    const int64_t b = e / (d.np * d.K * d.og);
    const int64_t p = d.p0 + q;
    const Taps<T> t = taps_at<T>(d, offset, b, grp, k, p);
    const T m = mask_at<T>(d, mask, b, grp, k, p);
    const bool any = (t.flags & kAllTaps) != 0;
    T gy = 0, gx = 0, gm = 0;
    for (int64_t c = grp * d.cpg; c < (grp + 1) * d.cpg; ++c) {
      const int64_t at = d.column(c, k, b, q);
      const Quad<T> v = load_quad<T>(input + d.plane(b, c), d.W, t);  // none read without taps
      const T sample = interpolate(t, v);
      if (col != nullptr) col[at] = mask == nullptr ? sample : sample * m;
      if (any) {
        const T g = grad_col[at];
        gy += g * grad_y(t, v);
        gx += g * grad_x(t, v);
        if (grad_mask != nullptr) gm += g * sample;
      }
    }
    const int64_t off = d.offset_row(b, grp, k) + p;
    grad_offset[off] = static_cast<S>(mask == nullptr ? gy : m * gy);
    grad_offset[off + d.P] = static_cast<S>(mask == nullptr ? gx : m * gx);
    if (grad_mask != nullptr) grad_mask[d.mask_row(b, grp, k) + p] = static_cast<S>(gm);
  }
}

// One thread per output element of the chunk: out[b0 + b, o, p0 + q] = prod[o, b, q] + bias[o].
template <typename S, typename T>
__global__ void finish_kernel(Layout d, int64_t n, const T* __restrict__ prod,
                              const S* __restrict__ bias, S* __restrict__ out) {
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t o = (e / d.np) % d.O;
    const int64_t b = e / (d.np * d.O);
    T v = prod[d.product(o, b, q)];
    if (bias != nullptr) v += static_cast<T>(bias[o]);
    out[d.output(b, o, q)] = static_cast<S>(v);
  }
}

template <typename S, typename T>
class Sampler {
 public:
  Sampler(const Layout& layout, const Tensor& input, const S* offset, const S* mask)
      : d_(layout),
        input_(input.const_data_ptr<S>()),
        offset_(offset),
        mask_(mask),
        stream_(detops::cuda::current_stream(input)) {}

  void im2col(T* col) const {
    const int64_t blocks = (d_.cpg + kChannelBlock - 1) / kChannelBlock;
    const int64_t n = blocks * d_.nb * d_.og * d_.K * d_.np;
    detops::cuda::launch<im2col_kernel<S, T>>("detops.deform_conv2d im2col_kernel",
                                              detops::cuda::over(n, stream_), d_, n, input_,
                                              offset_, mask_, col);
  }

  // The chunk adds only into its images' planes, a contiguous slice of grad_input: the
  // deterministic sum's buffer (scatter_add's adders index from the slice's start).
  void col2im(const T* grad_col, Tensor& grad_input, bool deterministic) const {
    const char* op = "detops._deform_conv2d_backward col2im_kernel";
    const int64_t n = d_.C * d_.K * d_.nb * d_.np;
    Tensor images = torch::stable::narrow(grad_input, 0, d_.b0, d_.nb);
    T* whole = grad_input.mutable_data_ptr<T>();
    detops::cuda::scatter_add<T>(op, images, deterministic, [&](auto add) {
      detops::cuda::launch<col2im_kernel<S, T, decltype(add)>>(
          op, detops::cuda::over(n, stream_), d_, n, offset_, mask_, grad_col, whole, add);
    });
  }

  void coord_grad(const T* grad_col, S* grad_offset, S* grad_mask, T* col) const {
    const int64_t n = d_.nb * d_.og * d_.K * d_.np;
    detops::cuda::launch<coord_kernel<S, T>>("detops._deform_conv2d_backward coord_kernel",
                                             detops::cuda::over(n, stream_), d_, n, input_, offset_,
                                             mask_, grad_col, grad_offset, grad_mask, col);
  }

 private:
  Layout d_;
  const S* input_;
  const S* offset_;
  const S* mask_;
  cudaStream_t stream_;
};

struct DeformBackend : detops::CudaBackend {
  static constexpr int64_t kColumnBytes = int64_t(256) << 20;  // 256 MiB: few, large products

  template <typename S, typename T>
  using Sampler = cuda::Sampler<S, T>;

  // Below the entry point's guard: the current stream is the input's.
  template <typename S, typename T>
  static void finish_output(const Layout& d, const T* prod, const S* bias, S* out) {
    const int64_t n = d.O * d.nb * d.np;
    detops::cuda::launch<finish_kernel<S, T>>("detops.deform_conv2d finish_kernel",
                                              detops::cuda::over(n, detops::cuda::current_stream()),
                                              d, n, prod, bias, out);
  }
};

}  // namespace
}  // namespace detops::deform::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::deform::DeformEntry<detops::deform::cuda::DeformBackend>;
  m.impl("deform_conv2d", TORCH_BOX(&Entry::deform_conv2d));
  m.impl("_deform_conv2d_backward", TORCH_BOX(&Entry::deform_conv2d_backward));
}
