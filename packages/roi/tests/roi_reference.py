"""Slow, obviously-correct pure-PyTorch versions of the four RoI ops (the test oracle that
is always there). Loops over RoIs, bins and sample points in Python; channels are a tensor
dimension, so autograd gives the reference gradient. Written from the ops' definitions
(torchvision 0.29.1 semantics); positions are computed in Python floats (float64)."""

import math

import torch

import detops_roi
from detops_core.testing import register_op


def _grid(extent, bins, sampling_ratio):
    if sampling_ratio > 0:
        return sampling_ratio
    g = math.ceil(extent / bins) if extent == extent else 0
    return max(int(g), 0)


def _bilinear(plane, y, x):
    """plane [C, H, W] interpolated at (y, x) with roi_align's border rules; None when the
    sample lies outside [-1, H] x [-1, W]."""
    _, h, w = plane.shape
    if h == 0 or w == 0 or not (-1.0 <= y <= h and -1.0 <= x <= w):
        return None
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * plane[:, y0, x0]
        + hy * lx * plane[:, y0, x1]
        + ly * hx * plane[:, y1, x0]
        + ly * lx * plane[:, y1, x1]
    )


def _align_bins(box, scale, ph, pw, sampling_ratio, offset, at_least_one):
    x1, y1, x2, y2 = (float(v) * scale - offset for v in box)
    width, height = x2 - x1, y2 - y1
    if at_least_one:
        width, height = max(width, 1.0), max(height, 1.0)
    gh, gw = _grid(height, ph, sampling_ratio), _grid(width, pw, sampling_ratio)
    bin_h, bin_w = height / ph, width / pw
    count = max(gh * gw, 1)

    def samples(i, j):
        for iy in range(gh):
            y = y1 + i * bin_h + (iy + 0.5) * bin_h / gh
            for ix in range(gw):
                yield y, x1 + j * bin_w + (ix + 0.5) * bin_w / gw

    return samples, count


def _average(plane, samples, count, channels):
    acc = plane.new_zeros(channels)
    for y, x in samples:
        v = _bilinear(plane, y, x)
        if v is not None:
            acc = acc + v
    return acc / count


def _pair(output_size):
    return (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)


def roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    ph, pw = _pair(output_size)
    c = input.shape[1]
    out = []
    for roi in rois:
        plane = input[int(roi[0])]
        samples, count = _align_bins(
            roi[1:].tolist(), spatial_scale, ph, pw, sampling_ratio, 0.5 if aligned else 0.0, not aligned
        )
        bins = [_average(plane, samples(i, j), count, c) for i in range(ph) for j in range(pw)]
        out.append(torch.stack(bins, dim=1).reshape(c, ph, pw))
    return torch.stack(out) if out else input.new_zeros((0, c, ph, pw))


def ps_roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1):
    ph, pw = _pair(output_size)
    c_out = input.shape[1] // (ph * pw)
    out = []
    for roi in rois:
        img = input[int(roi[0])]
        samples, count = _align_bins(roi[1:].tolist(), spatial_scale, ph, pw, sampling_ratio, 0.5, False)
        bins = []
        for co in range(c_out):
            for i in range(ph):
                for j in range(pw):
                    ch = (co * ph + i) * pw + j
                    bins.append(_average(img[ch : ch + 1], samples(i, j), count, 1)[0])
        out.append(torch.stack(bins).reshape(c_out, ph, pw))
    return torch.stack(out) if out else input.new_zeros((0, c_out, ph, pw))


def _half_away(v):
    """C's round(): halves away from zero."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def _pool_bins(roi, scale, ph, pw, h, w, inclusive):
    """[ph][pw] of ((h0, h1), (w0, w1)); roi_pool's extent is end - start + 1 and bins are
    clamped to the map; ps_roi_pool's extent is end - start and bins stop at size - 1."""
    x1, y1, x2, y2 = (_half_away(float(v) * scale) for v in roi)
    extra = 1 if inclusive else 0
    rw, rh = max(x2 - x1 + extra, 1), max(y2 - y1 + extra, 1)
    lim_h, lim_w = (h, w) if inclusive else (h - 1, w - 1)
    bin_h, bin_w = rh / ph, rw / pw

    def bin_range(p, size, start, limit):
        lo, hi = math.floor(p * size) + start, math.ceil((p + 1) * size) + start
        return min(max(lo, 0), limit), min(max(hi, 0), limit)

    return [[(bin_range(i, bin_h, y1, lim_h), bin_range(j, bin_w, x1, lim_w)) for j in range(pw)] for i in range(ph)]


def roi_pool(input, rois, output_size, spatial_scale=1.0):
    ph, pw = _pair(output_size)
    n, c, h, w = input.shape
    out = []
    for roi in rois:
        plane = input[int(roi[0])]
        bins = _pool_bins(roi[1:].tolist(), spatial_scale, ph, pw, h, w, True)
        vals = []
        for i in range(ph):
            for j in range(pw):
                (h0, h1), (w0, w1) = bins[i][j]
                if h1 <= h0 or w1 <= w0:
                    vals.append(plane.new_zeros(c))
                    continue
                region = plane[:, h0:h1, w0:w1].reshape(c, -1)
                idx = region.argmax(dim=1, keepdim=True)  # first maximum in row-major order
                vals.append(region.gather(1, idx)[:, 0])
        out.append(torch.stack(vals, dim=1).reshape(c, ph, pw))
    return torch.stack(out) if out else input.new_zeros((0, c, ph, pw))


def ps_roi_pool(input, rois, output_size, spatial_scale=1.0):
    ph, pw = _pair(output_size)
    n, c, h, w = input.shape
    c_out = c // (ph * pw)
    out = []
    for roi in rois:
        img = input[int(roi[0])]
        bins = _pool_bins(roi[1:].tolist(), spatial_scale, ph, pw, h, w, False)
        vals = []
        for co in range(c_out):
            for i in range(ph):
                for j in range(pw):
                    (h0, h1), (w0, w1) = bins[i][j]
                    ch = (co * ph + i) * pw + j
                    if h1 <= h0 or w1 <= w0:
                        vals.append(img.new_zeros(()))
                    else:
                        vals.append(img[ch, h0:h1, w0:w1].mean())
        out.append(torch.stack(vals).reshape(c_out, ph, pw))
    return torch.stack(out) if out else input.new_zeros((0, c_out, ph, pw))


for _name, _reference in (
    ("roi_align", roi_align),
    ("roi_pool", roi_pool),
    ("ps_roi_align", ps_roi_align),
    ("ps_roi_pool", ps_roi_pool),
):
    register_op(_name, detops=getattr(detops_roi, _name), reference=_reference)
