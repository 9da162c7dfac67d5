"""Boundary rules of the sampling, non-finite offsets and masks, and malformed arguments."""

import math

import pytest
import torch
from deform_reference import make_case, op_args
from hypothesis import given, settings
from hypothesis import strategies as st

import detops_deform
from detops_core.testing import (
    assert_traced_raises_like_native,
    call,
    devices,
    oracles,
    requires_cuda,
    to_device,
)


def _point_rules(plane, y, x):
    """torchvision's rules for one tap, written out: (value, d value/dy, d value/dx)."""
    H, W = plane.shape

    def at(r, c):
        return float(plane[r, c]) if 0 <= r < H and 0 <= c < W else 0.0

    if not (math.isfinite(y) and math.isfinite(x)):
        return 0.0, 0.0, 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    v00, v01, v10, v11 = at(y0, x0), at(y0, x0 + 1), at(y0 + 1, x0), at(y0 + 1, x0 + 1)
    value = 0.0
    if -1 < y < H and -1 < x < W:
        value = (1 - ly) * (1 - lx) * v00 + (1 - ly) * lx * v01 + ly * (1 - lx) * v10 + ly * lx * v11
    gy = gx = 0.0
    if -1 <= y < H and -1 <= x < W:
        gy = lx * (v11 - v01) + (1 - lx) * (v10 - v00)
        gx = ly * (v11 - v10) + (1 - ly) * (v01 - v00)
    return value, gy, gx


# Sampling positions on and around every edge of a 3 x 4 plane, including the exact
# boundaries -1 and H - 1 / W - 1 where value and gradient windows differ.
_POSITIONS = [
    (-1.0, 0.5),
    (0.5, -1.0),
    (-1.0, -1.0),
    (-0.5, 1.25),
    (1.5, -0.25),
    (2.0, 3.0),
    (2.5, 1.0),
    (1.25, 3.5),
    (3.0, 1.0),
    (1.0, 4.0),
    (-1.5, 1.0),
    (0.0, 0.0),
    (2.0, 1.5),
    (1.0, 2.0),
    (2.999, 3.999),
]


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("device", devices())
def test_boundary_rules_of_single_taps(use_mask, device):
    H, W = 3, 4
    plane = torch.arange(1, H * W + 1, dtype=torch.float64).reshape(H, W) ** 1.5
    n = len(_POSITIONS)
    # 1x1 kernel, output 1 x n: tap j samples at (0 + dy_j, j + dx_j) after padding (0, 0)...
    # so use a wide input and put every position into its own output column by offsets.
    inp = torch.zeros(1, 1, H, W, dtype=torch.float64, device=device)
    inp[0, 0] = plane
    out_w = W  # output of a 1x1 kernel has the input's size: use positions (0, j) for j < W
    rows = []
    for start in range(0, n, out_w):
        chunk = _POSITIONS[start : start + out_w]
        offset = torch.zeros(1, 2, H, W, dtype=torch.float64)
        for j, (y, x) in enumerate(chunk):
            offset[0, 0, 0, j] = y - 0
            offset[0, 1, 0, j] = x - j
        offset = offset.to(device)
        mask = torch.full((1, 1, H, W), 0.75, dtype=torch.float64, device=device) if use_mask else None
        offset.requires_grad_()
        weight = torch.ones(1, 1, 1, 1, dtype=torch.float64, device=device)
        out = detops_deform.deform_conv2d(inp, offset, weight, mask=mask)
        grad_out = torch.zeros_like(out)
        grad_out[0, 0, 0, : len(chunk)] = 1
        (g_off,) = torch.autograd.grad(out, offset, grad_out)
        m = 0.75 if use_mask else 1.0
        for j, (y, x) in enumerate(chunk):
            value, gy, gx = _point_rules(plane, y, x)
            rows.append(
                (
                    y,
                    x,
                    out[0, 0, 0, j].item(),
                    m * value,
                    g_off[0, 0, 0, j].item(),
                    m * gy,
                    g_off[0, 1, 0, j].item(),
                    m * gx,
                )
            )
        # Not the reference: autograd through its window test gives a tap exactly at -1 no
        # gradient, where torchvision's rules give one.
        if "torchvision" in oracles("deform_conv2d"):
            off2 = offset.detach().clone().requires_grad_()
            ref = call("deform_conv2d", "torchvision", inp, off2, weight, mask=mask)
            (g_ref,) = torch.autograd.grad(ref, off2, grad_out)
            torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_off, g_ref, rtol=1e-12, atol=1e-12)
    for y, x, got, want, gy, want_gy, gx, want_gx in rows:
        assert got == pytest.approx(want, abs=1e-12), (y, x)
        assert gy == pytest.approx(want_gy, abs=1e-12), (y, x)
        assert gx == pytest.approx(want_gx, abs=1e-12), (y, x)


_BAD_VALUES = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 3e9, -3e9]


@pytest.mark.parametrize("device", devices())
@settings(max_examples=20, deadline=None)
@given(
    where=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 35), st.integers(0, 6), st.integers(0, 5)), min_size=1, max_size=8
    ),
    values=st.lists(st.sampled_from(_BAD_VALUES), min_size=8, max_size=8),
    use_mask=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
)
def test_non_finite_offsets_never_crash(device, where, values, use_mask, dtype):
    args = make_case(dtype=dtype, offset_groups=2, use_mask=use_mask)
    bad = torch.zeros(args["offset"].shape, dtype=torch.bool)
    for (b, c, y, x), v in zip(where, values):
        args["offset"][b, c, y, x] = v
        bad[b, c, y, x] = True
    bad = bad.to(device)
    args = {k: (v.to(device).requires_grad_() if torch.is_tensor(v) else v) for k, v in args.items()}
    out = detops_deform.deform_conv2d(**args)
    assert torch.isfinite(out).all(), "a non-finite offset samples zero: the output stays finite"
    out.sum().backward()
    for k in ("input", "weight", "bias"):
        assert torch.isfinite(args[k].grad).all(), k
    g = args["offset"].grad
    assert torch.isfinite(g).all()
    # Offsets whose tap lies outside the gradient window get exactly zero gradient.
    assert (g[bad] == 0).all() or not bad.any()
    # Same result as replacing the positions by far-away finite ones (they read nothing).
    clean = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in args.items()}
    clean["offset"][bad] = 1e4
    torch.testing.assert_close(out.detach(), detops_deform.deform_conv2d(**clean), rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
def test_non_finite_mask_propagates_without_crashing(device):
    args = make_case(offset_groups=2)
    args["mask"][0, 3, 1, 1] = float("nan")
    args["mask"][1, 5, 2, 2] = float("inf")
    args = {k: (v.to(device).requires_grad_() if torch.is_tensor(v) else v) for k, v in args.items()}
    out = detops_deform.deform_conv2d(**args)
    assert not torch.isfinite(out[0, :, 1, 1]).any()
    assert torch.isfinite(out[0, :, 3, 3]).all()
    out.sum().backward()
    assert torch.isfinite(args["mask"].grad).all()  # d out / d mask is the sample, finite
    assert torch.isfinite(args["offset"].grad[:, :, 4:, 4:]).all()


# ---------------------------------------------------------------- malformed arguments
# Every check here is on shapes, dtypes, devices or sizes, shared by both devices: each
# test runs on every device and must raise there.


def _valid(device, **kw):
    return to_device(make_case(batch=2, in_channels=4, out_channels=4, size=(6, 6), padding=(1, 1), **kw), device)


def _raises(args, pattern):
    with pytest.raises((RuntimeError, TypeError, ValueError), match=pattern):
        detops_deform.deform_conv2d(**args)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=20, deadline=None)
@given(delta=st.integers(-17, 17).filter(lambda d: d != 0 and d % 18 != 0))
def test_offset_channels_not_matching_kernel(device, delta):
    args = _valid(device)
    c = args["offset"].shape[1] + delta
    args["offset"] = torch.zeros(2, c, 6, 6, dtype=torch.float64, device=device)
    _raises(args, "offset")


@pytest.mark.parametrize("device", devices())
@settings(max_examples=15, deadline=None)
@given(delta=st.integers(-8, 8).filter(lambda d: d != 0))
def test_mask_channels_not_matching_kernel(device, delta):
    args = _valid(device)
    args["mask"] = torch.rand(2, 9 + delta, 6, 6, dtype=torch.float64, device=device)
    _raises(args, "mask")


@pytest.mark.parametrize("device", devices())
@settings(max_examples=20, deadline=None)
@given(which=st.sampled_from(["offset", "mask"]), dh=st.integers(-3, 3), dw=st.integers(-3, 3))
def test_spatial_size_not_matching_output(device, which, dh, dw):
    if dh == 0 and dw == 0:
        dh = 1
    args = _valid(device)
    t = args[which]
    if 6 + dh < 1 or 6 + dw < 1:
        dh, dw = abs(dh), abs(dw)
    args[which] = torch.zeros(t.shape[0], t.shape[1], 6 + dh, 6 + dw, dtype=t.dtype, device=device)
    _raises(args, which)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=10, deadline=None)
@given(cin=st.integers(1, 12))
def test_in_channels_not_divisible_by_groups(device, cin):
    args = _valid(device)
    args["weight"] = torch.randn(4, 5, 3, 3, dtype=torch.float64, device=device)  # weight.shape[1] = 5
    args["input"] = torch.randn(2, cin * 5 + 1 + (cin % 3), 6, 6, dtype=torch.float64, device=device)
    _raises(args, "groups")


@pytest.mark.parametrize("device", devices())
def test_in_channels_not_divisible_by_offset_groups(device):
    args = _valid(device)
    args["offset"] = torch.zeros(2, 3 * 18, 6, 6, dtype=torch.float64, device=device)  # 3 offset groups, 4 channels
    args["mask"] = None
    _raises(args, "offset_groups")


@pytest.mark.parametrize("device", devices())
@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(["stride", "dilation"]), bad=st.integers(-3, 0), axis=st.integers(0, 1))
def test_non_positive_stride_or_dilation(device, name, bad, axis):
    args = _valid(device)
    v = [1, 1]
    v[axis] = bad
    args[name] = tuple(v)
    _raises(args, name)


@pytest.mark.parametrize("device", devices())
@settings(max_examples=10, deadline=None)
@given(bad=st.integers(-5, -1), axis=st.integers(0, 1))
def test_negative_padding(device, bad, axis):
    args = _valid(device)
    v = [1, 1]
    v[axis] = bad
    args["padding"] = tuple(v)
    _raises(args, "padding")


@pytest.mark.parametrize("device", devices())
@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(["offset", "weight", "bias", "mask"]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64]),
)
def test_mismatched_dtypes(device, name, dtype):
    args = _valid(device)
    args[name] = args[name].to(dtype)
    _raises(args, name)


@pytest.mark.parametrize("device", devices())
def test_integer_input_is_rejected(device):
    args = _valid(device)
    args = {k: (v.long() if torch.is_tensor(v) else v) for k, v in args.items()}
    _raises(args, "input")


@pytest.mark.parametrize("name", ["offset", "weight", "bias", "mask"])
@pytest.mark.parametrize("device", devices())
def test_mismatched_devices(name, device):
    args = _valid(device)
    args[name] = args[name].to("meta")
    _raises(args, name)


# A CUDA kernel handed a CPU tensor would read host memory as device memory: every tensor
# argument's device is checked against input's, and the message names both devices.
@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["input", "offset", "weight", "bias", "mask"])
def test_cuda_and_cpu_arguments_name_both_devices(on_cpu):
    args = _valid("cuda")
    args[on_cpu] = args[on_cpu].cpu()
    other = "offset" if on_cpu == "input" else on_cpu
    _raises(args, rf"input and {other} must be on the same device, got (cuda:\d+ and cpu|cpu and cuda:\d+)")


@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["grad_output", "offset", "weight", "mask"])
def test_backward_op_cuda_and_cpu_arguments_name_both_devices(on_cpu):
    args = _valid("cuda")
    s, p, d = args["stride"], args["padding"], args["dilation"]
    tensors = {"grad_output": torch.ones(2, 4, 6, 6, dtype=torch.float64, device="cuda")}
    tensors.update((k, args[k]) for k in ("input", "offset", "weight", "mask"))
    tensors[on_cpu] = tensors[on_cpu].cpu()
    with pytest.raises(RuntimeError, match=r"must be on the same device, got (cuda:\d+ and cpu|cpu and cuda:\d+)"):
        torch.ops.detops._deform_conv2d_backward(*tensors.values(), s[0], s[1], p[0], p[1], d[0], d[1])


@pytest.mark.parametrize("name,value", [("stride", (1, 2, 3)), ("padding", "a"), ("dilation", 1.5)])
@pytest.mark.parametrize("device", devices())
def test_malformed_pairs(name, value, device):
    args = _valid(device)
    args[name] = value
    _raises(args, name)


@pytest.mark.parametrize("device", devices())
def test_wrong_ranks_and_batches(device):
    args = _valid(device)
    args["input"] = args["input"][0]
    _raises(args, "input")
    args = _valid(device)
    args["offset"] = args["offset"][:1]
    _raises(args, "offset")
    args = _valid(device)
    args["mask"] = args["mask"][:1]
    _raises(args, "mask")
    args = _valid(device)
    args["bias"] = torch.zeros(5, dtype=torch.float64, device=device)
    _raises(args, "bias")


@pytest.mark.parametrize("device", devices())
def test_input_smaller_than_kernel(device):
    args = to_device(make_case(size=(2, 2), padding=(0, 0), use_mask=False), device)
    args["offset"] = torch.zeros(2, 18, 1, 1, dtype=torch.float64, device=device)
    _raises(args, "input")


@pytest.mark.parametrize("device", devices())
def test_oracles_agree_on_the_valid_case(device):
    args = _valid(device)
    for oracle in oracles("deform_conv2d"):
        torch.testing.assert_close(detops_deform.deform_conv2d(**args), call("deform_conv2d", oracle, **args))


# ------------------------------------------------- the fake kernels say what the C++ says
# torch.compile and torch.export run the fake kernel instead of the native one: each bad
# case whose fault shows in shapes, dtypes, devices or sizes must fail there with the
# native error, word for word. (name, {argument of the op: replacement})
_BAD_FORWARD = [
    ("stride", dict(stride_w=0)),
    ("padding", dict(pad_h=-1)),
    ("dilation", dict(dilation_h=-2)),
    ("input_rank", dict(input=torch.zeros(4, 6, 6, dtype=torch.float64))),
    ("offset_rank", dict(offset=torch.zeros(2, 18, 36, dtype=torch.float64))),
    ("weight_rank", dict(weight=torch.zeros(4, 4, 9, dtype=torch.float64))),
    ("integer_input", dict(input=torch.zeros(2, 4, 6, 6, dtype=torch.int64))),
    ("offset_dtype", dict(offset=torch.zeros(2, 18, 6, 6, dtype=torch.float32))),
    ("weight_dtype", dict(weight=torch.zeros(4, 4, 3, 3, dtype=torch.float16))),
    ("empty_kernel", dict(weight=torch.zeros(4, 4, 0, 3, dtype=torch.float64))),
    ("no_input_channels", dict(input=torch.zeros(2, 0, 6, 6, dtype=torch.float64))),
    ("no_weight_channels", dict(weight=torch.zeros(4, 0, 3, 3, dtype=torch.float64))),
    ("in_channels_by_groups", dict(weight=torch.zeros(4, 3, 3, 3, dtype=torch.float64))),
    ("out_channels_by_groups", dict(weight=torch.zeros(3, 2, 3, 3, dtype=torch.float64))),
    ("offset_channels", dict(offset=torch.zeros(2, 17, 6, 6, dtype=torch.float64))),
    ("offset_groups", dict(offset=torch.zeros(2, 3 * 18, 6, 6, dtype=torch.float64), mask=None)),
    ("huge_padding", dict(pad_h=2**62)),
    ("huge_dilation", dict(dilation_w=2**62)),
    ("smaller_than_kernel", dict(pad_h=0, pad_w=0, input=torch.zeros(2, 4, 2, 6, dtype=torch.float64))),
    ("offset_batch", dict(offset=torch.zeros(1, 18, 6, 6, dtype=torch.float64))),
    ("offset_size", dict(offset=torch.zeros(2, 18, 6, 5, dtype=torch.float64))),
    ("mask_rank", dict(mask=torch.zeros(2, 9, 36, dtype=torch.float64))),
    ("mask_dtype", dict(mask=torch.zeros(2, 9, 6, 6, dtype=torch.bfloat16))),
    ("mask_channels", dict(mask=torch.zeros(2, 8, 6, 6, dtype=torch.float64))),
    ("mask_batch", dict(mask=torch.zeros(1, 9, 6, 6, dtype=torch.float64))),
    ("mask_size", dict(mask=torch.zeros(2, 9, 7, 6, dtype=torch.float64))),
    ("bias_shape", dict(bias=torch.zeros(5, dtype=torch.float64))),
    ("bias_rank", dict(bias=torch.zeros(4, 1, dtype=torch.float64))),
    ("bias_dtype", dict(bias=torch.zeros(4, dtype=torch.float32))),
]
_BAD_BACKWARD = [
    ("stride", dict(stride_h=0)),
    ("huge_padding_and_dilation", dict(pad_h=2**62, pad_w=2**62, dilation_h=2**61, dilation_w=2**61)),
    ("offset_channels", dict(offset=torch.zeros(2, 17, 6, 6, dtype=torch.float64))),
    ("mask_channels", dict(mask=torch.zeros(2, 8, 6, 6, dtype=torch.float64))),
    ("grad_output_rank", dict(grad_out=torch.zeros(2, 4, 36, dtype=torch.float64))),
    ("grad_output_shape", dict(grad_out=torch.zeros(2, 4, 6, 5, dtype=torch.float64))),
    ("grad_output_dtype", dict(grad_out=torch.zeros(2, 4, 6, 6, dtype=torch.float32))),
]


def _schema_args(op, device, replace):
    """A valid call of `op` (2 images, 4 channels, 6 x 6, 3 x 3 kernel, padding 1) on
    `device`, its arguments by schema name, with `replace` applied."""
    valid = _valid(device)
    named = dict(zip(("input", "offset", "weight", "bias", "mask"), op_args(valid)))
    named.update(zip(("stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w"), op_args(valid)[5:]))
    named["grad_out"] = torch.ones(2, 4, 6, 6, dtype=torch.float64, device=device)
    named.update((k, v.to(device) if torch.is_tensor(v) else v) for k, v in replace.items())
    return [named[a.name] for a in op._schema.arguments if a.name in named]


_OPS = {"forward": torch.ops.detops.deform_conv2d.default, "backward": torch.ops.detops._deform_conv2d_backward.default}
_CASES = [pytest.param("forward", *c, id=c[0]) for c in _BAD_FORWARD]
_CASES += [pytest.param("backward", *c, id=f"backward-{c[0]}") for c in _BAD_BACKWARD]


@pytest.mark.parametrize("which,name,replace", _CASES)
def test_every_bad_call_raises_an_error_naming_the_op(which, name, replace):
    op = _OPS[which]
    with pytest.raises(RuntimeError, match=rf"^{op.name().replace('::', '.')}: "):
        op(*_schema_args(op, "cpu", replace))


# torch.compile and torch.export trace with the fake kernels, which only infer shapes: the
# native op reports the bad call when the traced code runs.
_TRACED = ("stride", "offset_channels", "mask_channels", "bias_shape", "backward-grad_output_shape")


@pytest.mark.parametrize("which,name,replace", [c for c in _CASES if c.id in _TRACED])
def test_bad_calls_once_traced_raise_like_native(which, name, replace):
    op = _OPS[which]
    message = assert_traced_raises_like_native(op, _schema_args(op, "cpu", replace))
    assert message.startswith(op.name().replace("::", ".") + ": "), message


# Devices: a CPU tensor next to CUDA ones, which only a GPU machine can build.
@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["offset", "weight", "bias", "mask", "grad_out"])
def test_mixed_devices_once_traced_raise_like_native(on_cpu):
    for op in (torch.ops.detops.deform_conv2d.default, torch.ops.detops._deform_conv2d_backward.default):
        names = [a.name for a in op._schema.arguments]
        if on_cpu in names:
            args = _schema_args(op, "cuda", {})
            args[names.index(on_cpu)] = args[names.index(on_cpu)].cpu()
            assert "same device" in assert_traced_raises_like_native(op, args)
