"""The machinery of test_fuzz.py: tensor recipes, guarded calls, outcome checks, settings.

Every tensor an example uses is a :class:`T` recipe (shape, dtype, values, layout, device)
whose ``repr`` is a Python expression that rebuilds the same tensor, so a failing
example printed by Hypothesis is a reproducer:

    from fuzz_support import T, inf, nan
    T((1, 4, 8, 8), 'float32', fill='normal', seed=3, layout='channels_last').build()

Every call of a detops op goes through :func:`guarded`: it is timed (a call that takes
longer than ``CALL_LIMIT_S`` fails the example) and runs under a faulthandler watchdog
that kills the process with a traceback after ``HANG_LIMIT_S`` (a kernel stuck while
holding the GIL cannot be interrupted any other way). The frame that makes the call is
named after the call itself, so the traceback of a hang or of a crash (SIGSEGV, SIGFPE:
pytest's faulthandler prints it) shows which example it was. ``DETOPS_FUZZ_TRACE=1``
also prints every call before making it.
"""

from __future__ import annotations

import faulthandler
import math
import os
import re
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import HealthCheck, settings

# A call is slow past this (seconds of both wall and CPU time, see guarded). The ops
# finish the small inputs the fuzzer builds in milliseconds at most; raise it for
# instrumented builds (sanitizers, valgrind).
CALL_LIMIT_S = float(os.environ.get("DETOPS_FUZZ_CALL_LIMIT", "0.5"))
# A call still running after this is a hang: the watchdog ends the run. Longer than the
# slow-call limit so that a slow call that does finish is reported (and shrunk) as an
# ordinary failure instead of killing the run.
HANG_LIMIT_S = float(os.environ.get("DETOPS_FUZZ_HANG_LIMIT", "60"))
TRACE = os.environ.get("DETOPS_FUZZ_TRACE", "") not in ("", "0")

# The exception kinds detops documents: argument checks raise RuntimeError (native ops) or
# ValueError / TypeError / NotImplementedError / IndexError (Python wrappers, as
# torchvision's). Anything else (ZeroDivisionError, OverflowError, AssertionError, ...)
# is a bug.
ALLOWED_ERRORS = (RuntimeError, ValueError, TypeError, NotImplementedError, IndexError)

# Messages of errors that torch itself raises for a result too large to allocate; the
# output size is the argument at fault. Before torch 2.13 the stable ABI replaces torch's
# message by "... API call failed at ..." (README, "What it is").
TOO_LARGE = r"overflow|allocate|memory|too large|2\^63|API call failed"

# ----------------------------------------------------------------------------- settings

CI_PROFILE = "detops-fuzz-ci"
LONG_PROFILE = "detops-fuzz-long"
_HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
# CI: the same examples on every run (derandomize), nothing read from or written to an
# example database, so a CI failure reproduces by rerunning the same command.
settings.register_profile(
    CI_PROFILE,
    max_examples=int(os.environ.get("DETOPS_FUZZ_EXAMPLES", "200")),
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_HEALTH,
)
# --long: fresh random examples, round after round, until the time share runs out.
settings.register_profile(
    LONG_PROFILE,
    max_examples=100,
    derandomize=False,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_HEALTH,
)

# Set from conftest.py (pytest_configure / pytest_collection_modifyitems).
LONG = False
LONG_SECONDS_PER_TEST = 0.0
# A duplicate of the stderr pytest started with: fd 2 itself is redirected into pytest's
# capture file, which is lost when the watchdog ends the process.
REAL_STDERR_FD: int | None = None


def with_profile(test):
    """A ``@given`` test under the CI profile, or the long one with --long (conftest.py
    sets LONG before the test module is imported)."""
    return settings(settings.get_profile(LONG_PROFILE if LONG else CI_PROFILE))(test)


def run_examples(test) -> None:
    """Run a with_profile test; in --long mode round after round (each a fresh random
    search) until its share of the time is spent."""
    end = time.monotonic() + LONG_SECONDS_PER_TEST
    test()
    while LONG and time.monotonic() < end:
        test()


# ----------------------------------------------------------------------------- tensors

FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
SPECIAL_VALUES = (
    math.nan,
    math.inf,
    -math.inf,
    3e38,
    -3e38,
    1e30,
    -1e30,
    65504.0,
    1e-40,
    0.0,
    -0.0,
    2.0**40,
)


def dtype_of(name: str) -> torch.dtype:
    return getattr(torch, name)


def fmt_float(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(float(v))


def _fmt_values(values) -> str:
    if isinstance(values, (list, tuple)):
        return "(" + ", ".join(_fmt_values(v) for v in values) + ("," if len(values) == 1 else "") + ")"
    if isinstance(values, bool):
        return repr(values)
    if isinstance(values, int):
        return repr(values)
    return fmt_float(values)


# The reprs of T print NaN and infinity as these names: `from fuzz_support import T, nan, inf`.
nan = math.nan
inf = math.inf


@dataclass(frozen=True)
class T:
    """Recipe of one tensor.

    shape, dtype: the tensor's. values: the elements (flattened, a tuple of floats) or
    None for seeded random ones: ``fill`` 'normal' (standard normal times ``scale``),
    'extreme' (the same with NaN, inf, huge and tiny values sprinkled in), 'boxes'
    (valid (x1, y1, x2, y2) boxes of a 100x100 image, for large box sets), 'uniform'
    (uniform [0, scale)). layout: 'contiguous', 'channels_last', 'transposed' (last two
    dimensions swapped in memory), 'strided' (every other element of a larger buffer),
    'offset' (non-zero storage offset), 'expanded' (stride 0 along dimension 0: every
    entry along it equals the first). device: 'cpu' or 'meta'. grad: requires_grad.
    """

    shape: tuple
    dtype: str = "float32"
    values: tuple | None = None
    fill: str = "normal"
    seed: int = 0
    scale: float = 1.0
    layout: str = "contiguous"
    device: str = "cpu"
    grad: bool = False

    def _repr_pretty_(self, printer, cycle) -> None:
        # Hypothesis prints failing examples with this: the compact, evaluable repr.
        printer.text(repr(self))

    def __repr__(self) -> str:
        parts = [repr(tuple(self.shape)), repr(self.dtype)]
        if self.values is not None:
            parts.append("values=" + _fmt_values(self.values))
        else:
            parts.append(f"fill={self.fill!r}, seed={self.seed}")
            if self.scale != 1.0:
                parts.append(f"scale={fmt_float(self.scale)}")
        for name, default in (("layout", "contiguous"), ("device", "cpu"), ("grad", False)):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)!r}")
        return "T(" + ", ".join(parts) + ")"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def data64(self) -> torch.Tensor:
        """The values as a float64 tensor of the recipe's shape (before the dtype cast)."""
        if self.values is not None:
            return torch.tensor(self.values, dtype=torch.float64).reshape(self.shape)
        g = torch.Generator().manual_seed(self.seed)
        if self.fill == "boxes":
            n = self.shape[0] if self.shape else 0
            xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
            wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 30
            data = torch.cat([xy, xy + wh], dim=1)
            return data.reshape(self.shape) if data.numel() == self.numel else torch.zeros(self.shape)
        if self.fill == "uniform":
            return torch.rand(self.shape, generator=g, dtype=torch.float64) * self.scale
        data = torch.randn(self.shape, generator=g, dtype=torch.float64) * self.scale
        if self.fill == "extreme" and data.numel():
            pick = torch.rand(self.shape, generator=g) < 0.2
            which = torch.randint(0, len(SPECIAL_VALUES), self.shape, generator=g)
            specials = torch.tensor(SPECIAL_VALUES, dtype=torch.float64)[which]
            data = torch.where(pick, specials, data)
        return data

    def build(self) -> torch.Tensor:
        dtype = dtype_of(self.dtype)
        if dtype.is_floating_point:
            t = self.data64().to(dtype)
        elif self.values is not None:
            # Exact integers (int64 extremes do not survive a float64 round trip).
            t = torch.tensor([_to_int(v, dtype) for v in self.values], dtype=dtype).reshape(self.shape)
        elif dtype == torch.bool:
            t = self.data64() > 0
        else:
            info = torch.iinfo(dtype)
            t = torch.nan_to_num(self.data64() * 4, nan=0.0).round().clamp(info.min, info.max).to(dtype)
        t = _with_layout(t, self.layout)
        if self.device != "cpu":
            t = t.to(self.device)
        if self.grad and t.is_floating_point() and t.device.type == "cpu":
            t.requires_grad_()
        return t


def _to_int(v, dtype: torch.dtype):
    if dtype == torch.bool:
        return bool(v)
    info = torch.iinfo(dtype)
    if isinstance(v, float):
        v = int(round(v)) if math.isfinite(v) else 0
    return min(max(int(v), info.min), info.max)


def _with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed" and t.dim() >= 2:
        shape = list(t.shape)
        shape[-1], shape[-2] = shape[-2], shape[-1]
        return torch.empty(shape, dtype=t.dtype).transpose(-1, -2).copy_(t)
    if layout == "strided" and t.dim() >= 1:
        shape = list(t.shape)
        shape[-1] *= 2
        return torch.zeros(shape, dtype=t.dtype)[..., ::2].copy_(t)
    if layout == "offset":
        buffer = torch.zeros(t.numel() + 3, dtype=t.dtype)
        return buffer[3:].view(t.shape).copy_(t)
    if layout == "expanded" and t.dim() >= 1:
        return t[:1].expand(t.shape) if t.shape[0] > 0 else t
    return t


def build(value: Any) -> Any:
    """``value`` with every T recipe in it (also inside lists, tuples and dicts) built."""
    if isinstance(value, T):
        return value.build()
    if isinstance(value, list):
        return [build(v) for v in value]
    if isinstance(value, tuple):
        return tuple(build(v) for v in value)
    if isinstance(value, dict):
        return {k: build(v) for k, v in value.items()}
    return value


def tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


def any_meta(value: Any) -> bool:
    return any(t.device.type == "meta" for t in tensors_in(value))


# ----------------------------------------------------------------------------- guarded calls


def _run_call(fn, args, kwargs):
    try:
        return fn(*args, **kwargs), None
    except Exception as error:  # noqa: BLE001  (the caller judges every kind)
        return None, error


_RUN_CODE = _run_call.__code__


def _named_runner(label: str):
    # faulthandler prints each frame's code name: naming the calling frame after the call
    # puts the example into the traceback of a crash or a hang.
    name = " ".join(label.split())[:480]
    names = {"co_name": name, "co_qualname": name} if sys.version_info >= (3, 11) else {"co_name": name}
    return types.FunctionType(_RUN_CODE.replace(**names), _run_call.__globals__)


def _trace(text: str) -> None:
    fd = REAL_STDERR_FD if REAL_STDERR_FD is not None else 2
    os.write(fd, (text + "\n").encode("utf-8", "replace"))


class SlowCall(AssertionError):
    pass


@dataclass
class Outcome:
    label: str
    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def raised(self) -> bool:
        return self.error is not None


def _timed_call(runner, fn, args, kwargs):
    watchdog_file = REAL_STDERR_FD if REAL_STDERR_FD is not None else sys.__stderr__
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True, file=watchdog_file)
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        result, error = runner(fn, args, kwargs)
    finally:
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        faulthandler.cancel_dump_traceback_later()
    # Slow only if both clocks say so: wall time grows when other jobs share the cores,
    # CPU time when the kernel runs on several threads.
    return result, error, seconds, cpu, min(seconds, cpu) > CALL_LIMIT_S


def guarded(label: str, fn, *args, timed: bool = True, **kwargs) -> Outcome:
    """Call ``fn(*args, **kwargs)``: watchdog armed, duration measured. Returns the result
    or the exception; raises SlowCall if it took longer than CALL_LIMIT_S (``timed``)."""
    if TRACE:
        _trace("[fuzz] " + label)
    runner = _named_runner(label)
    result, error, seconds, cpu, slow = _timed_call(runner, fn, args, kwargs)
    if timed and slow:
        # The first use of a torch feature in the process (meta kernels, a convolution
        # backend) can pay a one-time initialisation: slow means slow twice in a row.
        _, _, seconds, cpu, slow = _timed_call(runner, fn, args, kwargs)
        if slow:
            raise SlowCall(f"{label} took {seconds:.2f} s ({cpu:.2f} s CPU; limit {CALL_LIMIT_S} s), twice")
    return Outcome(label, result, error, seconds)


# ----------------------------------------------------------------------------- outcome checks


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:2000]}"


def check_outcome(out: Outcome, must: list[str], may: list[str] = (), kind: type | None = None) -> Any:
    """The contract of one call.

    must: regexes naming the arguments the example made invalid on purpose: the call has
    to raise, and the message has to match one of them. may: arguments that can make it
    raise (e.g. an output too large to allocate); a raised message must match one of
    ``must`` or ``may``. Neither: the call is valid and must return. Every exception must
    be of a documented kind (``kind`` if given). Returns the result (None when it raised).
    """
    if out.raised:
        err = out.error
        assert isinstance(err, kind or ALLOWED_ERRORS), f"{out.label} raised an undocumented {describe(err)}"
        reasons = list(must) + list(may)
        assert reasons, f"{out.label} is a valid call but raised {describe(err)}"
        message = str(err)
        assert any(re.search(r, message, re.IGNORECASE | re.DOTALL) for r in reasons), (
            f"{out.label} raised {describe(err)}, a message that names none of {reasons}"
        )
        return None
    assert not must, f"{out.label} returned instead of raising for {must}"
    return out.result


def check_unchanged(label: str, before: list[torch.Tensor], after: list[torch.Tensor]) -> None:
    """The ops never write into their arguments."""
    for i, (b, a) in enumerate(zip(before, after)):
        if a.device.type == "meta":
            continue
        assert torch.equal(torch.nan_to_num(b.detach()), torch.nan_to_num(a.detach())) and torch.equal(
            b.detach().isnan(), a.detach().isnan()
        ), f"{label} modified its tensor argument #{i}"


def snapshot(value: Any) -> list[torch.Tensor]:
    return [t.detach().clone() if t.device.type != "meta" else t for t in tensors_in(value)]


def tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 3e-2}.get(dtype, 0.0)


def assert_close_where_finite(label: str, ours: torch.Tensor, expected: torch.Tensor, rel: float, magnitude: float):
    """Where ``expected`` (the oracle) is finite, ``ours`` equals it within ``rel`` relative
    to the values' magnitude."""
    assert ours.shape == expected.shape, f"{label}: shape {list(ours.shape)}, expected {list(expected.shape)}"
    o = ours.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    finite = torch.isfinite(e)
    if magnitude > 1e30:
        # Sums of values near the float range overflow or not depending on their order.
        finite &= torch.isfinite(o)
    if not bool(finite.any()):
        return
    diff = (o - e).abs()
    bound = rel * (1.0 + magnitude + e.abs())
    bad = finite & ~(diff <= bound)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{label}: {int(bad.sum())} of {e.numel()} elements differ from the oracle, first at {idx}: "
            f"{float(o[idx])!r} vs {float(e[idx])!r} (tolerance {float(bound[idx]):.3g})"
        )


def finite_magnitude(*tensors: torch.Tensor) -> float:
    """The largest finite absolute value among the tensors (0 if none)."""
    m = 0.0
    for t in tensors:
        if t is None or t.numel() == 0 or t.device.type == "meta":
            continue
        v = t.detach().to(torch.float64).abs()
        v = v[torch.isfinite(v)]
        if v.numel():
            m = max(m, float(v.max()))
    return m


def all_finite(*tensors: torch.Tensor) -> bool:
    return all(t is None or bool(torch.isfinite(t.detach().to(torch.float64)).all()) for t in tensors)


@dataclass
class Expect:
    """What an example expects from detops: errors it must raise (``must``), may raise
    (``may``), and whether it must fit the oracle."""

    must: list[str] = field(default_factory=list)
    may: list[str] = field(default_factory=list)
    kind: type | None = None

    def fault(self, regex: str) -> None:
        self.must.append(regex)

    def maybe(self, regex: str) -> None:
        self.may.append(regex)

    @property
    def valid(self) -> bool:
        return not self.must
