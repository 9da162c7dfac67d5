// Per-pair math of the box-pair overlap measures, written once for the CPU and CUDA kernels
// of two packages: nms (pairwise N x M generalized_box_iou, distance_box_iou,
// complete_box_iou) and losses (element-wise generalized/distance/complete_box_iou_loss).
// Boxes are (x1, y1, x2, y2). Values and gradients follow torchvision 0.29.1's formulas
// (torchvision/ops/boxes.py, giou_loss.py, diou_loss.py, ciou_loss.py, _utils.py) operation
// for operation, so degenerate input (empty, inverted, NaN, infinite boxes) gives what they
// give:
//
// - The two families differ. The pairwise measures clamp the intersection and the enclosing
//   box's sides at 0 and divide by the union without eps; the losses count an intersection
//   only when both sides are > 0, add eps to the union and the enclosing area, and do not
//   clamp the enclosing box.
// - Gradients are those autograd takes through the formulas: torch.maximum / minimum give
//   each argument the whole gradient, or half each on a tie; clamp(min=0) passes it where
//   its input is > 0 (not at 0, not for NaN); the loss's masked intersection passes none where the
//   mask is false. complete_box_iou and complete_box_iou_loss compute their alpha under
//   torch.no_grad(): it is a constant to the gradient.
// - T is the compute type (float32 for float16 / bfloat16 boxes: both torchvision families
//   upcast). One exception: generalized_box_iou does not upcast the boxes, only the
//   differences of coordinates, so those are rounded to the storage type S first
//   (`narrow<S>`); every other measure passes S = T.
// - complete_box_iou_loss calls its DIoU part without eps, so that part always uses 1e-7;
//   the caller's eps enters alpha only.
//
// What the header does not fix: rounding beyond one operation. Gradients are summed over
// pairs by the callers in an order of their own (documented there), so devices agree to a
// tolerance, not bit for bit. CIoU's atan is atan_value below, not torch's: the two may differ
// by about 2 units in the last place in float32 (and the C library's in float64).
//
// Every function is DETOPS_FORCE_INLINE and branch-free where it matters (selects, an atan
// without calls), so the CPU loops over pairs vectorise.
#pragma once

#include <detops/macros.h>

#include <cmath>
#include <type_traits>

namespace detops::box_pair {

// atan(x) for float32 without a library call, so a loop calling it vectorises: reduced to
// |t| <= tan(pi/8) by atan(x) = pi/2 + atan(-1/x) above tan(3pi/8) and pi/4 + atan((x-1)/(x+1))
// above tan(pi/8), then t + t^3 P(t^2) with P of degree 4 (coefficients fitted here for
// relative error, 4e-9 on the reduced range), the offsets added in two parts. Measured against
// float64 atan on every 7th positive float32: at most 1.9 units in the last place (the C
// library's: 0.84). Exact at 0 and +-inf, odd (-0 stays -0), NaN for NaN.
DETOPS_FORCE_INLINE float atan_value(float x) {
  const float ax = x < 0.0f ? -x : x;
  const bool far = ax > 2.41421356f;   // tan(3 pi / 8)
  const bool mid = ax > 0.414213562f;  // tan(pi / 8)
  const float t = far ? -1.0f / ax : (mid ? (ax - 1.0f) / (ax + 1.0f) : ax);
  const float offset = far ? 1.57079637f : (mid ? 0.785398185f : 0.0f);
  const float offset_lo = far ? -4.37113883e-08f : (mid ? -2.18556941e-08f : 0.0f);
  const float z = t * t;
  float p = -6.337728351e-02f;
  p = p * z + 1.069432646e-01f;
  p = p * z + -1.425686479e-01f;
  p = p * z + 1.999916434e-01f;
  p = p * z + -3.333332539e-01f;
  const float r = offset + (t + (t * (z * p) + offset_lo));
  return x < 0.0f ? -r : (x == 0.0f ? x : r);  // r >= 0; zeros keep their sign
}

DETOPS_FORCE_INLINE double atan_value(double x) {
#ifdef __CUDA_ARCH__
  return ::atan(x);
#else
  return std::atan(x);
#endif
}

template <typename T>
struct Box {
  T x1, y1, x2, y2;
};

// A box with the terms every pair needs, computed once per box.
template <typename T>
struct Terms {
  T x1, y1, x2, y2;
  T w, h;    // x2 - x1, y2 - y1
  T area;    // w * h
  T cx, cy;  // centre, (x1 + x2) / 2 (the losses' x2 + x1 is the same sum)
  T angle;   // atan(w / h), CIoU's aspect term (0 unless asked for)
};

template <typename T>
DETOPS_FORCE_INLINE Terms<T> terms(T x1, T y1, T x2, T y2, bool with_angle) {
  Terms<T> t;
  t.x1 = x1;
  t.y1 = y1;
  t.x2 = x2;
  t.y2 = y2;
  t.w = x2 - x1;
  t.h = y2 - y1;
  t.area = t.w * t.h;
  t.cx = (x1 + x2) / T(2);
  t.cy = (y1 + y2) / T(2);
  t.angle = with_angle ? atan_value(t.w / t.h) : T(0);
  return t;
}

// The gradient of one pair's value with respect to both boxes.
template <typename T>
struct PairGrad {
  Box<T> a, b;
};

enum class Measure { kGiou, kDiou, kCiou };

// 4 / pi^2 rounded to T, as torchvision's Python double meets a T tensor.
template <typename T>
DETOPS_FORCE_INLINE T aspect_scale() {
  return static_cast<T>(0.40528473456935108578);
}

// x rounded to S and back (no-op when S is T).
template <typename S, typename T>
DETOPS_FORCE_INLINE T narrow(T x) {
  return static_cast<T>(static_cast<S>(x));
}

// torch.maximum / torch.minimum: NaN in either argument gives NaN.
template <typename T>
DETOPS_FORCE_INLINE T nan_max(T a, T b) {
  return (a > b || a != a) ? a : b;
}
template <typename T>
DETOPS_FORCE_INLINE T nan_min(T a, T b) {
  return (a < b || a != a) ? a : b;
}

// clamp(min=0), NaN stays NaN; its gradient passes where x > 0 (torch gives none at 0).
template <typename T>
DETOPS_FORCE_INLINE T clamp0(T x) {
  return x < T(0) ? T(0) : x;
}
template <typename T>
DETOPS_FORCE_INLINE T clamp0_grad(T x, T g) {
  return x > T(0) ? g : T(0);
}

// The share of gradient g that torch.maximum(a, b) (`is_max`) or torch.minimum(a, b) gives
// its first argument a and its second b: all to the larger (smaller), half each on a tie,
// and all to both when a NaN makes every comparison false.
template <typename T>
struct Split {
  T first, second;
};
template <typename T>
DETOPS_FORCE_INLINE Split<T> split(bool is_max, T a, T b, T g) {
  if (a == b) return {g / T(2), g / T(2)};
  const bool first_loses = is_max ? a < b : a > b;
  const bool second_loses = is_max ? a > b : a < b;
  return {first_loses ? T(0) : g, second_loses ? T(0) : g};
}

// Gradient g of torch.maximum / minimum (av, bv), added to the two coordinates' gradients.
template <typename T>
DETOPS_FORCE_INLINE void add_split(bool is_max, T av, T bv, T g, T& ga, T& gb) {
  const Split<T> s = split(is_max, av, bv, g);
  ga += s.first;
  gb += s.second;
}

// ---------------------------------------------------------------------------- pairwise
// torchvision.ops.generalized_box_iou / distance_box_iou / complete_box_iou of one pair.

template <typename T>
struct PairwiseParts {
  T ltx, lty, rbx, rby;  // intersection corners (torch.max / torch.min of the corners)
  T dx, dy;              // rbx - ltx, rby - lty (GIoU: rounded to S)
  T ix, iy;              // clamp0(dx), clamp0(dy)
  T inter, uni, iou;
  T lix, liy, rix, riy;  // enclosing corners
  T ex_raw, ey_raw;      // rix - lix, riy - liy (GIoU: rounded to S)
  T ex, ey;              // clamped
};

template <Measure M, typename S, typename T>
DETOPS_FORCE_INLINE PairwiseParts<T> pairwise_parts(const Terms<T>& a, const Terms<T>& b) {
  using R = std::conditional_t<M == Measure::kGiou, S, T>;
  PairwiseParts<T> p;
  p.ltx = nan_max(a.x1, b.x1);
  p.lty = nan_max(a.y1, b.y1);
  p.rbx = nan_min(a.x2, b.x2);
  p.rby = nan_min(a.y2, b.y2);
  p.dx = narrow<R>(p.rbx - p.ltx);
  p.dy = narrow<R>(p.rby - p.lty);
  p.ix = clamp0(p.dx);
  p.iy = clamp0(p.dy);
  p.inter = p.ix * p.iy;
  p.uni = (a.area + b.area) - p.inter;
  p.iou = p.inter / p.uni;
  p.lix = nan_min(a.x1, b.x1);
  p.liy = nan_min(a.y1, b.y1);
  p.rix = nan_max(a.x2, b.x2);
  p.riy = nan_max(a.y2, b.y2);
  p.ex_raw = narrow<R>(p.rix - p.lix);
  p.ey_raw = narrow<R>(p.riy - p.liy);
  p.ex = clamp0(p.ex_raw);
  p.ey = clamp0(p.ey_raw);
  return p;
}

template <typename T>
DETOPS_FORCE_INLINE T diou_diagonal(const PairwiseParts<T>& p, T eps) {
  return (p.ex * p.ex + p.ey * p.ey) + eps;
}

template <typename T>
DETOPS_FORCE_INLINE T centre_distance(const Terms<T>& a, const Terms<T>& b) {
  const T dx = a.cx - b.cx, dy = a.cy - b.cy;
  return dx * dx + dy * dy;
}

// The aspect term v of CIoU for boxes a (pred) and b (gt): 4/pi^2 (atan a - atan b)^2.
template <typename T>
DETOPS_FORCE_INLINE T aspect_v(const Terms<T>& a, const Terms<T>& b) {
  const T d = a.angle - b.angle;
  return aspect_scale<T>() * (d * d);
}

// The value for the pair (boxes1[i], boxes2[j]); S is the boxes' storage type.
template <Measure M, typename S, typename T>
DETOPS_FORCE_INLINE T pairwise_value(const Terms<T>& a, const Terms<T>& b, T eps) {
  const PairwiseParts<T> p = pairwise_parts<M, S>(a, b);
  if constexpr (M == Measure::kGiou) {
    const T areai = p.ex * p.ey;
    return p.iou - (areai - p.uni) / areai;
  } else {
    const T diou = p.iou - centre_distance(a, b) / diou_diagonal(p, eps);
    if constexpr (M == Measure::kDiou) {
      return diou;
    } else {
      const T v = aspect_v(a, b);
      const T alpha = v / (((T(1) - p.iou) + v) + eps);
      return diou - alpha * v;
    }
  }
}

// Backward of the box areas (w * h) and of atan(w / h) for one box: gradients g_area and
// g_angle, added to the box's coordinates.
template <typename T>
DETOPS_FORCE_INLINE void add_area_grad(const Terms<T>& t, T g_area, Box<T>& g) {
  const T gw = g_area * t.h, gh = g_area * t.w;
  g.x2 += gw;
  g.x1 -= gw;
  g.y2 += gh;
  g.y1 -= gh;
}
template <typename T>
DETOPS_FORCE_INLINE void add_angle_grad(const Terms<T>& t, T g_angle, Box<T>& g) {
  const T q = t.w / t.h;
  const T gq = g_angle / (T(1) + q * q);
  const T gw = gq / t.h;
  const T gh = -gq * (q / t.h);
  g.x2 += gw;
  g.x1 -= gw;
  g.y2 += gh;
  g.y1 -= gh;
}

// Backward of the intersection over union: gradients of iou (g_iou) and of the union (from
// elsewhere, g_uni) to both boxes.
template <typename T>
DETOPS_FORCE_INLINE void pairwise_iou_grad(const Terms<T>& a, const Terms<T>& b,
                                           const PairwiseParts<T>& p, T g_iou, T g_uni,
                                           PairGrad<T>& g) {
  T g_inter = g_iou / p.uni;
  g_uni -= g_iou * (p.iou / p.uni);
  g_inter -= g_uni;
  add_area_grad(a, g_uni, g.a);
  add_area_grad(b, g_uni, g.b);
  const T g_dx = clamp0_grad(p.dx, g_inter * p.iy);
  const T g_dy = clamp0_grad(p.dy, g_inter * p.ix);
  add_split(false, a.x2, b.x2, g_dx, g.a.x2, g.b.x2);
  add_split(true, a.x1, b.x1, -g_dx, g.a.x1, g.b.x1);
  add_split(false, a.y2, b.y2, g_dy, g.a.y2, g.b.y2);
  add_split(true, a.y1, b.y1, -g_dy, g.a.y1, g.b.y1);
}

// Backward of the enclosing box's clamped sides ex, ey.
template <typename T>
DETOPS_FORCE_INLINE void pairwise_enclosing_grad(const Terms<T>& a, const Terms<T>& b,
                                                 const PairwiseParts<T>& p, T g_ex, T g_ey,
                                                 PairGrad<T>& g) {
  const T gx = clamp0_grad(p.ex_raw, g_ex);
  const T gy = clamp0_grad(p.ey_raw, g_ey);
  add_split(true, a.x2, b.x2, gx, g.a.x2, g.b.x2);
  add_split(false, a.x1, b.x1, -gx, g.a.x1, g.b.x1);
  add_split(true, a.y2, b.y2, gy, g.a.y2, g.b.y2);
  add_split(false, a.y1, b.y1, -gy, g.a.y1, g.b.y1);
}

// Backward of the centre distance, gradient g_cd.
template <typename T>
DETOPS_FORCE_INLINE void centre_distance_grad(const Terms<T>& a, const Terms<T>& b, T g_cd,
                                              PairGrad<T>& g) {
  const T gx = g_cd * (T(2) * (a.cx - b.cx)) / T(2);
  const T gy = g_cd * (T(2) * (a.cy - b.cy)) / T(2);
  g.a.x1 += gx;
  g.a.x2 += gx;
  g.b.x1 -= gx;
  g.b.x2 -= gx;
  g.a.y1 += gy;
  g.a.y2 += gy;
  g.b.y1 -= gy;
  g.b.y2 -= gy;
}

// The gradient of pairwise_value<M, S> for the pair times gout.
template <Measure M, typename S, typename T>
DETOPS_FORCE_INLINE PairGrad<T> pairwise_grad(const Terms<T>& a, const Terms<T>& b, T eps, T gout) {
  const PairwiseParts<T> p = pairwise_parts<M, S>(a, b);
  PairGrad<T> g{{T(0), T(0), T(0), T(0)}, {T(0), T(0), T(0), T(0)}};
  if constexpr (M == Measure::kGiou) {
    // giou = iou - (areai - uni) / areai
    const T areai = p.ex * p.ey;
    const T num = areai - p.uni;
    const T g_num = -gout / areai;
    const T g_areai = gout * ((num / areai) / areai) + g_num;
    pairwise_iou_grad(a, b, p, gout, -g_num, g);
    pairwise_enclosing_grad(a, b, p, g_areai * p.ey, g_areai * p.ex, g);
  } else {
    // diou = iou - cd / diag, diag = ex^2 + ey^2 + eps
    const T cd = centre_distance(a, b);
    const T diag = diou_diagonal(p, eps);
    const T g_cd = -gout / diag;
    const T g_diag = gout * ((cd / diag) / diag);
    pairwise_iou_grad(a, b, p, gout, T(0), g);
    pairwise_enclosing_grad(a, b, p, g_diag * (T(2) * p.ex), g_diag * (T(2) * p.ey), g);
    centre_distance_grad(a, b, g_cd, g);
    if constexpr (M == Measure::kCiou) {
      // ciou = diou - alpha * v, alpha constant; v = 4/pi^2 (atan a - atan b)^2
      const T v = aspect_v(a, b);
      const T alpha = v / (((T(1) - p.iou) + v) + eps);
      const T g_d = ((-gout * alpha) * aspect_scale<T>()) * (T(2) * (a.angle - b.angle));
      add_angle_grad(a, g_d, g.a);
      add_angle_grad(b, -g_d, g.b);
    }
  }
  return g;
}

// ---------------------------------------------------------------------------- losses
// torchvision.ops.generalized_box_iou_loss / distance_box_iou_loss / complete_box_iou_loss
// of one pair (before the reduction).

template <typename T>
struct LossParts {
  T xk1, yk1, xk2, yk2;  // intersection corners
  bool overlap;          // yk2 > yk1 and xk2 > xk1
  T inter, uni;
  T xc1, yc1, xc2, yc2;  // enclosing corners
  T cw, ch;              // xc2 - xc1, yc2 - yc1 (not clamped)
};

template <typename T>
DETOPS_FORCE_INLINE LossParts<T> loss_parts(const Terms<T>& a, const Terms<T>& b) {
  LossParts<T> p;
  p.xk1 = nan_max(a.x1, b.x1);
  p.yk1 = nan_max(a.y1, b.y1);
  p.xk2 = nan_min(a.x2, b.x2);
  p.yk2 = nan_min(a.y2, b.y2);
  p.overlap = (p.yk2 > p.yk1) && (p.xk2 > p.xk1);
  p.inter = p.overlap ? (p.xk2 - p.xk1) * (p.yk2 - p.yk1) : T(0);
  p.uni = (a.area + b.area) - p.inter;
  p.xc1 = nan_min(a.x1, b.x1);
  p.yc1 = nan_min(a.y1, b.y1);
  p.xc2 = nan_max(a.x2, b.x2);
  p.yc2 = nan_max(a.y2, b.y2);
  p.cw = p.xc2 - p.xc1;
  p.ch = p.yc2 - p.yc1;
  return p;
}

// eps of complete_box_iou_loss's DIoU part: torchvision calls it without its eps.
template <typename T>
DETOPS_FORCE_INLINE T ciou_loss_diou_eps() {
  return static_cast<T>(1e-7);
}

template <Measure M, typename T>
DETOPS_FORCE_INLINE T loss_value(const Terms<T>& a, const Terms<T>& b, T eps) {
  const LossParts<T> p = loss_parts(a, b);
  if constexpr (M == Measure::kGiou) {
    const T iou = p.inter / (p.uni + eps);
    const T area_c = p.cw * p.ch;
    return T(1) - (iou - (area_c - p.uni) / (area_c + eps));
  } else {
    const T e = M == Measure::kCiou ? ciou_loss_diou_eps<T>() : eps;
    const T iou = p.inter / (p.uni + e);
    const T diag = (p.cw * p.cw + p.ch * p.ch) + e;
    const T diou_loss = (T(1) - iou) + centre_distance(a, b) / diag;
    if constexpr (M == Measure::kDiou) {
      return diou_loss;
    } else {
      const T v = aspect_scale<T>() * ((b.angle - a.angle) * (b.angle - a.angle));
      const T alpha = v / (((T(1) - iou) + v) + eps);
      return diou_loss + alpha * v;
    }
  }
}

// Backward of inter / (uni + e) (gradient g_iou) plus a union gradient g_uni from
// elsewhere.
template <typename T>
DETOPS_FORCE_INLINE void loss_iou_grad(const Terms<T>& a, const Terms<T>& b, const LossParts<T>& p,
                                       T e, T g_iou, T g_uni, PairGrad<T>& g) {
  const T den = p.uni + e;
  T g_inter = g_iou / den;
  g_uni -= g_iou * ((p.inter / den) / den);
  g_inter -= g_uni;
  add_area_grad(a, g_uni, g.a);
  add_area_grad(b, g_uni, g.b);
  if (p.overlap) {
    const T gx = g_inter * (p.yk2 - p.yk1);
    const T gy = g_inter * (p.xk2 - p.xk1);
    add_split(false, a.x2, b.x2, gx, g.a.x2, g.b.x2);
    add_split(true, a.x1, b.x1, -gx, g.a.x1, g.b.x1);
    add_split(false, a.y2, b.y2, gy, g.a.y2, g.b.y2);
    add_split(true, a.y1, b.y1, -gy, g.a.y1, g.b.y1);
  }
}

// Backward of the enclosing box's sides cw, ch (gradients g_cw, g_ch).
template <typename T>
DETOPS_FORCE_INLINE void loss_enclosing_grad(const Terms<T>& a, const Terms<T>& b, T g_cw, T g_ch,
                                             PairGrad<T>& g) {
  add_split(true, a.x2, b.x2, g_cw, g.a.x2, g.b.x2);
  add_split(false, a.x1, b.x1, -g_cw, g.a.x1, g.b.x1);
  add_split(true, a.y2, b.y2, g_ch, g.a.y2, g.b.y2);
  add_split(false, a.y1, b.y1, -g_ch, g.a.y1, g.b.y1);
}

// The gradient of loss_value<M> for the pair times gout.
template <Measure M, typename T>
DETOPS_FORCE_INLINE PairGrad<T> loss_grad(const Terms<T>& a, const Terms<T>& b, T eps, T gout) {
  const LossParts<T> p = loss_parts(a, b);
  PairGrad<T> g{{T(0), T(0), T(0), T(0)}, {T(0), T(0), T(0), T(0)}};
  if constexpr (M == Measure::kGiou) {
    // loss = 1 - (iou - (area_c - uni) / (area_c + eps))
    const T area_c = p.cw * p.ch;
    const T num = area_c - p.uni, den = area_c + eps;
    const T g_num = gout / den;
    const T g_area_c = g_num - gout * ((num / den) / den);
    loss_iou_grad(a, b, p, eps, -gout, -g_num, g);
    loss_enclosing_grad(a, b, g_area_c * p.ch, g_area_c * p.cw, g);
  } else {
    // loss = 1 - iou + cd / diag (+ alpha * v)
    const T e = M == Measure::kCiou ? ciou_loss_diou_eps<T>() : eps;
    const T cd = centre_distance(a, b);
    const T diag = (p.cw * p.cw + p.ch * p.ch) + e;
    const T g_cd = gout / diag;
    const T g_diag = -gout * ((cd / diag) / diag);
    loss_iou_grad(a, b, p, e, -gout, T(0), g);
    loss_enclosing_grad(a, b, g_diag * (T(2) * p.cw), g_diag * (T(2) * p.ch), g);
    centre_distance_grad(a, b, g_cd, g);
    if constexpr (M == Measure::kCiou) {
      const T iou = p.inter / (p.uni + e);
      const T v = aspect_scale<T>() * ((b.angle - a.angle) * (b.angle - a.angle));
      const T alpha = v / (((T(1) - iou) + v) + eps);
      const T g_d = ((gout * alpha) * aspect_scale<T>()) * (T(2) * (b.angle - a.angle));
      add_angle_grad(b, g_d, g.b);
      add_angle_grad(a, -g_d, g.a);
    }
  }
  return g;
}

}  // namespace detops::box_pair
