"""The CPU emulation of the CUDA kernels (see detops/cuda_emulation.h): loading a package's
emulated library and reading its launch record."""

from __future__ import annotations

import atexit
import contextlib
import json
import os

from .host_sync import SIZE_FROM_DATA, host_synchronisations

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


class _CheckedOps:
    """torch.ops.detops_emulated, each call checked for operators that would make the host
    wait for the stream on a GPU (host_sync.py): an AssertionError names them. The ops that
    must read their output size (SIZE_FROM_DATA) are not checked."""

    def __init__(self, ops):
        self._ops = ops

    def __getattr__(self, name: str):
        op = getattr(self._ops, name)
        if name in SIZE_FROM_DATA:
            return op

        def checked(*args, **kwargs):
            result, waits = host_synchronisations(op, *args, **kwargs)
            assert not waits, f"the CUDA host code of detops::{name} synchronises with the stream: it runs {waits}"
            return result

        return checked


def emulated_ops(package: str):
    """``torch.ops.detops_emulated`` with `package`'s emulated CUDA kernels loaded: the
    package's `.cu` entry points and kernels, run on the CPU for CPU tensors, every call
    checked for host synchronisation (_CheckedOps). None when the package was built without
    them (only the `nox -s cuda` and `sanitize` builds have them).
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
    return _CheckedOps(getattr(torch.ops, EMULATION_NAMESPACE))


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


def _emulated_library(package: str):
    import ctypes
    import importlib

    module = importlib.import_module(package)
    return ctypes.CDLL(os.path.join(os.path.dirname(module.__file__), "_C_emulated.so"))


def _kernel_table(package: str, function: str) -> dict:
    import ctypes

    getter = getattr(_emulated_library(package), function)
    getter.restype = ctypes.c_char_p
    values = {}
    for line in getter().decode().splitlines():
        name, value = line.split("\t")
        values[name] = int(value)
    return values


def emulated_launches(package: str) -> dict:
    """Launch counts per kernel ("<file> <kernel>") of `package`'s emulated library."""
    return _kernel_table(package, "detops_emulated_launches")


def emulated_widest(package: str) -> dict:
    """Per kernel of `package`'s emulated library, the most blocks one launch ran at the same
    time so far (see block_schedule)."""
    return _kernel_table(package, "detops_emulated_widest")


@contextlib.contextmanager
def block_schedule(package: str, seed: int, at_once: int = 1):
    """Inside this `with` statement, `package`'s emulated kernels run the CUDA blocks of each
    launch in an order shuffled by `seed` (the same for the same seed and grid; seed 0 is the
    grid order), up to `at_once` blocks at the same time (files that declare `__shared__`
    one at a time); leaving the statement restores the default, grid order one at a time."""
    import ctypes

    lib = _emulated_library(package)
    lib.detops_emulated_block_schedule.argtypes = [ctypes.c_uint64]
    lib.detops_emulated_blocks_at_once.argtypes = [ctypes.c_uint]
    lib.detops_emulated_block_schedule(seed)
    lib.detops_emulated_blocks_at_once(at_once)
    try:
        yield
    finally:
        lib.detops_emulated_block_schedule(0)
        lib.detops_emulated_blocks_at_once(1)


# (seed, blocks at once): the grid order, two shuffled orders one block at a time, and two
# with four blocks running at once, whose atomics then also interleave as threads happen to run.
SCHEDULES = ((0, 1), (1, 1), (2, 1), (3, 4), (4, 4))


def under_block_schedules(package: str, fn, schedules=SCHEDULES) -> list:
    """fn() once under each (seed, blocks at once) schedule: what a GPU could return on
    different runs."""
    results = []
    for seed, at_once in schedules:
        with block_schedule(package, seed, at_once):
            results.append(fn())
    return results


def same_bits(a, b) -> bool:
    """Whether two tensors are bitwise identical (NaNs and signed zeros included)."""
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def assert_block_order_changes_bits(package: str, fn, expected, tol: float = 1e-5) -> None:
    """fn() (a tensor) under each schedule is close to `expected` every time, but not always
    the same bits: a float-atomic sum, on inputs where the comparison of orders can fail."""
    import torch

    results = under_block_schedules(package, fn)
    for r in results:
        torch.testing.assert_close(r, expected, rtol=tol, atol=tol)
    assert any(not same_bits(r, results[0]) for r in results[1:]), "every block order gave the same bits"


def assert_same_bits_in_every_block_order(package: str, fn, expected, tol: float = 1e-5) -> None:
    """fn() (a tensor or a tuple of them) gives the same bits under every schedule, close to
    `expected` (a CPU kernel's result)."""
    import torch

    results = [r if isinstance(r, (tuple, list)) else (r,) for r in under_block_schedules(package, fn)]
    for schedule, r in zip(SCHEDULES[1:], results[1:]):
        for i, (a, b) in enumerate(zip(r, results[0])):
            assert same_bits(a, b), f"output {i} differs under block schedule (seed, at once) {schedule}"
    want = expected if isinstance(expected, (tuple, list)) else (expected,)
    for a, b in zip(results[0], want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, equal_nan=True)
