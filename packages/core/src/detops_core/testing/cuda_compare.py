"""CPU-vs-CUDA comparisons: the tolerance an op states and the assertion that uses it."""

from __future__ import annotations


def cpu_vs_cuda_tolerance(dtype, float64: float, float32: float, narrow_ulps: float = 2.0) -> dict:
    """rtol / atol for assert_cuda_matches_cpu on one op, from the two figures the op's test
    states: its CPU and CUDA kernels' agreement in float64 and in float32 (0 when both sum
    in the same order, more where CUDA sums with atomics in any order).

    float16 and bfloat16 are computed in float32 on both devices and rounded once to the
    narrow type, so two float32 results that differ by a hair can still round to
    neighbouring values: the narrow tolerance is `narrow_ulps` units in the last place of
    the narrow type (relative) on top of the float32 one.
    """
    import torch

    if dtype == torch.float64:
        return dict(rtol=float64, atol=float64)
    ulp = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}.get(dtype, 0.0)
    return dict(rtol=float32 + narrow_ulps * ulp, atol=float32)


def assert_cuda_matches_cpu(cuda, cpu, tol=None, what: str = "") -> None:
    """The CUDA result `cuda` against the CPU result `cpu` of the same call: same dtype and
    shape; integer and boolean results (indices, argmax) identical; floating results
    identical when `tol` is None, else within ``tol`` (rtol / atol) after dividing both by
    max(1, max |cpu|), so atol is relative to the result's own scale. NaNs must match."""
    import torch

    assert cuda.device.type == "cuda", f"{what}: expected a CUDA result, got one on {cuda.device}"
    assert cpu.device.type == "cpu", f"{what}: expected a CPU result, got one on {cpu.device}"
    got = cuda.detach().cpu()
    cpu = cpu.detach()
    assert got.dtype == cpu.dtype, f"{what}: dtype {got.dtype} on CUDA, {cpu.dtype} on the CPU"
    assert got.shape == cpu.shape, f"{what}: shape {tuple(got.shape)} on CUDA, {tuple(cpu.shape)} on the CPU"
    if tol is None or not cpu.is_floating_point():
        if cpu.is_floating_point():  # NaN != NaN: compare where the NaNs are, then the rest
            same = torch.equal(got.isnan(), cpu.isnan()) and torch.equal(got.nan_to_num(), cpu.nan_to_num())
        else:
            same = torch.equal(got, cpu)
        assert same, f"{what}: CUDA and CPU results differ where they must be identical"
        return
    finite = cpu[torch.isfinite(cpu)]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    torch.testing.assert_close(
        got.double() / scale, cpu.double() / scale, **tol, equal_nan=True, msg=lambda m: f"{what}: {m}"
    )
