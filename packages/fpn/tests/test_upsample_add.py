"""fpn_upsample_add against its definition (lateral + F.interpolate nearest)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import detops_fpn

SIZES = [(5, 7, 10, 14), (3, 3, 7, 9), (7, 9, 5, 4), (1, 1, 6, 6), (25, 38, 50, 76), (13, 19, 25, 38), (4, 4, 4, 4)]


def reference(top, lateral):
    return lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")


@pytest.mark.parametrize("th, tw, oh, ow", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_forward_and_backward_match_definition(th, tw, oh, ow, dtype):
    g = torch.Generator().manual_seed(th * 100 + ow)
    top = torch.randn(2, 3, th, tw, generator=g).to(dtype).requires_grad_()
    lateral = torch.randn(2, 3, oh, ow, generator=g).to(dtype).requires_grad_()
    out = detops_fpn.fpn_upsample_add(top, lateral)
    expected = reference(top, lateral)
    assert out.dtype == dtype and torch.equal(out, expected)
    grad = torch.randn(out.shape, generator=g).to(dtype)
    got = torch.autograd.grad(out, (top, lateral), grad)
    want = torch.autograd.grad(expected, (top, lateral), grad)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)
    assert torch.equal(got[1], want[1])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 30), st.integers(1, 30))
def test_any_sizes_match_definition(th, tw, oh, ow):
    top = torch.randn(1, 2, th, tw, dtype=torch.float64)
    lateral = torch.randn(1, 2, oh, ow, dtype=torch.float64)
    assert torch.equal(detops_fpn.fpn_upsample_add(top, lateral), reference(top, lateral))
    grad = torch.randn(1, 2, oh, ow, dtype=torch.float64)
    want = torch.autograd.grad(reference(top.requires_grad_(), lateral), top, grad)[0]
    got = torch.ops.detops._fpn_upsample_add_backward(grad, th, tw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    top = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    lateral = torch.randn(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(detops_fpn.fpn_upsample_add, (top, lateral))
    assert torch.autograd.gradgradcheck(detops_fpn.fpn_upsample_add, (top, lateral))


def test_layouts_and_mixed_dtypes():
    top = torch.randn(2, 8, 5, 6)
    lateral = torch.randn(2, 8, 10, 12)
    expected = reference(top, lateral)
    cl = detops_fpn.fpn_upsample_add(
        top.to(memory_format=torch.channels_last), lateral.to(memory_format=torch.channels_last)
    )
    assert torch.equal(cl, expected)
    strided = detops_fpn.fpn_upsample_add(top.transpose(2, 3).contiguous().transpose(2, 3), lateral[:, :, :, :])
    assert torch.equal(strided, expected)
    mixed = detops_fpn.fpn_upsample_add(top.half(), lateral)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, reference(top.half().float(), lateral))


def test_backward_is_repeatable():
    top = torch.randn(2, 16, 13, 19, requires_grad=True)
    lateral = torch.randn(2, 16, 25, 38)
    grad = torch.randn(2, 16, 25, 38)
    first = torch.autograd.grad(detops_fpn.fpn_upsample_add(top, lateral), top, grad)[0]
    for _ in range(3):
        again = torch.autograd.grad(detops_fpn.fpn_upsample_add(top, lateral), top, grad)[0]
        assert torch.equal(first, again)


def test_opcheck():
    top = torch.randn(2, 3, 4, 5, requires_grad=True)
    lateral = torch.randn(2, 3, 8, 10, requires_grad=True)
    torch.library.opcheck(torch.ops.detops.fpn_upsample_add.default, (top, lateral))
    torch.library.opcheck(torch.ops.detops._fpn_upsample_add_backward.default, (torch.randn(2, 3, 8, 10), 4, 5))


def test_empty_lateral_gives_empty_result():
    # F.interpolate refuses a zero output size; the natural result is an empty map.
    out = detops_fpn.fpn_upsample_add(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 0, 5))
    assert out.shape == (1, 2, 0, 5)
    assert torch.ops.detops._fpn_upsample_add_backward(torch.randn(1, 2, 0, 5), 3, 3).eq(0).all()


def test_empty_batch_or_channels():
    for n, c in ((0, 3), (2, 0)):
        out = detops_fpn.fpn_upsample_add(torch.randn(n, c, 2, 2), torch.randn(n, c, 4, 4))
        assert out.shape == (n, c, 4, 4)


@pytest.mark.parametrize(
    "top, lateral, message",
    [
        (torch.randn(2, 3, 4), torch.randn(2, 3, 8, 8), r"top must be a 4-D tensor"),
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8), r"lateral must be a 4-D tensor"),
        (torch.randn(2, 4, 4, 4), torch.randn(2, 3, 8, 8), "same batch size and channels"),
        (torch.randn(1, 3, 4, 4), torch.randn(2, 3, 8, 8), "same batch size and channels"),
        (torch.randn(2, 3, 0, 4), torch.randn(2, 3, 8, 8), "top must have a non-empty spatial size"),
        (torch.ones(2, 3, 4, 4, dtype=torch.int64), torch.ones(2, 3, 8, 8, dtype=torch.int64), "floating-point"),
        (torch.randn(2, 3, 4, 4, device="meta"), torch.randn(2, 3, 8, 8), "same device"),
    ],
)
def test_bad_input(top, lateral, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.detops.fpn_upsample_add(top, lateral)


def test_bad_backward_sizes():
    with pytest.raises(RuntimeError, match="top_height and top_width must be >= 0"):
        torch.ops.detops._fpn_upsample_add_backward(torch.randn(1, 1, 2, 2), -1, 2)
