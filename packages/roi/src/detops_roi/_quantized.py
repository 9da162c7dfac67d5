"""detops::roi_align on quantized CPU tensors (quint8, qint8, qint32), as torchvision 0.29.1's
qroi_align computes it, registered for the QuantizedCPU dispatch key.

Quantized tensors are a deprecated torch feature that the stable C++ ABI cannot read (no
scale, zero point or integer view), so this kernel is Python, registered only where torch
still has quantized dtypes. It reproduces torchvision's arithmetic step by step, in float32
and in the same order, so the result is the same integer for every bin:

- the box coordinates are dequantized, ``rois_scale * (q - rois_zero_point)``, then mapped as
  in :func:`detops_roi.roi_align` (scale, -0.5 when aligned, legacy boxes at least 1x1);
- every sample's four bilinear taps are read as raw integers; a bin accumulates, sample by
  sample, ``w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4`` and the sum of the weights;
- the bin's value, ``scale * (sum - zero_point * weights) / count``, is quantized back with
  the input's scale and zero point (round half to even) and clamped to the dtype's range.

Like torchvision's, it takes one image (N = 1) and ignores the batch-index column. Samples
are taken per group of RoIs with the same grid, sample by sample in torchvision's order.
"""

from typing import Dict, List, Tuple

import torch
from torch import Tensor

# The integer representation of each quantized dtype torchvision's qroi_align accepts.
_INT_TYPES: Dict[torch.dtype, torch.dtype] = {}
for _q, _i in (("quint8", torch.uint8), ("qint8", torch.int8), ("qint32", torch.int32)):
    if hasattr(torch, _q):
        _INT_TYPES[getattr(torch, _q)] = _i

_OP = "detops.roi_align"


def quantized_types() -> List[torch.dtype]:
    """The quantized dtypes this torch has, of those the kernel takes."""
    return list(_INT_TYPES)


def _check(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int) -> None:
    if not rois.is_quantized:
        # torchvision's wrapper raises ValueError with these words.
        raise ValueError(f"{_OP}: If input is quantized, rois must also be quantized (got rois of dtype {rois.dtype})")
    if not input.is_quantized:
        raise ValueError(f"{_OP}: rois is quantized, so input must be quantized too (got input of dtype {input.dtype})")
    for name, t in (("input", input), ("rois", rois)):
        if t.dtype not in _INT_TYPES:
            raise RuntimeError(f"{_OP}: quantized {name} must be one of {list(_INT_TYPES)}, got {t.dtype}")
        if t.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise RuntimeError(f"{_OP}: quantized {name} must be quantized per tensor, got {t.qscheme()}")
    if input.dtype != rois.dtype:
        # torchvision's qroi_align refuses this too ("input should have the same type as rois").
        raise RuntimeError(f"{_OP}: input should have the same type as rois, got {input.dtype} and {rois.dtype}")
    if input.dim() != 4 or input.size(0) != 1:
        raise RuntimeError(
            f"{_OP}: a quantized input must be [1, C, H, W] (one image, as torchvision's qroi_align), "
            f"got shape {list(input.shape)}"
        )
    if rois.dim() != 2 or rois.size(1) != 5:
        raise RuntimeError(
            f"{_OP}: rois must be a 2-D tensor of shape [K, 5] holding (batch index, x1, y1, x2, y2), "
            f"got shape {list(rois.shape)}"
        )
    if pooled_h <= 0 or pooled_w <= 0:
        raise RuntimeError(f"{_OP}: pooled_height and pooled_width must be positive, got ({pooled_h}, {pooled_w})")


def _f32(value: float) -> Tensor:
    return torch.tensor(value, dtype=torch.float32)


def _taps(pos: Tensor, size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One axis of torchvision's bilinear taps for float32 positions: (valid, lo, hi, w_lo,
    w_hi); invalid samples (outside [-1, size]) read index 0 with weight 0."""
    valid = (pos >= -1.0) & (pos <= size) & (size > 0)  # an empty map has nothing to read
    p = torch.where(pos <= 0, torch.zeros_like(pos), pos)
    lo = p.to(torch.int64)  # truncation, as C++'s (int)
    last = lo >= size - 1
    lo = torch.where(last, torch.full_like(lo, size - 1), lo)
    hi = torch.where(last, lo, lo + 1)
    p = torch.where(last, lo.to(torch.float32), p)
    w_hi = p - lo.to(torch.float32)
    w_lo = 1.0 - w_hi
    zero = torch.zeros_like(w_hi)
    lo, hi = torch.where(valid, lo, 0), torch.where(valid, hi, 0)
    return valid, lo, hi, torch.where(valid, w_lo, zero), torch.where(valid, w_hi, zero)


def _positions(start: Tensor, bin_size: Tensor, bins: int, i: int, grid: int) -> Tensor:
    """Sample i of every bin along one axis: [R, bins], rounded as torchvision's
    start + p * bin + (i + 0.5f) * bin / grid."""
    p = torch.arange(bins, dtype=torch.float32)
    return (start[:, None] + p[None, :] * bin_size[:, None]) + (_f32(i + 0.5) * bin_size[:, None]) / _f32(float(grid))


def _grid(extent: Tensor, bins: int, sampling_ratio: int) -> Tensor:
    if sampling_ratio > 0:
        return torch.full(extent.shape, sampling_ratio, dtype=torch.int64)
    return torch.ceil(extent / _f32(float(bins))).to(torch.int64)


def quantized_roi_align(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    _check(input, rois, pooled_height, pooled_width)
    ph, pw = pooled_height, pooled_width
    _, channels, height, width = input.shape
    values = input.int_repr()[0].reshape(channels, height * width).to(torch.float32)
    scale, zero_point = input.q_scale(), input.q_zero_point()

    # Dequantized coordinates, mapped to the feature map (float32 throughout).
    boxes = (rois.int_repr()[:, 1:].to(torch.int64) - rois.q_zero_point()).to(torch.float32)
    boxes = _f32(rois.q_scale()) * boxes
    offset = _f32(0.5 if aligned else 0.0)
    mapped = boxes * _f32(spatial_scale) - offset
    start_w, start_h, end_w, end_h = mapped.unbind(1)
    roi_w, roi_h = end_w - start_w, end_h - start_h
    if not aligned:
        roi_w, roi_h = torch.clamp(roi_w, min=1.0), torch.clamp(roi_h, min=1.0)
    bin_h, bin_w = roi_h / _f32(float(ph)), roi_w / _f32(float(pw))
    grid_h, grid_w = _grid(roi_h, ph, sampling_ratio), _grid(roi_w, pw, sampling_ratio)

    num_rois = rois.size(0)
    acc = torch.zeros(num_rois, channels, ph, pw, dtype=torch.float32)
    weights = torch.zeros(num_rois, 1, ph, pw, dtype=torch.float32)
    counts = torch.ones(num_rois, 1, 1, 1, dtype=torch.float32)
    groups: Dict[Tuple[int, int], List[int]] = {}
    for k, (gh, gw) in enumerate(zip(grid_h.tolist(), grid_w.tolist())):
        groups.setdefault((gh, gw), []).append(k)
    for (gh, gw), members in groups.items():
        idx = torch.tensor(members, dtype=torch.int64)
        counts[idx] = float(max(gh * gw, 1))
        s_acc = torch.zeros(len(members), channels, ph, pw, dtype=torch.float32)
        s_w = torch.zeros(len(members), 1, ph, pw, dtype=torch.float32)
        for iy in range(gh):
            _, y_lo, y_hi, hy, ly = _taps(_positions(start_h[idx], bin_h[idx], ph, iy, gh), height)
            for ix in range(gw):
                _, x_lo, x_hi, hx, lx = _taps(_positions(start_w[idx], bin_w[idx], pw, ix, gw), width)
                # [R, ph, pw] weights and flat positions, torchvision's w1..w4 / pos1..pos4.
                taps = (
                    (hy[:, :, None] * hx[:, None, :], y_lo[:, :, None] * width + x_lo[:, None, :]),
                    (hy[:, :, None] * lx[:, None, :], y_lo[:, :, None] * width + x_hi[:, None, :]),
                    (ly[:, :, None] * hx[:, None, :], y_hi[:, :, None] * width + x_lo[:, None, :]),
                    (ly[:, :, None] * lx[:, None, :], y_hi[:, :, None] * width + x_hi[:, None, :]),
                )
                term = None
                w_sum = None
                for w, pos in taps:
                    v = values[:, pos].permute(1, 0, 2, 3)  # [R, C, ph, pw]
                    t = w[:, None] * v
                    term = t if term is None else term + t
                    w_sum = w[:, None] if w_sum is None else w_sum + w[:, None]
                s_acc = s_acc + term
                s_w = s_w + w_sum
        acc[idx] = s_acc
        weights[idx] = s_w

    scale_f = _f32(scale)
    out = scale_f * (acc - _f32(float(zero_point)) * weights)
    out = out / counts
    q = _f32(float(zero_point)) + torch.round(out * (_f32(1.0) / scale_f))
    info = torch.iinfo(_INT_TYPES[input.dtype])
    q = torch.clamp(q.to(torch.int64), info.min, info.max)
    return _requantize(q, scale, zero_point, input.dtype)


def _requantize(q: Tensor, scale: float, zero_point: int, dtype: torch.dtype) -> Tensor:
    """The quantized tensor whose integers are `q`, through public API: quantizing the
    dequantized values gives back each integer (exactly for quint8 and qint8; for qint32
    while |q - zero_point| < 2^22, float32's reach), which is verified."""
    out = torch.quantize_per_tensor(
        (q.to(torch.float64) - zero_point).mul(scale).to(torch.float32), scale, zero_point, dtype
    )
    if not torch.equal(out.int_repr().to(torch.int64), q):
        raise RuntimeError(
            f"{_OP}: a quantized result lies too far from the zero point ({zero_point}) to be represented "
            f"exactly with public torch APIs (|q - zero_point| >= 2^22 in {dtype})"
        )
    return out
