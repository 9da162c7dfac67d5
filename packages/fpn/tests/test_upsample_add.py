"""fpn_upsample_add against its definition (lateral + F.interpolate nearest)."""

import re

import pytest
import torch
from fpn_reference import UPSAMPLE_SIZES, upsample_add_reference, upsample_case
from hypothesis import given, settings
from hypothesis import strategies as st

import detops_fpn
from detops_core.testing import (
    assert_opcheck,
    assert_traced_raises_like_native,
    call,
    devices,
    oracles,
    requires_cuda,
    to_device,
)


@pytest.mark.parametrize("oracle", oracles("fpn_upsample_add"))
@pytest.mark.parametrize("th, tw, oh, ow", UPSAMPLE_SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", devices())
def test_forward_and_backward_match_definition(oracle, th, tw, oh, ow, dtype, device):
    top, lateral, grad = to_device(upsample_case(th, tw, oh, ow, dtype), device)
    top.requires_grad_(), lateral.requires_grad_()
    out = detops_fpn.fpn_upsample_add(top, lateral)
    expected = call("fpn_upsample_add", oracle, top, lateral)
    assert out.dtype == dtype and out.device == top.device and torch.equal(out, expected)
    got = torch.autograd.grad(out, (top, lateral), grad)
    want = torch.autograd.grad(expected, (top, lateral), grad)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)
    assert torch.equal(got[1], want[1])


@pytest.mark.parametrize("device", devices())
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 30), st.integers(1, 30))
def test_any_sizes_match_definition(device, th, tw, oh, ow):
    top = torch.randn(1, 2, th, tw, dtype=torch.float64, device=device)
    lateral = torch.randn(1, 2, oh, ow, dtype=torch.float64, device=device)
    assert torch.equal(detops_fpn.fpn_upsample_add(top, lateral), upsample_add_reference(top, lateral))
    grad = torch.randn(1, 2, oh, ow, dtype=torch.float64, device=device)
    want = torch.autograd.grad(upsample_add_reference(top.requires_grad_(), lateral), top, grad)[0]
    got = torch.ops.detops._fpn_upsample_add_backward(grad, th, tw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", devices())
def test_gradcheck_and_gradgradcheck(device):
    top = torch.randn(1, 2, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    lateral = torch.randn(1, 2, 7, 9, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(detops_fpn.fpn_upsample_add, (top, lateral))
    assert torch.autograd.gradgradcheck(detops_fpn.fpn_upsample_add, (top, lateral))


@pytest.mark.parametrize("device", devices())
def test_layouts_and_mixed_dtypes(device):
    top = torch.randn(2, 8, 5, 6, device=device)
    lateral = torch.randn(2, 8, 10, 12, device=device)
    expected = upsample_add_reference(top, lateral)
    cl = detops_fpn.fpn_upsample_add(
        top.to(memory_format=torch.channels_last), lateral.to(memory_format=torch.channels_last)
    )
    assert torch.equal(cl, expected)
    strided = detops_fpn.fpn_upsample_add(top.transpose(2, 3).contiguous().transpose(2, 3), lateral[:, :, :, :])
    assert torch.equal(strided, expected)
    mixed = detops_fpn.fpn_upsample_add(top.half(), lateral)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, upsample_add_reference(top.half().float(), lateral))


# On both devices: each top element gathers its window in a fixed order (no atomics).
@pytest.mark.parametrize("device", devices())
def test_backward_is_repeatable(device):
    top = torch.randn(2, 16, 13, 19, device=device, requires_grad=True)
    lateral = torch.randn(2, 16, 25, 38, device=device)
    grad = torch.randn(2, 16, 25, 38, device=device)
    first = torch.autograd.grad(detops_fpn.fpn_upsample_add(top, lateral), top, grad)[0]
    for _ in range(3):
        again = torch.autograd.grad(detops_fpn.fpn_upsample_add(top, lateral), top, grad)[0]
        assert torch.equal(first, again)


@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    top = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    lateral = torch.randn(2, 3, 8, 10, device=device, requires_grad=True)
    assert_opcheck(torch.ops.detops.fpn_upsample_add.default, (top, lateral))
    grad = torch.randn(2, 3, 8, 10, device=device)
    assert_opcheck(torch.ops.detops._fpn_upsample_add_backward.default, (grad, 4, 5))


@pytest.mark.parametrize("device", devices())
def test_empty_lateral_gives_empty_result(device):
    # F.interpolate refuses a zero output size; the natural result is an empty map.
    out = detops_fpn.fpn_upsample_add(torch.randn(1, 2, 3, 3, device=device), torch.randn(1, 2, 0, 5, device=device))
    assert out.shape == (1, 2, 0, 5) and out.device.type == device
    assert torch.ops.detops._fpn_upsample_add_backward(torch.randn(1, 2, 0, 5, device=device), 3, 3).eq(0).all()


@pytest.mark.parametrize("device", devices())
def test_empty_batch_or_channels(device):
    for n, c in ((0, 3), (2, 0)):
        top, lateral = torch.randn(n, c, 2, 2, device=device), torch.randn(n, c, 4, 4, device=device)
        assert detops_fpn.fpn_upsample_add(top, lateral).shape == (n, c, 4, 4)


# (top, lateral, what the message says)
BAD_INPUT = [
    (torch.randn(2, 3, 4), torch.randn(2, 3, 8, 8), r"top must be a 4-D tensor"),
    (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8), r"lateral must be a 4-D tensor"),
    (torch.randn(2, 4, 4, 4), torch.randn(2, 3, 8, 8), "same batch size and channels"),
    (torch.randn(1, 3, 4, 4), torch.randn(2, 3, 8, 8), "same batch size and channels"),
    (torch.randn(2, 3, 0, 4), torch.randn(2, 3, 8, 8), "top must have a non-empty spatial size"),
    (torch.ones(2, 3, 4, 4, dtype=torch.int64), torch.ones(2, 3, 8, 8, dtype=torch.int64), "floating-point"),
    (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8, dtype=torch.float64), "same dtype"),
]
MIXED_DEVICES = (torch.randn(2, 3, 4, 4, device="meta"), torch.randn(2, 3, 8, 8), "same device")


@pytest.mark.parametrize("top, lateral, message", [*BAD_INPUT, MIXED_DEVICES])
@pytest.mark.parametrize("device", devices())
def test_bad_input(top, lateral, message, device):
    # Meta tensors stay where they are: next to a tensor on `device` they are the mismatch.
    top, lateral = (t if t.is_meta else t.to(device) for t in (top, lateral))
    with pytest.raises(RuntimeError, match=message):
        torch.ops.detops.fpn_upsample_add(top, lateral)


# torch.compile and torch.export trace with the fake kernel, which only infers shapes: the
# native op reports the bad call when the traced code runs.
@pytest.mark.parametrize("top, lateral, message", [BAD_INPUT[i] for i in (2, 4, 6)])
def test_bad_input_once_traced_raises_like_native(top, lateral, message):
    assert re.search(
        message, assert_traced_raises_like_native(torch.ops.detops.fpn_upsample_add.default, (top, lateral))
    )


@pytest.mark.parametrize(
    "grad, top_height, top_width",
    [
        (torch.randn(1, 1, 2, 2), -1, 2),
        (torch.randn(1, 1, 2, 2), 2, -3),
        (torch.randn(1, 4, 4), 2, 2),
        (torch.ones(1, 1, 2, 2, dtype=torch.int32), 2, 2),
    ],
)
def test_bad_backward_once_traced_raises_like_native(grad, top_height, top_width):
    op = torch.ops.detops._fpn_upsample_add_backward.default
    message = assert_traced_raises_like_native(op, (grad, top_height, top_width))
    assert message.startswith("detops._fpn_upsample_add_backward: "), message


@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["top", "lateral"])
def test_mixed_devices_once_traced_raise_like_native(on_cpu):
    args = {"top": torch.randn(2, 3, 4, 4, device="cuda"), "lateral": torch.randn(2, 3, 8, 8, device="cuda")}
    args[on_cpu] = args[on_cpu].cpu()
    message = assert_traced_raises_like_native(torch.ops.detops.fpn_upsample_add.default, tuple(args.values()))
    assert "same device" in message


@pytest.mark.parametrize("device", devices())
def test_bad_backward_sizes(device):
    with pytest.raises(RuntimeError, match="top_height and top_width must be >= 0"):
        torch.ops.detops._fpn_upsample_add_backward(torch.randn(1, 1, 2, 2, device=device), -1, 2)


# A CUDA kernel handed a CPU tensor would read host memory as device memory: the message
# names both devices.
@requires_cuda()
@pytest.mark.parametrize("on_cpu", ["top", "lateral"])
def test_cuda_and_cpu_arguments_name_both_devices(on_cpu):
    args = {"top": torch.randn(2, 3, 4, 4, device="cuda"), "lateral": torch.randn(2, 3, 8, 8, device="cuda")}
    args[on_cpu] = args[on_cpu].cpu()
    with pytest.raises(
        RuntimeError, match=r"top and lateral must be on the same device, got (cuda:\d+ and cpu|cpu and cuda:\d+)"
    ):
        torch.ops.detops.fpn_upsample_add(args["top"], args["lateral"])
