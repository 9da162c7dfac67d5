"""Helpers for the detops test suites (not used by the ops themselves)."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import textwrap


def devices() -> list:
    """Devices to parametrise a test over: "cpu", and "cuda" as a case that pytest reports
    as skipped, with the reason, where no CUDA device is visible (never silently passed)."""
    import pytest
    import torch

    no_gpu = not torch.cuda.is_available()
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(no_gpu, reason="no CUDA device visible to torch"))]


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
