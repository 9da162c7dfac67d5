// CUDA kernels of detops::roi_pool and detops::_roi_pool_backward: one thread per output
// bin (bin_max: the maximum and its position, as on CPU); the backward adds each bin's
// gradient at its argmax (roi_cuda.cuh's accumulate_grad), in float32 (float64). A RoI with an
// invalid batch index gets zeros and argmax -1, and no gradient.
#include <torch/csrc/stable/library.h>

#include "cuda/roi_cuda.cuh"
#include "roi_entry.h"

namespace detops::roi::cuda {
namespace {

struct Params {
  int64_t rois, batch, channels, height, width, pooled_h, pooled_w;
};

template <typename S, typename T>
__global__ void forward_kernel(const S* __restrict__ input, Strides st, const S* __restrict__ rois,
                               Params p, T scale, S* __restrict__ out,
                               int32_t* __restrict__ argmax) {
  DETOPS_CUDA_LOOP(i, p.rois * p.channels * p.pooled_h * p.pooled_w) {
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const S* roi = rois + 5 * at.roi;
    const int64_t b = batch_index(roi[0], p.batch);
    const PoolBox<T> box =
        pool_box(static_cast<T>(roi[1]), static_cast<T>(roi[2]), static_cast<T>(roi[3]),
                 static_cast<T>(roi[4]), scale, PoolOp::kRoiPool, p.pooled_h, p.pooled_w);
    int64_t h0 = 0, h1 = 0, w0 = 0, w1 = 0;
    if (box.valid && b >= 0) {
      pool_bin(box.start_h, box.bin_h, at.ph, pool_limit(p.height, PoolOp::kRoiPool), h0, h1);
      pool_bin(box.start_w, box.bin_w, at.pw, pool_limit(p.width, PoolOp::kRoiPool), w0, w1);
    }
    // An invalid RoI's bins are empty: its plane pointer is never read.
    const S* plane = b >= 0 ? input + st.plane(b, at.channel) : input;
    T best;
    int32_t where;
    bin_max<1, S, T>(plane, st.c, st.y, st.x, p.width, h0, h1, w0, w1, &best, &where);
    out[i] = static_cast<S>(best);
    argmax[i] = where;
  }
}

template <typename S, typename T, typename Add>
__global__ void backward_kernel(const S* __restrict__ grad, Strides gs,
                                const int32_t* __restrict__ argmax, const S* __restrict__ rois,
                                Params p, T* __restrict__ grad_input, Add add) {
  const int64_t area = p.height * p.width;
  DETOPS_CUDA_LOOP(i, p.rois * p.channels * p.pooled_h * p.pooled_w) {
    const int64_t where = argmax[i];
    if (where < 0 || where >= area) continue;
    const BinIndex at = decode_bin(i, p.channels, p.pooled_h, p.pooled_w);
    const int64_t b = batch_index(rois[5 * at.roi], p.batch);
    if (b < 0) continue;
    const T g =
        static_cast<T>(grad[at.roi * gs.n + at.channel * gs.c + at.ph * gs.y + at.pw * gs.x]);
    add(grad_input + (b * p.channels + at.channel) * area + where, g);
  }
}

Params params_of(const RoiArgs& a) {
  return {a.num_rois(), a.batch, a.channels, a.height, a.width, a.pooled_h, a.pooled_w};
}

struct RoiPoolBackend : RoiCudaBackend {
  template <typename S>
  static void forward(const RoiArgs& a, const Tensor& input, Tensor& out, Tensor& argmax) {
    using T = acc_t<S>;
    detops::cuda::launch<forward_kernel<S, T>>(
        a.op, detops::cuda::over(out.numel(), detops::cuda::current_stream(input)),
        input.const_data_ptr<S>(), strides_of(input), a.rois.const_data_ptr<S>(), params_of(a),
        static_cast<T>(a.scale), out.mutable_data_ptr<S>(), argmax.mutable_data_ptr<int32_t>());
  }

  template <typename S>
  static void backward(const RoiArgs& a, const Tensor& grad, const Tensor& argmax,
                       Tensor& grad_input) {
    using T = acc_t<S>;
    accumulate_grad<S>(a, grad_input, [&](auto add, T* accumulator) {
      detops::cuda::launch<backward_kernel<S, T, decltype(add)>>(
          a.op, detops::cuda::over(grad.numel(), detops::cuda::current_stream(grad)),
          grad.const_data_ptr<S>(), strides_of(grad), argmax.const_data_ptr<int32_t>(),
          a.rois.const_data_ptr<S>(), params_of(a), accumulator, add);
    });
  }
};

}  // namespace
}  // namespace detops::roi::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::roi::RoiPoolEntry<detops::roi::cuda::RoiPoolBackend>;
  m.impl("roi_pool", TORCH_BOX(&Entry::roi_pool));
  m.impl("_roi_pool_backward", TORCH_BOX(&Entry::roi_pool_backward));
}
