"""Helpers for the detops test suites (not used by the ops themselves)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import textwrap

# Why a CUDA case did not run here (devices(), requires_cuda()).
NO_CUDA_REASON = "no CUDA device visible to torch"


def devices() -> list:
    """Devices to parametrise a test over: "cpu", and "cuda" as a case that pytest reports
    as skipped, with the reason, where no CUDA device is visible (never silently passed)."""
    import pytest
    import torch

    no_gpu = not torch.cuda.is_available()
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(no_gpu, reason=NO_CUDA_REASON))]


# ---------------------------------------------------------------------------------------
# CUDA-only tests and CPU-vs-CUDA comparisons


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


def run_isolated(code: str, timeout: float = 120.0) -> str:
    """Run `code` in a fresh Python process and return its standard output.

    For inputs that once crashed the process (SIGFPE, SIGSEGV) or hung it: in a child, a
    crash or a hang fails the one test that caused it instead of killing the whole pytest
    run, and a C++ call that never returns is still stopped by `timeout` seconds.
    Raises AssertionError with the child's output when it exits non-zero or times out.
    """
    source = textwrap.dedent(code)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"still running after {timeout} s:\n{source}\n{e.stdout or ''}{e.stderr or ''}") from None
    if done.returncode != 0:
        raise AssertionError(
            f"exit code {done.returncode}:\n{source}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done.stdout


# ---------------------------------------------------------------------------------------
# The CPU emulation of the CUDA kernels (see detops/cuda_emulation.h)

EMULATION_NAMESPACE = "detops_emulated"
_emulated_schemas = None


def _define_emulated_schemas() -> None:
    # The emulated libraries register kernels for `detops_emulated::<op>`; the schemas are
    # the detops ones, copied here so the C++ sources need no second schema file.
    global _emulated_schemas
    if _emulated_schemas is not None:
        return
    import torch

    lib = torch.library.Library(EMULATION_NAMESPACE, "FRAGMENT")
    for name in torch._C._dispatch_get_all_op_names():
        if name.startswith("detops::"):
            schema = str(torch._C._get_schema(name, ""))
            lib.define(schema.split("::", 1)[1])
    _emulated_schemas = lib


def emulated_ops(package: str):
    """``torch.ops.detops_emulated`` with `package`'s emulated CUDA kernels loaded: the
    package's `.cu` entry points and kernels, run on the CPU for CPU tensors. None when the
    package was built without them (only the `nox -s cuda` and `sanitize` builds have them).
    """
    import importlib

    import torch

    module = importlib.import_module(package)  # registers the detops schemas
    path = os.path.join(os.path.dirname(module.__file__), "_C_emulated.so")
    if not os.path.exists(path):
        return None
    _define_emulated_schemas()
    torch.ops.load_library(path)
    report = os.environ.get("DETOPS_EMULATION_REPORT")
    if report and package not in _reporting:
        _reporting.add(package)
        atexit.register(_write_launches, package, report)
    return getattr(torch.ops, EMULATION_NAMESPACE)


_reporting = set()


def _write_launches(package: str, report: str) -> None:
    # One JSON line per package, appended at exit: `nox -s cuda` prints the per-kernel report.
    with open(report, "a") as f:
        f.write(json.dumps({"package": package, "launches": emulated_launches(package)}) + "\n")


def require_emulated_ops(package: str):
    """emulated_ops(package), or a pytest skip that says why; a failure instead when the
    environment variable DETOPS_REQUIRE_EMULATION is set (as `nox -s cuda` does)."""
    import pytest

    ops = emulated_ops(package)
    if ops is None:
        reason = f"{package} was built without the CUDA emulation (python3 -m nox -s cuda builds and runs it)"
        if os.environ.get("DETOPS_REQUIRE_EMULATION"):
            pytest.fail(reason)
        pytest.skip(reason)
    return ops


def emulated_launches(package: str) -> dict:
    """Launch counts per kernel ("<file> <kernel>") of `package`'s emulated library."""
    import ctypes
    import importlib

    module = importlib.import_module(package)
    lib = ctypes.CDLL(os.path.join(os.path.dirname(module.__file__), "_C_emulated.so"))
    lib.detops_emulated_launches.restype = ctypes.c_char_p
    counts = {}
    for line in lib.detops_emulated_launches().decode().splitlines():
        name, count = line.split("\t")
        counts[name] = int(count)
    return counts


# ---------------------------------------------------------------------------------------
# ONNX export checks (need onnx, onnxscript and onnxruntime: the `onnx` extra)


def onnx_session(model, args: tuple, table: dict, dynamic_shapes=None):
    """Export `model` with `torch.onnx.export(..., dynamo=True)` and the translation `table`,
    load it in ONNX Runtime (CPU) and return ``run(*tensors) -> list of numpy arrays``.
    Skips the test, saying why, where the onnx extra is not installed."""
    import pytest

    pytest.importorskip("onnxscript", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
    import numpy as np
    import onnx
    import torch

    program = torch.onnx.export(
        model.eval(), args, dynamo=True, custom_translation_table=table, dynamic_shapes=dynamic_shapes, verbose=False
    )
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def to_numpy(t):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: pass the bits, typed for ONNX
            bits = t.view(torch.int16).numpy().view(np.uint16)
            return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx.TensorProto.BFLOAT16)
        return t.numpy()

    def run(*tensors):
        return session.run(None, {n: to_numpy(t) for n, t in zip(names, tensors)})

    return run
