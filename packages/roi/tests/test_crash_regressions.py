"""Inputs that once crashed the process (int64 overflow, then SIGFPE) or hung it for
seconds (infinite boxes with adaptive sampling). Each runs in its own process with a time
limit, so a regression fails one test instead of killing or stalling the run."""

import pytest

from detops_core.testing import run_isolated

SETUP = """
import time, torch, detops_roi
inf = float("inf")
x = torch.randn(1, 4, 5, 5)
rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]])
"""

HUGE_SIZES = [(2**32, 2**32), (2**62, 4), (4, 2**62)]
CALLS = {
    "ps_roi_align": "detops_roi.ps_roi_align(x, rois, {size})",
    "ps_roi_pool": "detops_roi.ps_roi_pool(x, rois, {size})",
    "roi_align": "detops_roi.roi_align(x, rois, {size})",
    "roi_pool": "detops_roi.roi_pool(x, rois, {size})",
    "PSRoIAlign": "detops_roi.PSRoIAlign({size}, 1.0, 2)(x, rois)",
    "PSRoIPool": "detops_roi.PSRoIPool({size}, 1.0)(x, rois)",
    "_ps_roi_align_backward": "torch.ops.detops._ps_roi_align_backward("
    "torch.zeros(1, 1, 1, 1), rois, 1.0, {size[0]}, {size[1]}, 2, 1, 4, 5, 5)",
    "_ps_roi_pool_backward": "torch.ops.detops._ps_roi_pool_backward("
    "torch.zeros(1, 1, 1, 1), rois, 1.0, {size[0]}, {size[1]}, 1, 4, 5, 5)",
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_huge_output_size_raises(name):
    calls = "".join(
        f"""
try:
    {CALLS[name].format(size=size)}
except RuntimeError as e:
    print(e)
else:
    raise SystemExit("no error for output_size {size}")
"""
        for size in HUGE_SIZES
    )
    out = run_isolated(SETUP + calls)
    for size in HUGE_SIZES:
        assert f"output_size ({size[0]}, {size[1]})" in out, out


# Boxes whose width or height is infinite in float32 (or exactly inf): every sample of every
# bin is NaN or +-inf, so the result is zero, and it must cost nothing like 2^30 samples.
INFINITE_BOXES = [
    [0, -3e38, 0.0, 3e38, 2.0],
    [0, 0.0, -3e38, 2.0, 3e38],
    [0, 1.0, 1.0, float("inf"), 3.0],
    [0, float("-inf"), 1.0, 3.0, 3.0],
    [0, 1.0, float("-inf"), 3.0, float("inf")],
]
ALIGN_CALLS = {
    "roi_align": "detops_roi.roi_align(x, r, 7, 1.0, -1, aligned)",
    "ps_roi_align": "detops_roi.ps_roi_align(x, r, 2, 1.0, -1)",
    "multi_level_roi_align": "detops_roi.multi_level_roi_align("
    "[x, x[:, :, :3, :3]], r, torch.ones(len(r), dtype=torch.int64), 7, [1.0, 0.5], -1, aligned)",
}


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("name", sorted(ALIGN_CALLS))
def test_infinite_box_is_zero_and_fast(name, aligned):
    call = ALIGN_CALLS[name]
    out = run_isolated(
        SETUP
        + f"""
aligned = {aligned}
x.requires_grad_(True)
r = torch.tensor({INFINITE_BOXES})
start = time.perf_counter()
y = {call}
y.sum().backward()
elapsed = time.perf_counter() - start
assert y.shape[0] == len(r), y.shape
assert torch.count_nonzero(y) == 0, y
assert torch.count_nonzero(x.grad) == 0, x.grad
print(elapsed)
""",
        timeout=60,
    )
    assert float(out) < 1.0, f"{name} on infinite boxes took {out} s"
