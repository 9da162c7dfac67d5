"""Where a test runs: the device list, CUDA-only marks, dtypes, and copies of a case on a device."""

from __future__ import annotations

import contextlib

# Why a CUDA case did not run here (devices(), requires_cuda()).
NO_CUDA_REASON = "no CUDA device visible to torch"


def devices() -> list:
    """Devices to parametrise a test over: "cpu", and "cuda" as a case that pytest reports
    as skipped, with the reason, where no CUDA device is visible (never silently passed)."""
    import pytest
    import torch

    no_gpu = not torch.cuda.is_available()
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(no_gpu, reason=NO_CUDA_REASON))]


def requires_cuda():
    """A mark for tests that need a GPU (CPU-vs-CUDA comparisons, mixed-device calls): where
    torch sees none they are reported as skipped with NO_CUDA_REASON (the reason devices()
    gives), never silently passed. Use ``pytestmark = requires_cuda()`` for a whole file."""
    import pytest
    import torch

    return pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA_REASON)


def float_dtypes() -> list:
    """The four floating dtypes every detops op takes, as pytest params named by dtype (the
    default ids "dtype0"... say nothing in a failure report)."""
    import pytest
    import torch

    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    return [pytest.param(d, id=str(d).replace("torch.", "")) for d in dtypes]


def to_device(case, device, dtype=None):
    """A copy of `case` (a tensor, or dicts / lists / tuples of them, nested) on `device`.

    Floating tensors are cast to `dtype` when it is given (integer ones, such as class or
    level indices, never are). Every copied tensor is a new leaf that requires grad exactly
    when the original did, so the same case can run on several devices and each gets its
    own gradients. Anything that is not a tensor is returned as it is.
    """
    import torch

    if isinstance(case, torch.Tensor):
        cast = dtype if dtype is not None and case.is_floating_point() else case.dtype
        return case.detach().to(device=device, dtype=cast).requires_grad_(case.requires_grad)
    if isinstance(case, dict):
        return type(case)((k, to_device(v, device, dtype)) for k, v in case.items())
    if isinstance(case, (list, tuple)):
        return type(case)(to_device(v, device, dtype) for v in case)
    return case


@contextlib.contextmanager
def full_float32():
    """Inside the block, CUDA computes float32 convolutions (cuDNN) and matrix products
    (cuBLAS) in float32. torch's default lets cuDNN use TF32 (a 10-bit mantissa), so a
    last-bit difference in a tensor can become a 1e-3 difference after a convolution, and
    the choice of algorithm alone (eager vs compiled, CPU vs CUDA) changes results by as
    much: comparisons whose expected agreement is float32's need it. No effect on the CPU."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
