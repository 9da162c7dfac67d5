"""Inputs and call arguments shared by the RoI ops' tests: the boxes every test runs on and
the arguments each of the four ops takes (they differ only in sampling_ratio and aligned)."""

import torch

import detops_roi

OPS = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool"]
H, W = 11, 13
# The options each op takes after (input, boxes, output_size, spatial_scale).
_EXTRA = {
    "roi_align": ("sampling_ratio", "aligned"),
    "ps_roi_align": ("sampling_ratio",),
    "roi_pool": (),
    "ps_roi_pool": (),
}
MODULES = {
    "roi_align": detops_roi.RoIAlign,
    "roi_pool": detops_roi.RoIPool,
    "ps_roi_align": detops_roi.PSRoIAlign,
    "ps_roi_pool": detops_roi.PSRoIPool,
}


def options(op, output_size=2, spatial_scale=1.0, sampling_ratio=-1, aligned=True):
    """Keyword arguments of the Python function `op` (and of its module's constructor):
    the ones it takes of those given."""
    extra = {"sampling_ratio": sampling_ratio, "aligned": aligned}
    return dict(output_size=output_size, spatial_scale=spatial_scale, **{k: extra[k] for k in _EXTRA[op]})


def schema_args(op, **values):
    """Positional arguments of the OpOverload `op` from values named as its schema names
    them; the values it does not take are left out, so one set serves every op here. An
    argument with a default that is not among the values gets its default."""
    args = op._schema.arguments
    return tuple(values[a.name] if a.name in values or not a.has_default_value() else a.default_value for a in args)


def _values(rois, output_size, spatial_scale, sampling_ratio, aligned):
    ph, pw = output_size
    return dict(
        rois=rois,
        spatial_scale=spatial_scale,
        pooled_height=ph,
        pooled_width=pw,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    )


def op_args(op, input, rois, output_size=(2, 2), spatial_scale=1.0, sampling_ratio=-1, aligned=True):
    """Positional arguments of torch.ops.detops.<op> (and of the emulated CUDA kernels',
    whose schemas are the same)."""
    overload = getattr(torch.ops.detops, op).default
    return schema_args(overload, input=input, **_values(rois, output_size, spatial_scale, sampling_ratio, aligned))


def backward_args(
    op,
    grad,
    rois,
    input_shape,
    output_size=(2, 2),
    spatial_scale=1.0,
    sampling_ratio=-1,
    aligned=True,
    argmax=None,
    deterministic=False,
):
    """Positional arguments of torch.ops.detops._<op>_backward (and of the emulated CUDA
    kernels') for an input of `input_shape` (roi_pool's also takes the forward's `argmax`)."""
    n, c, h, w = input_shape
    overload = getattr(torch.ops.detops, f"_{op}_backward").default
    values = _values(rois, output_size, spatial_scale, sampling_ratio, aligned)
    values.update(grad=grad, argmax=argmax, batch_size=n, channels=c, height=h, width=w, deterministic=deterministic)
    return schema_args(overload, **values)


def channels(op, size):
    """Input channels for `op` at `size`: two per bin for the position-sensitive ops."""
    ph, pw = (size, size) if isinstance(size, int) else size
    return 2 * ph * pw if op.startswith("ps_") else 3


def box_list(rois, n_images):
    """[K, 5] RoIs as the per-image list of [K_i, 4] boxes (in batch-index order)."""
    return [rois[rois[:, 0] == i, 1:] for i in range(n_images)]


def make_rois(n_images, scale, generator, dtype=torch.float64):
    """Boxes in image coordinates (feature map * 1/scale): random ones plus degenerate,
    negative-size, out-of-image, partly outside and border-touching ones."""
    ih, iw = H / scale, W / scale
    rand = torch.rand(6, 4, generator=generator, dtype=torch.float64)
    xy = rand[:, :2] * torch.tensor([iw, ih], dtype=torch.float64) * 0.8
    wh = (0.05 + rand[:, 2:] * 0.6) * torch.tensor([iw, ih], dtype=torch.float64)
    boxes = torch.cat([xy, xy + wh], dim=1)
    special = torch.tensor(
        [
            [0.3 * iw, 0.3 * ih, 0.3 * iw, 0.3 * ih],  # zero size
            [0.6 * iw, 0.5 * ih, 0.2 * iw, 0.1 * ih],  # negative size
            [1.5 * iw, 1.2 * ih, 2.0 * iw, 1.9 * ih],  # outside the image
            [-0.4 * iw, -0.3 * ih, 0.35 * iw, 0.4 * ih],  # partly outside
            [0.0, 0.0, iw, ih],  # the whole image, touching every border
            [0.5 * iw, 0.25 * ih, iw, ih],  # touching the bottom-right border
        ],
        dtype=torch.float64,
    )
    boxes = torch.cat([boxes, special])
    batch = torch.arange(boxes.shape[0]) % n_images
    return torch.cat([batch[:, None].to(torch.float64), boxes], dim=1).to(dtype)
