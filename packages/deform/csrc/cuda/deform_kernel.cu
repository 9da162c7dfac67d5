// CUDA kernels of detops::deform_conv2d and detops::_deform_conv2d_backward. The sampling
// math is deform_math.h (shared with the CPU kernels); the products and the batch chunking
// are deform_driver.h. Here: thread mapping and launches only.
//
// Threads run along output positions (the fastest-varying index of the column buffer, the
// offsets and the mask), so those loads and stores coalesce. The input gradient is
// scattered with atomicAdd into a float32 (float64 for double) buffer; the offset and
// mask gradients are one thread per (image, offset group, tap, position) summing over the
// group's channels, without atomics.
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>

#include "deform_driver.h"
#include "deform_math.h"

namespace detops::deform::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChannelBlock = 16;  // channels sampled per im2col thread

// Sizes the kernels need, by value. A chunk is images [b0, b0 + nb), positions
// [p0, p0 + np) of each; np is the extent of the chunk's column rows.
struct Dims {
  int64_t b0, nb, p0, np, C, H, W, K, kernel_w, og, cpg, P, out_w, O;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;

  Dims(const Geometry& g, const Chunk& ch)
      : b0(ch.b0),
        nb(ch.nb),
        p0(ch.p0),
        np(ch.np),
        C(g.in_channels),
        H(g.height),
        W(g.width),
        K(g.taps()),
        kernel_w(g.kernel_w),
        og(g.offset_groups),
        cpg(g.channels_per_offset_group()),
        P(g.positions()),
        out_w(g.out_w),
        O(g.out_channels),
        stride_h(g.p.stride_h),
        stride_w(g.p.stride_w),
        pad_h(g.p.pad_h),
        pad_w(g.p.pad_w),
        dilation_h(g.p.dilation_h),
        dilation_w(g.p.dilation_w) {}
};

// Taps of chunk image b, offset group grp, kernel tap k, output position p (of the image).
template <typename S, typename T>
__device__ Taps<T> taps_at(const Dims& d, const S* offset, int64_t b, int64_t grp, int64_t k,
                           int64_t p) {
  const S* off = offset + (((d.b0 + b) * d.og + grp) * 2 * d.K + 2 * k) * d.P + p;
  const T y = sample_coordinate(p / d.out_w, d.stride_h, d.pad_h, k / d.kernel_w, d.dilation_h,
                                static_cast<T>(off[0]));
  const T x = sample_coordinate(p % d.out_w, d.stride_w, d.pad_w, k % d.kernel_w, d.dilation_w,
                                static_cast<T>(off[d.P]));
  return make_taps(y, x, d.H, d.W);
}

template <typename S, typename T>
__device__ T mask_at(const Dims& d, const S* mask, int64_t b, int64_t grp, int64_t k, int64_t p) {
  return mask == nullptr ? T(1)
                         : static_cast<T>(mask[(((d.b0 + b) * d.og + grp) * d.K + k) * d.P + p]);
}

// One thread per (channel block, image, group, tap, position), position fastest.
template <typename S, typename T>
__global__ void im2col_kernel(Dims d, const S* __restrict__ input, const S* __restrict__ offset,
                              const S* __restrict__ mask, T* __restrict__ col) {
  const int64_t blocks = (d.cpg + kChannelBlock - 1) / kChannelBlock;
  const int64_t n = blocks * d.nb * d.og * d.K * d.np;
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t k = (e / d.np) % d.K;
    const int64_t grp = (e / (d.np * d.K)) % d.og;
    const int64_t b = (e / (d.np * d.K * d.og)) % d.nb;
    const int64_t cb = e / (d.np * d.K * d.og * d.nb);
    const Taps<T> t = taps_at<S, T>(d, offset, b, grp, k, d.p0 + q);
    const T m = mask_at<S, T>(d, mask, b, grp, k, d.p0 + q);
    const int64_t c_begin = grp * d.cpg + cb * kChannelBlock;
    const int64_t c_end = min(c_begin + kChannelBlock, (grp + 1) * d.cpg);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const S* plane = input + ((d.b0 + b) * d.C + c) * d.H * d.W;
      const T v = interpolate(t, load_quad<T>(plane, d.W, t));
      col[((c * d.K + k) * d.nb + b) * d.np + q] = mask == nullptr ? v : v * m;
    }
  }
}

// One thread per column element (channel, tap, image, position): scatter onto the input
// gradient (accumulation type, the whole batch).
template <typename S, typename T>
__global__ void col2im_kernel(Dims d, const S* __restrict__ offset, const S* __restrict__ mask,
                              const T* __restrict__ grad_col, T* __restrict__ grad_input) {
  const int64_t n = d.C * d.K * d.nb * d.np;
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t b = (e / d.np) % d.nb;
    const int64_t k = (e / (d.np * d.nb)) % d.K;
    const int64_t c = e / (d.np * d.nb * d.K);
    const int64_t grp = c / d.cpg;
    const Taps<T> t = taps_at<S, T>(d, offset, b, grp, k, d.p0 + q);
    if (!(t.flags & kInside)) continue;
    const T gv = grad_col[e] * mask_at<S, T>(d, mask, b, grp, k, d.p0 + q);
    const Quad<T> w = bilinear_weights(t);
    T* at = grad_input + ((d.b0 + b) * d.C + c) * d.H * d.W + t.index;
    if (t.flags & kTap00) atomicAdd(at, w.v00 * gv);
    if (t.flags & kTap01) atomicAdd(at + 1, w.v01 * gv);
    if (t.flags & kTap10) atomicAdd(at + d.W, w.v10 * gv);
    if (t.flags & kTap11) atomicAdd(at + d.W + 1, w.v11 * gv);
  }
}

// One thread per (image, group, tap, position): offset (and mask) gradients, summed over
// the group's channels; also writes the chunk's columns (as im2col_kernel would) unless
// col is nullptr.
template <typename S, typename T>
__global__ void coord_kernel(Dims d, const S* __restrict__ input, const S* __restrict__ offset,
                             const S* __restrict__ mask, const T* __restrict__ grad_col,
                             S* __restrict__ grad_offset, S* __restrict__ grad_mask,
                             T* __restrict__ col) {
  const int64_t n = d.nb * d.og * d.K * d.np;
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t k = (e / d.np) % d.K;
    const int64_t grp = (e / (d.np * d.K)) % d.og;
    const int64_t b = e / (d.np * d.K * d.og);
    const int64_t p = d.p0 + q;
    const Taps<T> t = taps_at<S, T>(d, offset, b, grp, k, p);
    const T m = mask_at<S, T>(d, mask, b, grp, k, p);
    const bool any = (t.flags & kAllTaps) != 0;
    T gy = 0, gx = 0, gm = 0;
    for (int64_t c = grp * d.cpg; c < (grp + 1) * d.cpg; ++c) {
      const int64_t at = ((c * d.K + k) * d.nb + b) * d.np + q;
      const S* plane = input + ((d.b0 + b) * d.C + c) * d.H * d.W;
      const Quad<T> v = load_quad<T>(plane, d.W, t);  // reads nothing when no tap exists
      const T sample = interpolate(t, v);
      if (col != nullptr) col[at] = mask == nullptr ? sample : sample * m;
      if (any) {
        const T g = grad_col[at];
        gy += g * grad_y(t, v);
        gx += g * grad_x(t, v);
        if (grad_mask != nullptr) gm += g * sample;
      }
    }
    const int64_t image = d.b0 + b;
    const int64_t off = ((image * d.og + grp) * 2 * d.K + 2 * k) * d.P + p;
    grad_offset[off] = static_cast<S>(mask == nullptr ? gy : m * gy);
    grad_offset[off + d.P] = static_cast<S>(mask == nullptr ? gx : m * gx);
    if (grad_mask != nullptr) {
      grad_mask[((image * d.og + grp) * d.K + k) * d.P + p] = static_cast<S>(gm);
    }
  }
}

// out[b0 + b, o, p0 + q] = prod[o, b, q] + bias[o].
template <typename S, typename T>
__global__ void finish_kernel(Dims d, const T* __restrict__ prod, const S* __restrict__ bias,
                              S* __restrict__ out) {
  const int64_t n = d.nb * d.O * d.np;
  DETOPS_CUDA_LOOP(e, n) {
    const int64_t q = e % d.np;
    const int64_t o = (e / d.np) % d.O;
    const int64_t b = e / (d.np * d.O);
    T v = prod[(o * d.nb + b) * d.np + q];
    if (bias != nullptr) v += static_cast<T>(bias[o]);
    out[((d.b0 + b) * d.O + o) * d.P + d.p0 + q] = static_cast<S>(v);
  }
}

template <typename S, typename T>
class Sampler {
 public:
  Sampler(const Geometry& g, const Chunk& ch, const Tensor& input, const S* offset, const S* mask)
      : d_(g, ch),
        input_(input.const_data_ptr<S>()),
        offset_(offset),
        mask_(mask),
        stream_(detops::cuda::current_stream(input)) {}

  void im2col(T* col) const {
    const int64_t blocks = (d_.cpg + kChannelBlock - 1) / kChannelBlock;
    const int64_t n = blocks * d_.nb * d_.og * d_.K * d_.np;
    im2col_kernel<S, T><<<detops::cuda::grid_for(n, kThreads), kThreads, 0, stream_>>>(
        d_, input_, offset_, mask_, col);
    detops::cuda::check_launch("detops.deform_conv2d im2col_kernel");
  }

  void col2im(const T* grad_col, T* grad_input) const {
    const int64_t n = d_.C * d_.K * d_.nb * d_.np;
    col2im_kernel<S, T><<<detops::cuda::grid_for(n, kThreads), kThreads, 0, stream_>>>(
        d_, offset_, mask_, grad_col, grad_input);
    detops::cuda::check_launch("detops._deform_conv2d_backward col2im_kernel");
  }

  void coord_grad(const T* grad_col, S* grad_offset, S* grad_mask, T* col) const {
    const int64_t n = d_.nb * d_.og * d_.K * d_.np;
    coord_kernel<S, T><<<detops::cuda::grid_for(n, kThreads), kThreads, 0, stream_>>>(
        d_, input_, offset_, mask_, grad_col, grad_offset, grad_mask, col);
    detops::cuda::check_launch("detops._deform_conv2d_backward coord_kernel");
  }

 private:
  Dims d_;
  const S* input_;
  const S* offset_;
  const S* mask_;
  cudaStream_t stream_;
};

struct Backend {
  static constexpr int64_t kColumnBytes = int64_t(256) << 20;  // 256 MiB: few, large products

  template <typename S, typename T>
  using Sampler = cuda::Sampler<S, T>;

  template <typename S, typename T>
  static void finish_output(const Geometry& g, const Chunk& ch, const T* prod, const S* bias,
                            S* out) {
    const Dims d(g, ch);
    const int64_t n = ch.nb * g.out_channels * ch.np;
    finish_kernel<S, T>
        <<<detops::cuda::grid_for(n, kThreads), kThreads, 0, detops::cuda::current_stream()>>>(
            d, prod, bias, out);
    detops::cuda::check_launch("detops.deform_conv2d finish_kernel");
  }
};

Tensor deform_conv2d_cuda(Tensor input, Tensor offset, Tensor weight, std::optional<Tensor> bias,
                          std::optional<Tensor> mask, int64_t stride_h, int64_t stride_w,
                          int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w) {
  torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
  return forward<Backend>(input, offset, weight, bias, mask,
                          {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w});
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> deform_conv2d_backward_cuda(
    Tensor grad_out, Tensor input, Tensor offset, Tensor weight, std::optional<Tensor> mask,
    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
    int64_t dilation_w, bool need_input, bool need_offset_mask, bool need_weight) {
  torch::stable::accelerator::DeviceGuard guard(input.get_device_index());
  return backward<Backend>(grad_out, input, offset, weight, mask,
                           {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w},
                           {need_input, need_offset_mask, need_weight});
}

}  // namespace
}  // namespace detops::deform::cuda

STABLE_TORCH_LIBRARY_IMPL(detops, CUDA, m) {
  m.impl("deform_conv2d", TORCH_BOX(&detops::deform::cuda::deform_conv2d_cuda));
  m.impl("_deform_conv2d_backward", TORCH_BOX(&detops::deform::cuda::deform_conv2d_backward_cuda));
}
