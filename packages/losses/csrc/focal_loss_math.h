// The sigmoid focal loss of one element and its derivatives, shared by the CPU and CUDA
// kernels (Lin et al., "Focal Loss for Dense Object Detection", 2017; torchvision's
// composition):
//
//   s    = sigmoid(x),  sn = sigmoid(-x) = 1 - s
//   ce   = (1 - t) x - min(x, 0) + log1p(exp(-|x|))     binary cross-entropy with logits
//   m    = t sn + (1 - t) s                              1 - p_t
//   a    = alpha t + (1 - alpha)(1 - t), or 1 when alpha < 0
//   loss = a (ce m^gamma)
//
//   dloss/dx = a ((s - t) m^gamma + ce gamma m^(gamma-1) s sn (1 - 2t))
//   dloss/dt = a (-x m^gamma + ce gamma m^(gamma-1) (sn - s)) + (2 alpha - 1) ce m^gamma
//
// Numerics (x the logit, t the target):
// - one exp(-|x|) per element feeds s, sn and the softplus term, so nothing overflows for
//   any finite x; ce is arranged as torchvision's binary_cross_entropy_with_logits
//   ((1 - t) x - log_sigmoid(x)), so infinite logits give the same inf or NaN as torchvision;
// - m is formed from s and sn directly (not 1 - p_t), so it keeps its relative precision
//   where torchvision's 1 - p_t cancels (e.g. x = 10, t = 1); the difference from
//   torchvision there is far below its own float32 rounding error of the loss;
// - ce gamma m^(gamma-1) is taken as 0 where m == 0 (its limit: m only reaches 0 when
//   exp(-|x|) underflows, and then ce does too), where torchvision's pow backward can give
//   inf * 0 = NaN for gamma < 1;
// - float: exp and log1p are the branch-free versions below (about 1 ulp), so the CPU
//   loops vectorise; exp(-|x|) is flushed to 0 below -87 (subnormal results), which changes
//   s or sn only below 1.7e-38. double uses the C library.
#pragma once

#include <detops/macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace detops::focal_loss {

// e^x for -87 <= x <= 0: Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, and e^r by its
// Taylor polynomial to degree 7 (truncation below 2^-27), scaled by 2^n built in the
// exponent bits; 0 below -87, for -inf and for NaN (the callers' other terms carry a NaN
// logit into the loss: ce holds x itself). Selects instead of branches, so a loop calling
// it vectorises.
DETOPS_FORCE_INLINE float exp_nonpositive(float x) {
  constexpr float kCutoff = -87.0f;             // n >= -126 above: 2^n stays a normal float
  const float xc = x >= kCutoff ? x : kCutoff;  // NaN too: no NaN reaches the int cast
  const float shifter = 12582912.0f;            // 1.5 * 2^23: adding it rounds to integer
  const float n = (xc * 1.44269504088896341f + shifter) - shifter;
  float r = xc - n * 0.693359375f;  // ln 2 = 0.693359375 - 2.12194440e-4 (hi part exact)
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float e = p * scale;
  return x >= kCutoff ? e : 0.0f;
}

// log(1 + e) for e in [0, 1]: 2 atanh(z) with z = e / (2 + e) <= 1/3, by its
// series to z^15 (truncation below 2^-29 relative), branch-free.
DETOPS_FORCE_INLINE float log1p_unit(float e) {
  const float z = e / (2.0f + e);
  const float z2 = z * z;
  float p = 1.0f / 15.0f;
  p = p * z2 + 1.0f / 13.0f;
  p = p * z2 + 1.0f / 11.0f;
  p = p * z2 + 1.0f / 9.0f;
  p = p * z2 + 1.0f / 7.0f;
  p = p * z2 + 1.0f / 5.0f;
  p = p * z2 + 1.0f / 3.0f;
  p = p * z2 + 1.0f;
  return 2.0f * z * p;
}

DETOPS_FORCE_INLINE double exp_nonpositive(double x) {
#ifdef __CUDA_ARCH__
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

DETOPS_FORCE_INLINE double log1p_unit(double e) {
#ifdef __CUDA_ARCH__
  return ::log1p(e);
#else
  return std::log1p(e);
#endif
}

template <typename T>
DETOPS_FORCE_INLINE T power(T base, T exponent) {
#ifdef __CUDA_ARCH__
  return ::pow(base, exponent);
#else
  return std::pow(base, exponent);
#endif
}

// How the modulating factor m^gamma is computed: gamma known at compile time (0 and the
// default 2, each a multiplication at most) or pow() for any other gamma.
inline constexpr int kGammaZero = 0;
inline constexpr int kGammaTwo = 2;
inline constexpr int kGammaAny = -1;

template <typename T>
struct FocalParams {
  T alpha;
  T gamma;
  T weighted;  // 1 when alpha >= 0, else 0 (a float, so that selecting on it vectorises)
};

// The terms of one element that both the loss and its derivatives use.
template <typename T>
struct Terms {
  T s, sn, ce, m, a;
};

template <typename T>
DETOPS_FORCE_INLINE Terms<T> terms(T x, T t, const FocalParams<T>& p) {
  // Every value is computed unconditionally and then selected: a conditional floating-point
  // operation could trap, so the compiler would keep the branch and not vectorise.
  const bool positive = x >= T(0);
  const T e = exp_nonpositive(positive ? -x : x);  // exp(-|x|)
  const T d = T(1) + e;
  const T not_t = T(1) - t;
  const T weight = p.alpha * t + (T(1) - p.alpha) * not_t;
  Terms<T> r;
  // One division for both sigmoids: e / d as e * (1 / d) costs one more rounding (1 ulp at
  // most instead of half) and saves a division, the costliest operation here.
  const T inv = T(1) / d;
  const T e_inv = e * inv;
  r.s = positive ? inv : e_inv;
  r.sn = positive ? e_inv : inv;
  r.ce = not_t * x - (positive ? T(0) : x) + log1p_unit(e);
  r.m = t * r.sn + not_t * r.s;
  r.a = p.weighted != T(0) ? weight : T(1);
  return r;
}

// m^gamma
template <int kGamma, typename T>
DETOPS_FORCE_INLINE T modulating(T m, const FocalParams<T>& p) {
  if constexpr (kGamma == kGammaZero) {
    return T(1);
  } else if constexpr (kGamma == kGammaTwo) {
    return m * m;
  } else {
    return power(m, p.gamma);
  }
}

// ce * d(m^gamma)/dm, 0 where m == 0 (see the top of the file).
template <int kGamma, typename T>
DETOPS_FORCE_INLINE T ce_times_modulating_slope(const Terms<T>& r, const FocalParams<T>& p) {
  if constexpr (kGamma == kGammaZero) {
    return T(0);
  } else if constexpr (kGamma == kGammaTwo) {
    return r.ce * (T(2) * r.m);
  } else {
    const T slope = r.ce * (p.gamma * power(r.m, p.gamma - T(1)));
    return r.m > T(0) ? slope : T(0);
  }
}

template <int kGamma, typename T>
DETOPS_FORCE_INLINE T focal_loss(T x, T t, const FocalParams<T>& p) {
  const Terms<T> r = terms(x, t, p);
  return r.a * (r.ce * modulating<kGamma>(r.m, p));
}

template <typename T>
struct FocalGrad {
  T inputs, targets;
};

// The gradients of one element's loss times `g` (the incoming gradient of that element).
template <int kGamma, bool kTargets, typename T>
DETOPS_FORCE_INLINE FocalGrad<T> focal_loss_grad(T x, T t, T g, const FocalParams<T>& p) {
  const Terms<T> r = terms(x, t, p);
  const T mod = modulating<kGamma>(r.m, p);
  const T slope = ce_times_modulating_slope<kGamma>(r, p);
  const T ag = r.a * g;
  FocalGrad<T> out;
  out.inputs = ag * ((r.s - t) * mod + slope * (r.s * r.sn) * (T(1) - T(2) * t));
  out.targets = T(0);
  if constexpr (kTargets) {
    const T unweighted = ag * (slope * (r.sn - r.s) - x * mod);
    const T weight_term = g * ((T(2) * p.alpha - T(1)) * (r.ce * mod));
    out.targets = p.weighted != T(0) ? unweighted + weight_term : unweighted;
  }
  return out;
}

}  // namespace detops::focal_loss
