// CPU kernels of detops::multi_scale_deformable_attention and its backward.
//
// Forward: one task per output row (image, query, head); the row's D sums run over levels
// and points in order, vectorised along D (the sampled value rows are contiguous).
//
// Backward: one task per (image, head, level), which alone computes the location and
// weight gradients of the samples of that level and head (every query and point), and
// alone adds into the value-gradient rows of that level and head (which only those samples
// read), in (query, point) order. Every output element thus has exactly one writer and a
// fixed summation order: no atomics, and the result does not depend on the number of
// threads. The tasks cost the same (Q * P samples each) whatever the level size.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <vector>

#include "deform_attn_entry.h"
#include "deform_attn_math.h"

namespace detops::deform_attn::cpu {
namespace {

// Grain for parallel_for over items of roughly `work` element operations each: pieces of
// at least `min_work` operations, so small problems stay on one thread.
inline int64_t grain_for(int64_t work, int64_t min_work = int64_t(1) << 15) {
  return std::max<int64_t>(1, min_work / std::max<int64_t>(1, work));
}

// The four neighbour rows of value (row stride `stride`) of a sample, or `zeros` for
// neighbours outside the level.
template <typename S, typename T>
struct Rows {
  const S *r00, *r01, *r10, *r11;
};

template <typename S, typename T>
inline Rows<S, T> rows_of(const Corners<T>& c, const S* level, int64_t width, int64_t stride,
                          const S* zeros) {
  // Offsets are formed only for neighbours that exist: index may be -width - 1.
  return {(c.flags & k00) ? level + c.index * stride : zeros,
          (c.flags & k01) ? level + (c.index + 1) * stride : zeros,
          (c.flags & k10) ? level + (c.index + width) * stride : zeros,
          (c.flags & k11) ? level + (c.index + width + 1) * stride : zeros};
}

struct DeformAttnBackend : detops::CpuBackend {
  template <typename S, typename T>
  static void forward(const Geometry& g, const Inputs<S>& in, S* out) {
    const int64_t rows = g.B * g.Q * g.H;
    const int64_t LP = g.L * g.P;
    torch::stable::parallel_for(0, rows, grain_for(LP * g.D * 8), [&](int64_t begin, int64_t end) {
      const Geometry d = g;  // locals: sizes stay in registers across the stores
      const int64_t D = d.D;
      const int64_t stride = d.H * D;  // between value rows of one head
      std::vector<T> acc_buffer(D);
      T* acc = acc_buffer.data();
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (d.Q * d.H);
        const int64_t h = r % d.H;
        const S* loc = in.loc + r * LP * 2;
        const S* attn = in.attn + r * LP;
        const S* head = in.value + (b * d.S * d.H + h) * D;
        std::fill(acc, acc + D, T(0));
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t* level = in.levels + l * kLevelFields;
          const int64_t height = level[0], width = level[1];
          const S* first = head + level[2] * stride;
          for (int64_t p = 0; p < d.P; ++p) {
            const int64_t i = l * d.P + p;
            const Corners<T> c = make_corners(static_cast<T>(loc[2 * i]),
                                              static_cast<T>(loc[2 * i + 1]), height, width);
            const Quad<T> w = scaled_weights(c, static_cast<T>(attn[i]));
            const Rows<S, T> v = rows_of(c, first, width, stride, in.zeros);
            for (int64_t k = 0; k < D; ++k) {
              acc[k] += weighted_sample(w.v00, w.v01, w.v10, w.v11, static_cast<T>(v.r00[k]),
                                        static_cast<T>(v.r01[k]), static_cast<T>(v.r10[k]),
                                        static_cast<T>(v.r11[k]));
            }
          }
        }
        S* o = out + r * D;
        for (int64_t k = 0; k < D; ++k) o[k] = static_cast<S>(acc[k]);
      }
    });
  }

  // Deterministic with or without the flag: each task owns its value rows (see above).
  template <typename S, typename T>
  static void backward(const Geometry& g, const Inputs<S>& in, const S* grad_out,
                       Tensor* grad_value_tensor, S* grad_loc, S* grad_attn,
                       bool /*deterministic*/) {
    T* grad_value =
        grad_value_tensor != nullptr ? grad_value_tensor->mutable_data_ptr<T>() : nullptr;
    const int64_t tasks = g.B * g.H * g.L;
    torch::stable::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      const Geometry d = g;
      const int64_t D = d.D, P = d.P, LP = d.L * d.P;
      const int64_t stride = d.H * D;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / (d.H * d.L);
        const int64_t h = (task / d.L) % d.H;
        const int64_t l = task % d.L;
        const int64_t* level = in.levels + l * kLevelFields;
        const int64_t height = level[0], width = level[1];
        const int64_t first = (b * d.S + level[2]) * stride + h * D;  // row 0 of the level
        const S* value = in.value + first;
        T* gv = grad_value != nullptr ? grad_value + first : nullptr;
        for (int64_t q = 0; q < d.Q; ++q) {
          const int64_t r = (b * d.Q + q) * d.H + h;  // output row
          const S* go = grad_out + r * D;
          const int64_t i0 = r * LP + l * P;  // the samples' first index in attn
          for (int64_t p = 0; p < P; ++p) {
            const int64_t i = i0 + p;
            const T a = static_cast<T>(in.attn[i]);
            const Corners<T> c = make_corners(static_cast<T>(in.loc[2 * i]),
                                              static_cast<T>(in.loc[2 * i + 1]), height, width);
            if (grad_loc != nullptr) {
              const Rows<S, T> v = rows_of(c, value, width, stride, in.zeros);
              const Quad<T> s = corner_dots<T>(go, v.r00, v.r01, v.r10, v.r11, D);
              const SampleGrad<T> sg = sample_grad(c, s, a, height, width);
              grad_attn[i] = static_cast<S>(sg.weight);
              grad_loc[2 * i] = static_cast<S>(sg.x);
              grad_loc[2 * i + 1] = static_cast<S>(sg.y);
            }
            if (gv != nullptr && c.flags != 0) {
              const Quad<T> w = scaled_weights(c, a);
              if (c.flags & k00) add_row(gv + c.index * stride, w.v00, go, D);
              if (c.flags & k01) add_row(gv + (c.index + 1) * stride, w.v01, go, D);
              if (c.flags & k10) add_row(gv + (c.index + width) * stride, w.v10, go, D);
              if (c.flags & k11) add_row(gv + (c.index + width + 1) * stride, w.v11, go, D);
            }
          }
        }
      }
    });
  }

 private:
  // dst[k] += w * src[k], k < D: one neighbour's share of a sample's gradient.
  template <typename S, typename T>
  static void add_row(T* dst, T w, const S* src, int64_t D) {
    for (int64_t k = 0; k < D; ++k) dst[k] += w * static_cast<T>(src[k]);
  }
};

}  // namespace
}  // namespace detops::deform_attn::cpu

STABLE_TORCH_LIBRARY_IMPL(detops, CPU, m) {
  using Entry = detops::deform_attn::DeformAttnEntry<detops::deform_attn::cpu::DeformAttnBackend>;
  m.impl("multi_scale_deformable_attention", TORCH_BOX(&Entry::multi_scale_deformable_attention));
  m.impl("_multi_scale_deformable_attention_backward",
         TORCH_BOX(&Entry::multi_scale_deformable_attention_backward));
}
