"""A pure-PyTorch roi_align_rotated, written from the definition: each bin of a rotated
RoI (cx, cy, w, h, r in degrees, torchvision's cxcywhr) holds grid_h x grid_w samples at
local offsets (xx, yy) from the centre along the box's axes u = (cos r, -sin r) and
v = (sin r, cos r), starting at the box's first corner c - (w/2) u - (h/2) v (when not
aligned, a box under 1x1 grows from that corner to 1x1, as roi_align grows one from (x1,
y1)); a sample at map position (x, y) = c + xx u + yy v takes the bilinear
value of the map, with roi_align's borders (outside [-1, size] on either axis: nothing;
below 0: clamped to 0; at or beyond size - 1: the last row / column). Computed in float64
with tensor operations, differentiable in the input (gather), so its autograd gradient is
the reference of the backward.
"""

import math

import torch


def _grid(extent, bins, sampling_ratio):
    if sampling_ratio > 0:
        return sampling_ratio
    g = math.ceil(extent / bins) if math.isfinite(extent) else 0
    return max(g, 0)


def _bilinear(plane, y, x):
    """plane [C, H, W]; y, x [S] float64 -> [C, S] (0 where a sample is outside)."""
    c, h, w = plane.shape
    valid = (y >= -1) & (y <= h) & (x >= -1) & (x <= w)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y0 = y.floor().clamp(max=h - 1)
    x0 = x.floor().clamp(max=w - 1)
    y = torch.where(y0 >= h - 1, y0, y)
    x = torch.where(x0 >= w - 1, x0, x)
    y1 = (y0 + 1).clamp(max=h - 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    ly, lx = y - y0, x - x0
    flat = plane.reshape(c, h * w)

    def at(yy, xx):
        return flat[:, (yy * w + xx).long()]

    v = (
        (1 - ly) * (1 - lx) * at(y0, x0)
        + (1 - ly) * lx * at(y0, x1)
        + ly * (1 - lx) * at(y1, x0)
        + ly * lx * at(y1, x1)
    )
    return torch.where(valid, v, torch.zeros_like(v))


def roi_align_rotated(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True):
    """input [N, C, H, W], rois [K, 6] -> [K, C, ph, pw] in float64."""
    ph, pw = output_size
    x = input.double()
    n, c, h, w = x.shape
    out = []
    for roi in rois.double().tolist():
        b, cx, cy, bw, bh, r = roi
        offset = 0.5 if aligned else 0.0
        cx, cy = cx * spatial_scale - offset, cy * spatial_scale - offset
        bw, bh = bw * spatial_scale, bh * spatial_scale
        # Local offset of the first corner; the legacy minimum size grows the box from it.
        start_w, start_h = -bw / 2, -bh / 2
        if not aligned:
            bw, bh = max(bw, 1.0), max(bh, 1.0)
        gh, gw = _grid(bh / ph, 1, sampling_ratio), _grid(bw / pw, 1, sampling_ratio)
        if h == 0 or w == 0 or gh == 0 or gw == 0 or not all(math.isfinite(v) for v in (cx, cy, bw, bh, r)):
            out.append(x.new_zeros(c, ph, pw))
            continue
        rad = r * math.pi / 180
        cos, sin = math.cos(rad), math.sin(rad)
        iy = (
            torch.arange(ph, dtype=torch.float64)[:, None] * (bh / ph)
            + (torch.arange(gh, dtype=torch.float64)[None] + 0.5) * (bh / ph / gh)
            + start_h
        )
        ix = (
            torch.arange(pw, dtype=torch.float64)[:, None] * (bw / pw)
            + (torch.arange(gw, dtype=torch.float64)[None] + 0.5) * (bw / pw / gw)
            + start_w
        )
        yy = iy[:, None, :, None].expand(ph, pw, gh, gw)  # [ph, pw, gh, gw]
        xx = ix[None, :, None, :].expand(ph, pw, gh, gw)
        px = cx + xx * cos + yy * sin
        py = cy - xx * sin + yy * cos
        v = _bilinear(x[int(b)], py.reshape(-1), px.reshape(-1)).reshape(c, ph, pw, gh * gw)
        out.append(v.sum(-1) / max(gh * gw, 1))
    return torch.stack(out) if out else x.new_zeros(0, c, ph, pw)
