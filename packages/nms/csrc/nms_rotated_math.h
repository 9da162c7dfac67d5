// Rotated-box IoU, shared by the CPU and CUDA kernels of box_iou_rotated, nms_rotated and
// batched_nms_rotated.
//
// Boxes are torchvision's cxcywhr: (cx, cy, w, h, r), r in degrees, the polygon that
// box_convert(..., "cxcywhr", "xyxyxyxy") gives: corners c -/+ (w/2) u -/+ (h/2) v with
// u = (cos r, -sin r) along the width and v = (sin r, cos r) along the height.
//
// Everything is computed in double whatever the input dtype: the intersection of two
// nearly equal or nearly parallel rectangles is a difference of large, close numbers,
// and float32 loses the IoU there. The intersection is exact convex clipping
// (Sutherland-Hodgman), not a sampling or a vertex-in-polygon approximation.
#pragma once

#include <detops/macros.h>

#include <cmath>

namespace detops::nms::rotated {

// A box as the IoU needs it: its centre, its two half axes (half width along u, half
// height along v) and its area. A negative w or h describes the same rectangle as its
// absolute value, so the half axes use the absolute values; the corner order is then
// always counter-clockwise (in x-right, y-up terms), which the clipping relies on.
struct RBox {
  double cx, cy;
  double ux, uy;  // (|w| / 2) u
  double vx, vy;  // (|h| / 2) v
  double area;
  double radius;  // half the diagonal: the circumscribed circle, for the disjointness test
  bool finite;
};

struct Point {
  double x, y;
};

DETOPS_INLINE double cross(double ax, double ay, double bx, double by) {
  return ax * by - ay * bx;
}

// Corners of b relative to (ox, oy), counter-clockwise, starting at the top-left one of
// torchvision's xyxyxyxy order (x1, y1).
DETOPS_INLINE void corners(const RBox& b, double ox, double oy, Point* p) {
  const double dx = b.cx - ox, dy = b.cy - oy;
  p[0] = {dx - b.ux - b.vx, dy - b.uy - b.vy};
  p[1] = {dx + b.ux - b.vx, dy + b.uy - b.vy};
  p[2] = {dx + b.ux + b.vx, dy + b.uy + b.vy};
  p[3] = {dx - b.ux + b.vx, dy - b.uy + b.vy};
}

// Twice the signed area (shoelace) of polygon p[0..n).
DETOPS_INLINE double twice_area(const Point* p, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) {
    const Point& a = p[i];
    const Point& b = p[i + 1 == n ? 0 : i + 1];
    s += cross(a.x, a.y, b.x, b.y);
  }
  return s;
}

DETOPS_INLINE bool is_finite(double x) {
  return x - x == 0.0;  // false for NaN and both infinities
}

template <typename S>
DETOPS_INLINE RBox make_rbox(S cx_in, S cy_in, S w_in, S h_in, S r_in) {
  const double cx = static_cast<double>(cx_in), cy = static_cast<double>(cy_in);
  const double w = static_cast<double>(w_in), h = static_cast<double>(h_in);
  const double r = static_cast<double>(r_in);
  RBox b{};
  b.finite = is_finite(cx) && is_finite(cy) && is_finite(w) && is_finite(h) && is_finite(r);
  if (!b.finite) return b;
  // Same angle arithmetic as torchvision's conversion: r * pi / 180.
  const double rad = r * 3.14159265358979323846 / 180.0;
  const double c = cos(rad), s = sin(rad);
  const double hw = fabs(w) / 2, hh = fabs(h) / 2;
  b.cx = cx;
  b.cy = cy;
  b.ux = hw * c;
  b.uy = -(hw * s);
  b.vx = hh * s;
  b.vy = hh * c;
  // The area as the intersection computes it (shoelace over the corners around the box's
  // own centre), so that a box intersected with itself gives exactly its area: IoU(a, a)
  // is then exactly 1.
  Point p[4];
  corners(b, cx, cy, p);
  b.area = twice_area(p, 4) / 2;
  if (!(b.area > 0)) b.area = 0;
  b.radius = sqrt(b.ux * b.ux + b.uy * b.uy + b.vx * b.vx + b.vy * b.vy);
  return b;
}

// Enough room for Sutherland-Hodgman on two quadrilaterals even when rounding makes the
// clipped polygon slightly non-convex (each clip adds at most half its vertex count).
constexpr int kMaxVertices = 24;

// Clips polygon in[0..n) to the half plane left of the directed line through `a` with
// direction `d` (points on the line are kept); returns the vertex count of out.
DETOPS_INLINE int clip(const Point* in, int n, Point a, double dx, double dy, Point* out) {
  int m = 0;
  if (n == 0) return 0;
  Point prev = in[n - 1];
  double dp = cross(dx, dy, prev.x - a.x, prev.y - a.y);
  for (int i = 0; i < n; ++i) {
    const Point cur = in[i];
    const double dc = cross(dx, dy, cur.x - a.x, cur.y - a.y);
    // A crossing only where the signs are strictly opposite: dp - dc is then non-zero.
    const bool crosses = (dp < 0 && dc > 0) || (dp > 0 && dc < 0);
    if (crosses && m < kMaxVertices) {
      const double t = dp / (dp - dc);
      out[m++] = {prev.x + t * (cur.x - prev.x), prev.y + t * (cur.y - prev.y)};
    }
    if (dc >= 0 && m < kMaxVertices) out[m++] = cur;
    prev = cur;
    dp = dc;
  }
  return m;
}

// Area of the intersection of a and b, coordinates relative to a's centre.
DETOPS_INLINE double intersection_area(const RBox& a, const RBox& b) {
  Point buf0[kMaxVertices], buf1[kMaxVertices];
  corners(a, a.cx, a.cy, buf0);
  Point q[4];
  corners(b, a.cx, a.cy, q);
  Point* in = buf0;
  Point* out = buf1;
  int n = 4;
  for (int k = 0; k < 4 && n > 0; ++k) {
    // Edge directions as corner differences: a corner then lies exactly on the lines of
    // its two edges (cross(e, e) == 0), so a box clipped by itself stays itself.
    const Point& to = q[k + 1 == 4 ? 0 : k + 1];
    n = clip(in, n, q[k], to.x - q[k].x, to.y - q[k].y, out);
    Point* t = in;
    in = out;
    out = t;
  }
  if (n < 3) return 0;
  const double area = twice_area(in, n) / 2;
  return area > 0 ? area : 0;
}

// Whether a is the first of the pair in a fixed order of the boxes' numbers, so that
// iou(a, b) and iou(b, a) run the same arithmetic and agree bit for bit.
DETOPS_INLINE bool first_of_pair(const RBox& a, const RBox& b) {
  if (a.cx != b.cx) return a.cx < b.cx;
  if (a.cy != b.cy) return a.cy < b.cy;
  if (a.ux != b.ux) return a.ux < b.ux;
  if (a.uy != b.uy) return a.uy < b.uy;
  if (a.vx != b.vx) return a.vx < b.vx;
  return a.vy <= b.vy;
}

// IoU of two rotated boxes: in [0, 1] for finite boxes (0 when both have zero area), NaN
// when either box has a NaN or infinite number.
DETOPS_INLINE double iou(const RBox& a, const RBox& b) {
  if (!a.finite || !b.finite) return NAN;
  // Disjoint circumscribed circles: no overlap. The margin keeps rounding in the test from
  // ever skipping a pair that touches.
  const double dx = a.cx - b.cx, dy = a.cy - b.cy;
  const double reach = a.radius + b.radius;
  if (dx * dx + dy * dy > reach * reach * (1 + 1e-6)) return 0;
  const bool a_first = first_of_pair(a, b);
  double inter = a_first ? intersection_area(a, b) : intersection_area(b, a);
  const double smaller = a.area < b.area ? a.area : b.area;
  if (inter > smaller) inter = smaller;
  const double uni = a.area + b.area - inter;
  return uni > 0 ? inter / uni : 0;
}

}  // namespace detops::nms::rotated
