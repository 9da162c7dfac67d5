"""One check per piece of torch machinery an op must work in: opcheck, bad calls once
traced, TorchScript, torch.compile, torch.export and autocast. Each runs the op both ways
and compares results with :func:`assert_same`, so a test file only states its cases."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence


def _tensors(value) -> list:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def assert_same(got, expected, *, rtol: Optional[float] = None, atol: Optional[float] = None, what: str = "") -> None:
    """`got` equals `expected`, nested through lists, tuples and dicts: same structure, dtypes
    and shapes; integer and boolean tensors identical; floating ones identical (NaNs where
    the other has them) unless `rtol`/`atol` are given."""
    import torch

    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {type(got).__name__}"
        assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
        assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        exact = (rtol is None and atol is None) or not expected.is_floating_point()
        tol = dict(rtol=0.0, atol=0.0) if exact else dict(rtol=rtol or 0.0, atol=atol or 0.0)
        torch.testing.assert_close(got, expected, **tol, equal_nan=True, msg=lambda m: f"{what}: {m}")
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), f"{what}: keys {list(got)} != {list(expected)}"
        for k in expected:
            assert_same(got[k], expected[k], rtol=rtol, atol=atol, what=f"{what}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        same_length = isinstance(got, (list, tuple)) and len(got) == len(expected)
        assert same_length, f"{what}: {len(got)} items, expected {len(expected)}"
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, rtol=rtol, atol=atol, what=f"{what}[{i}]")
    else:
        assert got == expected, f"{what}: {got!r} != {expected!r}"


def fresh_leaves(args):
    """A copy of `args` in which every tensor that requires grad is a new leaf of the same
    value (so two runs of one case collect separate gradients); the rest is shared."""
    import torch

    if isinstance(args, torch.Tensor):
        return args.detach().clone().requires_grad_() if args.requires_grad else args
    if isinstance(args, dict):
        return {k: fresh_leaves(v) for k, v in args.items()}
    if isinstance(args, (list, tuple)):
        return type(args)(fresh_leaves(a) for a in args)
    return args


def backward_through(outputs) -> None:
    """Backward from a fixed, uneven weighting of every floating output (a plain sum would
    give every element the same gradient and hide permuted gradients)."""
    import torch

    loss = 0.0
    for out in _tensors(outputs):
        if out.is_floating_point() and out.requires_grad:
            weights = torch.arange(out.numel(), device=out.device, dtype=torch.float32).mul(0.37).cos()
            loss = loss + (out.float() * weights.reshape(out.shape)).sum()
    assert isinstance(loss, torch.Tensor), "no output requires grad: nothing to differentiate"
    loss.backward()


def deterministically(fn: Callable) -> Callable:
    """`fn` called under torch.use_deterministic_algorithms(True) (off again after), for
    timing detops' deterministic CUDA backwards against the default ones. On CUDA, torch's
    own cuBLAS products then need CUBLAS_WORKSPACE_CONFIG; it is set if unset."""
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def run():
        torch.use_deterministic_algorithms(True)
        try:
            return fn()
        finally:
            torch.use_deterministic_algorithms(False)

    return run


def _grads(args) -> list:
    return [t.grad for t in _tensors(args) if t.requires_grad]


def assert_opcheck(op, args: Sequence, kwargs: Optional[dict] = None) -> None:
    """torch.library.opcheck with every one of its tests (schema, autograd registration,
    fake kernel, AOT dispatch), on `op` (an OpOverload such as torch.ops.detops.nms.default)."""
    import torch

    torch.library.opcheck(op, tuple(args), kwargs)


def assert_traced_raises_like_native(op, args: Sequence) -> str:
    """`op(*args)` raises on real tensors, and the same call traced by torch.compile
    (fullgraph) and by torch.export raises the same error, same type and first line, when
    the traced code runs: the fake kernel only infers shapes and the native op reports the
    bad call. Returns the message."""
    import pytest
    import torch

    with pytest.raises(Exception) as native:
        op(*args)
    kind, message = type(native.value), str(native.value).splitlines()[0]

    def call(*a):
        return op(*a)

    torch.compiler.reset()  # a fresh compile, not a cached or recompile-limited one
    traced = {
        "compiled": torch.compile(call, fullgraph=True, backend="aot_eager"),
        "exported": torch.export.export(_as_module(call), tuple(args), strict=False).module(),
    }
    for how, fn in traced.items():
        with pytest.raises(Exception) as raised:
            fn(*args)
        got = str(raised.value).splitlines()[0]
        assert got == message, f"{how}: {got!r}, the native op {message!r}"
        assert type(raised.value) is kind, f"{how}: {type(raised.value).__name__} != {kind.__name__}"
    return message


def assert_scripts(fn: Callable, args: Sequence, expected: Any = None, **tol):
    """torch.jit.script(fn) runs `args` to `fn`'s eager result (or `expected`); returns it."""
    import torch

    scripted = torch.jit.script(fn)
    got = scripted(*args)
    assert_same(got, fn(*args) if expected is None else expected, **tol, what="scripted")
    return scripted


def assert_compiles(
    fn: Callable,
    args: Sequence,
    *,
    backward: bool = False,
    backend: str = "inductor",
    dynamic: Optional[bool] = None,
    **tol,
):
    """torch.compile(fn, fullgraph=True) gives eager's result on `args`; with `backward`, also
    the gradients of every argument that requires grad. Returns the compiled function."""
    import torch

    compiled = torch.compile(fn, fullgraph=True, backend=backend, dynamic=dynamic)
    eager_args, compiled_args = fresh_leaves(args), fresh_leaves(args)
    expected = fn(*eager_args)
    got = compiled(*compiled_args)
    assert_same(got, expected, **tol, what="compiled")
    if backward:
        backward_through(expected)
        backward_through(got)
        assert_same(_grads(compiled_args), _grads(eager_args), **tol, what="compiled gradients")
    return compiled


def assert_exports(module, args: Sequence, *, dynamic_shapes=None, more_args: Sequence = (), **tol):
    """torch.export.export(module, args) keeps the detops ops as calls (not traced through)
    and its program gives `module`'s eager result on `args` and on each of `more_args`
    (other sizes, for dynamic shapes). `module` may be a function. Returns the program."""
    import torch

    if not isinstance(module, torch.nn.Module):
        module = _as_module(module)
    program = torch.export.export(module, tuple(args), dynamic_shapes=dynamic_shapes, strict=False)
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert any(t.startswith("detops.") for t in targets), f"no detops op in the exported graph: {targets}"
    for case in (args, *more_args):
        assert_same(program.module()(*case), module(*case), **tol, what="exported")
    return program


def assert_autocast_float32(fn: Callable, args: Sequence, device: str, dtype) -> None:
    """Under torch.autocast(device, dtype), `fn` on `args` cast to `dtype` gives exactly what
    it gives on those narrow values in float32, cast back to `dtype`: the op computed in
    float32 and returned the narrow type (integer results unchanged)."""
    import torch

    def cast(value, to):
        if isinstance(value, torch.Tensor):
            return value.to(to) if value.is_floating_point() else value
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v, to) for v in value)
        return value

    narrow = cast(list(args), dtype)
    expected = cast(fn(*cast(narrow, torch.float32)), dtype)
    with torch.autocast(device, dtype=dtype):
        got = fn(*narrow)
    assert_same(got, expected, what=f"autocast {dtype}")


def _as_module(fn: Callable):
    import torch

    class Function(torch.nn.Module):
        def forward(self, *args):
            return fn(*args)

    return Function()
