// Where the elements of one chunk of deform_conv2d live, for the CPU and the CUDA kernels
// alike, so that every index formula exists once. All tensors and buffers are contiguous:
//
//   input, grad_input   [B, C, H, W]
//   offset, grad_offset [B, og, K, 2, P]   (y then x offsets of a tap)
//   mask, grad_mask     [B, og, K, P]
//   col, grad_col       [C, K, nb, np]     (the chunk's column buffer; = [G, C * K / G, nb * np])
//   prod                [Oc, nb, np]       (weight @ col)
//   out                 [B, Oc, P]
//
// with C input channels, og offset groups, K = kernel_h * kernel_w taps, P = out_h * out_w
// output positions, and the chunk covering images [b0, b0 + nb), positions [p0, p0 + np).
// Indices called with (b, ..., q) take b relative to the chunk and q relative to p0.
//
// Summation order: every sum the kernels form runs over channels (offset and mask
// gradients) or is a matrix product (deform_entry.h), in the same order on both devices,
// except the input gradient: the CPU adds each plane's contributions in (tap, position)
// order, the CUDA kernel adds them with atomics in whatever order the threads run.
#pragma once

#include <detops/macros.h>

#include <cstdint>

#include "deform_checks.h"
#include "deform_math.h"

namespace detops::deform {

// A piece of the work: images [b0, b0 + nb), output positions [p0, p0 + np) of each.
struct Chunk {
  int64_t b0, nb, p0, np;
};

// The sizes of a chunk, by value (it is a CUDA kernel argument), and its index formulas.
struct Layout {
  int64_t b0, nb, p0, np;
  int64_t C, H, W, K, kernel_w, og, cpg, P, out_w, O;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;

  Layout(const Geometry& g, const Chunk& ch)
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

  DETOPS_INLINE int64_t group_of(int64_t c) const { return c / cpg; }

  // First element of the y offsets of (image b, group grp, tap k); the x offsets are P later.
  DETOPS_INLINE int64_t offset_row(int64_t b, int64_t grp, int64_t k) const {
    return (((b0 + b) * og + grp) * 2 * K + 2 * k) * P;
  }
  // First element of the mask of (image b, group grp, tap k).
  DETOPS_INLINE int64_t mask_row(int64_t b, int64_t grp, int64_t k) const {
    return (((b0 + b) * og + grp) * K + k) * P;
  }
  // First element of the (image b, channel c) plane of input and grad_input.
  DETOPS_INLINE int64_t plane(int64_t b, int64_t c) const { return ((b0 + b) * C + c) * H * W; }
  DETOPS_INLINE int64_t column(int64_t c, int64_t k, int64_t b, int64_t q) const {
    return ((c * K + k) * nb + b) * np + q;
  }
  DETOPS_INLINE int64_t product(int64_t o, int64_t b, int64_t q) const {
    return (o * nb + b) * np + q;
  }
  DETOPS_INLINE int64_t output(int64_t b, int64_t o, int64_t q) const {
    return ((b0 + b) * O + o) * P + p0 + q;
  }

  // Sampling coordinates of kernel row i / column j at output row oy / column ox.
  template <typename T>
  DETOPS_INLINE T sample_y(int64_t oy, int64_t i, T offset) const {
    return sample_coordinate(oy, stride_h, pad_h, i, dilation_h, offset);
  }
  template <typename T>
  DETOPS_INLINE T sample_x(int64_t ox, int64_t j, T offset) const {
    return sample_coordinate(ox, stride_w, pad_w, j, dilation_w, offset);
  }
};

// Taps of (chunk image b, offset group grp, kernel tap k, output position p of the image).
// The CPU kernels walk positions in order and form the same coordinates incrementally.
template <typename T, typename S>
DETOPS_INLINE Taps<T> taps_at(const Layout& d, const S* offset, int64_t b, int64_t grp, int64_t k,
                              int64_t p) {
  const S* off = offset + d.offset_row(b, grp, k) + p;
  const T y = d.sample_y(p / d.out_w, k / d.kernel_w, static_cast<T>(off[0]));
  const T x = d.sample_x(p % d.out_w, k % d.kernel_w, static_cast<T>(off[d.P]));
  return make_taps(y, x, d.H, d.W);
}

// The mask value of (chunk image b, group grp, tap k, position p), 1 without a mask.
template <typename T, typename S>
DETOPS_INLINE T mask_at(const Layout& d, const S* mask, int64_t b, int64_t grp, int64_t k,
                        int64_t p) {
  return mask == nullptr ? T(1) : static_cast<T>(mask[d.mask_row(b, grp, k) + p]);
}

}  // namespace detops::deform
