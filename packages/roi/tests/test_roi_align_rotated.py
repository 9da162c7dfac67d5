"""roi_align_rotated against the pure-PyTorch sampler of rotated_reference.py (forward, and
backward against that sampler's autograd), against roi_align at r = 0, gradcheck, the CPU
backward's repeatability, bad input with fake kernels, and the machinery."""

import math

import pytest
import torch
from roi_rotated_reference import roi_align_rotated as reference

import detops_roi
from detops_core.testing import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
    assert_opcheck,
    assert_scripts,
    assert_traced_raises_like_native,
    devices,
    float_dtypes,
)

# Forward and gradient agreement with the float64 reference: float64 rounding; float32's
# positions and sums; one or two ulps of the narrow types.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
}


def _rois(n_images, h, w, seed, k=12):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h], dtype=torch.float64) * 1.2 - 1
    size = 0.5 + torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h], dtype=torch.float64) * 0.8
    r = torch.rand(k, 1, generator=g, dtype=torch.float64) * 360 - 180
    batch = (torch.arange(k) % n_images).double()[:, None]
    special = torch.tensor(
        [
            [0, w / 2, h / 2, w + 4.0, h + 4.0, 0.0],  # covers the map, every border
            [1 % n_images, w / 2, h / 2, 3.0, 2.0, 90.0],  # quarter turn
            [0, w / 2, h / 2, 0.0, 3.0, 10.0],  # zero width
            [0, -20.0, -20.0, 3.0, 3.0, 45.0],  # outside
            [0, w / 2, h / 2, math.nan, 3.0, 10.0],  # NaN: a zero row
            [0, w / 2, h / 2, 3.0, 3.0, math.inf],  # infinite angle: a zero row
        ],
        dtype=torch.float64,
    )
    return torch.cat([special, torch.cat([batch, c, size, r], 1)])


def _case(dtype, seed=0, n=2, ch=3, h=9, w=11):
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(n, ch, h, w, generator=g, dtype=torch.float64).to(dtype)
    return x, _rois(n, h, w, seed).to(dtype)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("dtype", float_dtypes())
@pytest.mark.parametrize("device", devices())
def test_forward_and_backward_match_the_reference(device, dtype, sampling_ratio, aligned):
    x, rois = _case(dtype, seed=sampling_ratio + 3 * aligned)
    scale = 0.5
    rois_scaled = rois.clone()
    rois_scaled[:, 1:5] = rois_scaled[:, 1:5] / scale
    xd = x.detach().clone().to(device).requires_grad_()
    got = detops_roi.roi_align_rotated(xd, rois_scaled.to(device), (3, 4), scale, sampling_ratio, aligned)
    assert got.dtype == dtype and got.shape == (len(rois), 3, 3, 4)
    xr = x.detach().double().clone().requires_grad_()
    expected = reference(xr, rois_scaled.double(), (3, 4), scale, sampling_ratio, aligned)
    torch.testing.assert_close(got.detach().cpu().double(), expected.detach(), **TOL[dtype])
    assert got[4:6].abs().sum() == 0  # the NaN and infinite-angle rows
    grad = torch.randn(got.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got.backward(grad.to(dtype).to(device))
    expected.backward(grad.to(dtype).double())
    torch.testing.assert_close(xd.grad.cpu().double(), xr.grad, **TOL[dtype])


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", devices())
def test_zero_angle_equals_roi_align(device, dtype, aligned):
    x, rois = _case(dtype, seed=11)
    rois = rois[6:].clone()
    rois[:, 5] = 0
    cx, cy, w, h = rois[:, 1:5].unbind(1)
    xyxy = torch.stack((rois[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)
    for sr in (-1, 2):
        got = detops_roi.roi_align_rotated(x.to(device), rois.to(device), (5, 4), 1.0, sr, aligned)
        expected = detops_roi.roi_align(x.to(device), xyxy.to(device), (5, 4), 1.0, sr, aligned)
        # Same samples; positions rounded in a different order, so float32 agrees to a few ulps.
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, expected, **tol)


def test_list_of_boxes_equals_rows():
    x, rois = _case(torch.float32, seed=2)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(2)])
    assert torch.equal(detops_roi.roi_align_rotated(x, per_image, 3), detops_roi.roi_align_rotated(x, ordered, 3))
    module = detops_roi.RoIAlignRotated((3, 3), 1.0, -1, True)
    assert torch.equal(module(x, ordered), detops_roi.roi_align_rotated(x, ordered, 3))
    assert "RoIAlignRotated(output_size=(3, 3)" in repr(module)


def test_huge_boxes_visit_only_samples_on_the_map():
    # An adaptive grid of ~200 samples per bin and axis takes the range-limited path; its
    # result must be that of visiting every sample (the reference does).
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    rois = torch.tensor([[0, 4.0, 3.0, 400.0, 300.0, 30.0], [0, 4.0, 3.0, 500.0, 2.0, -60.0]], dtype=torch.float64)
    got = detops_roi.roi_align_rotated(x, rois, 2, 1.0, -1, True)
    torch.testing.assert_close(got, reference(x, rois, (2, 2), 1.0, -1, True), rtol=1e-10, atol=1e-12)
    # A box far beyond any grid: finishes at once and is the exact average over its samples.
    far = torch.tensor([[0, 4.0, 3.0, 1e12, 1e12, 17.0]], dtype=torch.float64)
    out = detops_roi.roi_align_rotated(x, far, 1, 1.0, -1, True)
    assert torch.isfinite(out).all()


def test_gradcheck():
    x, rois = _case(torch.float64, seed=5, ch=2, h=6, w=7)
    xx = x.requires_grad_()
    torch.autograd.gradcheck(lambda t: detops_roi.roi_align_rotated(t, rois[6:], (2, 3), 1.0, 2, True), (xx,))
    torch.autograd.gradcheck(lambda t: detops_roi.roi_align_rotated(t, rois[6:], (2, 3), 0.5, -1, False), (xx,))


def test_cpu_backward_is_repeatable_at_any_thread_count():
    x, rois = _case(torch.float32, seed=9, n=2, ch=40, h=20, w=20)
    rois = torch.cat([rois] * 20)
    grads = []
    threads = torch.get_num_threads()
    try:
        for t in (1, max(2, threads)):
            torch.set_num_threads(t)
            xx = x.clone().requires_grad_()
            detops_roi.roi_align_rotated(xx, rois, 7, 1.0, 2, True).sum().backward()
            grads.append(xx.grad)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grads[0], grads[1])


def _bad_calls():
    x = torch.rand(2, 3, 5, 5)
    ok = torch.tensor([[0, 2.0, 2.0, 2.0, 2.0, 0.0]])
    op = torch.ops.detops.roi_align_rotated
    bwd = torch.ops.detops._roi_align_rotated_backward
    return {
        "rois_shape": (op, (x, torch.rand(1, 5), 1.0, 2, 2, -1, True)),
        "rois_dtype": (op, (x, ok.double(), 1.0, 2, 2, -1, True)),
        "input_dim": (op, (x[0], ok, 1.0, 2, 2, -1, True)),
        "input_int": (op, (x.int(), ok.int(), 1.0, 2, 2, -1, True)),
        "output_size": (op, (x, ok, 1.0, 0, 2, -1, True)),
        "sampling_ratio": (op, (x, ok, 1.0, 2, 2, 5000, True)),
        "grad_shape": (bwd, (torch.rand(1, 3, 2, 3), ok, 1.0, 2, 2, 2, 3, 5, 5, -1, True)),
        "negative_size": (bwd, (torch.rand(1, 3, 2, 2), ok, 1.0, 2, 2, 2, 3, -5, 5, -1, True)),
    }


@pytest.mark.parametrize("name", sorted(_bad_calls()))
def test_bad_input_raises_a_named_error(name):
    op, args = _bad_calls()[name]
    with pytest.raises(RuntimeError, match=r"^detops\.\w+: .*must"):
        op(*args)


@pytest.mark.parametrize("name", ["rois_shape", "sampling_ratio", "grad_shape"])
def test_bad_input_once_traced_raises_like_native(name):
    assert_traced_raises_like_native(*_bad_calls()[name])


@pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, math.nan, math.inf])
def test_batch_index_out_of_range_raises_on_cpu(bad):
    x = torch.rand(2, 3, 5, 5)
    rois = torch.tensor([[0, 2.0, 2.0, 2.0, 2.0, 0.0], [bad, 2.0, 2.0, 2.0, 2.0, 0.0]])
    with pytest.raises(
        RuntimeError, match=r"rois\[1, 0\] is the batch index of RoI 1 and must be an integer in \[0, 1\]"
    ):
        detops_roi.roi_align_rotated(x, rois, 2)


def test_python_argument_errors():
    x = torch.rand(1, 1, 4, 4)
    # A tensor of boxes goes to the op as it is, which names it rois.
    with pytest.raises(RuntimeError, match="rois must be a 2-D tensor of shape \\[K, 6\\]"):
        detops_roi.roi_align_rotated(x, torch.rand(2, 5), 2)
    with pytest.raises(RuntimeError, match="boxes\\[0\\] must be a Tensor\\[L, 5\\]"):
        detops_roi.roi_align_rotated(x, [torch.rand(2, 4)], 2)
    with pytest.raises(RuntimeError, match="sampling_ratio must be an int"):
        detops_roi.roi_align_rotated(x, torch.rand(2, 6), 2, 1.0, 2.0)


def _pool(x, rois):
    return detops_roi.roi_align_rotated(x, rois, (3, 2), 0.5, 2, True)


def test_opcheck_script_compile_export():
    x, rois = _case(torch.float32, seed=4)
    rois = rois[6:]
    assert_opcheck(torch.ops.detops.roi_align_rotated.default, (x.requires_grad_(), rois, 0.5, 3, 2, 2, True))
    x = x.detach()
    assert_scripts(_pool, (x, rois))
    assert_scripts(detops_roi.RoIAlignRotated((3, 2), 0.5, 2, True), (x, rois))
    assert_compiles(_pool, (x.requires_grad_(), rois), backward=True)
    assert_exports(detops_roi.RoIAlignRotated((3, 2), 0.5, 2, True), (x.detach(), rois))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_computes_in_float32(dtype):
    x, rois = _case(torch.float32, seed=6)
    assert_autocast_float32(_pool, (x, rois[6:]), "cpu", dtype)


def test_onnx_export_is_refused_naming_the_op():
    onnx = pytest.importorskip(
        "detops_roi.onnx", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed"
    )
    from detops_core.testing import onnx_session

    x, rois = _case(torch.float32, seed=8)
    with pytest.raises(Exception, match="detops.onnx: roi_align_rotated cannot be exported"):
        onnx_session(detops_roi.RoIAlignRotated(2, 1.0, 2, True), (x, rois[6:]), onnx.translation_table())
