// CUDA kernels of detops::multi_scale_deformable_attention and its backward. The sampling
// math is deform_attn_math.h (shared with the CPU kernels), the entry points, checks and
// allocation deform_attn_entry.h. Here: thread mapping, atomics and launches only.
//
// Forward: one thread per output element (row, d), d fastest, so the threads of a row read
// neighbouring elements of each value row (coalesced) and sum levels and points in the
// CPU kernel's order: the same result, bit for bit.
// Backward: one thread per sample (row, level, point): its location and weight gradients
// from corner_dots() as on the CPU (bitwise equal again), and its share of the value
// gradient added into a float32 (float64 for double) buffer with float atomics, in whatever
// order the threads run, or order-free (detops/scatter_add.cuh: the kernel runs twice).
// Level table: one thread reads value_spatial_shapes (and value_level_start_index) on the
// device and checks them there; where the levels do not describe value, every output and
// gradient element is NaN (the kernels read no level then).
#include <detops/macros.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <detops/cuda_launch.cuh>
#include <detops/scatter_add.cuh>
#include <limits>

#include "deform_attn_entry.h"
#include "deform_attn_math.h"

namespace detops::deform_attn::cuda {
namespace {

// The checks of levels_on_host (deform_attn_checks.h), made on the device; the last entry of
// the table says whether they all hold.
__global__ void level_table_kernel(int64_t L, int64_t S, const int64_t* __restrict__ shapes,
                                   const int64_t* __restrict__ starts,
                                   int64_t* __restrict__ table) {
  bool ok = true;
  int64_t total = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
    // Both below 2^31 first, so that h * w cannot overflow.
    const bool fits =
        h > 0 && w > 0 && h < kMaxLevelSize && w < kMaxLevelSize && h * w < kMaxLevelSize;
    table[l * kLevelFields] = h;
    table[l * kLevelFields + 1] = w;
    table[l * kLevelFields + 2] = total;
    if (starts != nullptr && starts[l] != total) ok = false;
    if (!fits) ok = false;
    // total stays below L * 2^31: no overflow.
    if (fits) total += h * w;
  }
  table[L * kLevelFields] = ok && total == S ? 1 : 0;
}

template <typename T>
DETOPS_HOST_DEVICE T not_a_number() {
  return std::numeric_limits<T>::quiet_NaN();
}

template <typename S>
DETOPS_HOST_DEVICE bool levels_valid(const Geometry& g, const Inputs<S>& in) {
  return in.levels[g.L * kLevelFields] != 0;
}

// data[0, n) = NaN where the level table says the levels do not describe value.
template <typename T>
__global__ void invalid_levels_kernel(int64_t n, const int64_t* __restrict__ valid,
                                      T* __restrict__ data) {
  if (*valid != 0) return;
  DETOPS_CUDA_LOOP(i, n) {
    data[i] = not_a_number<T>();
  }
}

template <typename S, typename T>
__global__ void forward_kernel(Geometry g, int64_t n, Inputs<S> in, S* __restrict__ out) {
  const bool valid = levels_valid(g, in);
  DETOPS_CUDA_LOOP(e, n) {
    if (!valid) {
      out[e] = static_cast<S>(not_a_number<T>());
      continue;
    }
    const int64_t k = e % g.D;
    const int64_t r = e / g.D;
    const int64_t b = r / (g.Q * g.H);
    const int64_t h = r % g.H;
    const int64_t LP = g.L * g.P;
    const int64_t stride = g.H * g.D;
    const S* loc = in.loc + r * LP * 2;
    const S* attn = in.attn + r * LP;
    const S* head = in.value + (b * g.S * g.H + h) * g.D + k;
    T acc = 0;
    for (int64_t l = 0; l < g.L; ++l) {
      const int64_t* level = in.levels + l * kLevelFields;
      const int64_t height = level[0], width = level[1];
      const S* first = head + level[2] * stride;
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t i = l * g.P + p;
        const Corners<T> c =
            make_corners(static_cast<T>(loc[2 * i]), static_cast<T>(loc[2 * i + 1]), height, width);
        const Quad<T> w = scaled_weights(c, static_cast<T>(attn[i]));
        const int64_t at = c.index * stride;  // may be negative: read only flagged neighbours
        const T v00 = (c.flags & k00) ? static_cast<T>(first[at]) : T(0);
        const T v01 = (c.flags & k01) ? static_cast<T>(first[at + stride]) : T(0);
        const T v10 = (c.flags & k10) ? static_cast<T>(first[at + width * stride]) : T(0);
        const T v11 = (c.flags & k11) ? static_cast<T>(first[at + (width + 1) * stride]) : T(0);
        acc += weighted_sample(w.v00, w.v01, w.v10, w.v11, v00, v01, v10, v11);
      }
    }
    out[e] = static_cast<S>(acc);
  }
}

template <typename T, typename S, typename Add>
__device__ void add_row(T* dst, T w, const S* src, int64_t D, const Add& add) {
  for (int64_t k = 0; k < D; ++k) add(dst + k, w * static_cast<T>(src[k]));
}

template <typename S, typename T, typename Add>
__global__ void backward_kernel(Geometry g, int64_t n, Inputs<S> in, const S* __restrict__ grad_out,
                                T* __restrict__ grad_value, S* __restrict__ grad_loc,
                                S* __restrict__ grad_attn, Add add) {
  const bool valid = levels_valid(g, in);
  DETOPS_CUDA_LOOP(i, n) {
    if (!valid) {  // grad_value is filled by invalid_levels_kernel
      if (grad_loc != nullptr) {
        grad_attn[i] = static_cast<S>(not_a_number<T>());
        grad_loc[2 * i] = grad_loc[2 * i + 1] = static_cast<S>(not_a_number<T>());
      }
      continue;
    }
    const int64_t LP = g.L * g.P;
    const int64_t r = i / LP;
    const int64_t l = (i % LP) / g.P;
    const int64_t b = r / (g.Q * g.H);
    const int64_t h = r % g.H;
    const int64_t D = g.D;
    const int64_t stride = g.H * D;
    const int64_t* level = in.levels + l * kLevelFields;
    const int64_t height = level[0], width = level[1];
    const int64_t first = (b * g.S + level[2]) * stride + h * D;
    const S* go = grad_out + r * D;
    const T a = static_cast<T>(in.attn[i]);
    const Corners<T> c = make_corners(static_cast<T>(in.loc[2 * i]),
                                      static_cast<T>(in.loc[2 * i + 1]), height, width);
    if (grad_loc != nullptr) {
      const S* value = in.value + first;
      const S* r00 = (c.flags & k00) ? value + c.index * stride : in.zeros;
      const S* r01 = (c.flags & k01) ? value + (c.index + 1) * stride : in.zeros;
      const S* r10 = (c.flags & k10) ? value + (c.index + width) * stride : in.zeros;
      const S* r11 = (c.flags & k11) ? value + (c.index + width + 1) * stride : in.zeros;
      const Quad<T> s = corner_dots<T>(go, r00, r01, r10, r11, D);
      const SampleGrad<T> sg = sample_grad(c, s, a, height, width);
      grad_attn[i] = static_cast<S>(sg.weight);
      grad_loc[2 * i] = static_cast<S>(sg.x);
      grad_loc[2 * i + 1] = static_cast<S>(sg.y);
    }
    if (grad_value != nullptr && c.flags != 0) {
      const Quad<T> w = scaled_weights(c, a);
      T* gv = grad_value + first;
      if (c.flags & k00) add_row(gv + c.index * stride, w.v00, go, D, add);
      if (c.flags & k01) add_row(gv + (c.index + 1) * stride, w.v01, go, D, add);
      if (c.flags & k10) add_row(gv + (c.index + width) * stride, w.v10, go, D, add);
      if (c.flags & k11) add_row(gv + (c.index + width + 1) * stride, w.v11, go, D, add);
    }
  }
}

struct DeformAttnBackend : detops::CudaBackend {
  // Below the entry point's guard: the current stream is value's.
  static void level_table(const Geometry& g, const int64_t* shapes, const int64_t* starts,
                          int64_t* table) {
    detops::cuda::launch<level_table_kernel>(
        "detops.multi_scale_deformable_attention level_table_kernel",
        detops::cuda::Shape(dim3(1), dim3(1), detops::cuda::current_stream()), g.L, g.S, shapes,
        starts, table);
  }

  template <typename S, typename T>
  static void forward(const Geometry& g, const Inputs<S>& in, S* out) {
    const int64_t n = g.B * g.Q * g.H * g.D;
    detops::cuda::launch<forward_kernel<S, T>>(
        "detops.multi_scale_deformable_attention forward_kernel",
        detops::cuda::over(n, detops::cuda::current_stream()), g, n, in, out);
  }

  template <typename S, typename T>
  static void backward(const Geometry& g, const Inputs<S>& in, const S* grad_out,
                       Tensor* grad_value, S* grad_loc, S* grad_attn, bool deterministic) {
    const char* op = "detops._multi_scale_deformable_attention_backward backward_kernel";
    const int64_t n = g.B * g.Q * g.H * g.L * g.P;
    const auto run = [&](auto add, T* value_grad) {
      detops::cuda::launch<backward_kernel<S, T, decltype(add)>>(
          op, detops::cuda::over(n, detops::cuda::current_stream()), g, n, in, grad_out, value_grad,
          grad_loc, grad_attn, add);
    };
    if (grad_value == nullptr) return run(detops::cuda::AtomicAdd{}, nullptr);
    // Deterministic: the kernel runs twice; the second rewrites the same location and
    // weight gradients.
    T* data = grad_value->mutable_data_ptr<T>();
    detops::cuda::scatter_add<T>(op, *grad_value, deterministic, [&](auto add) { run(add, data); });
    const int64_t size = grad_value->numel();
    if (size == 0) return;
    detops::cuda::launch<invalid_levels_kernel<T>>(
        "detops._multi_scale_deformable_attention_backward invalid_levels_kernel",
        detops::cuda::over(size, detops::cuda::current_stream()), size,
        in.levels + g.L * kLevelFields, data);
  }
};

}  // namespace
}  // namespace detops::deform_attn::cuda

DETOPS_CUDA_LIBRARY_IMPL(m) {
  using Entry = detops::deform_attn::DeformAttnEntry<detops::deform_attn::cuda::DeformAttnBackend>;
  m.impl("multi_scale_deformable_attention", TORCH_BOX(&Entry::multi_scale_deformable_attention));
  m.impl("_multi_scale_deformable_attention_backward",
         TORCH_BOX(&Entry::multi_scale_deformable_attention_backward));
}
