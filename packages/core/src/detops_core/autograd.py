"""Autograd registrations derived from an op's schema, so a package's ``_registrations.py`` names the
arguments it needs instead of repeating each schema's argument list by position (the
``None, None, ...`` gradient tuples, one setup function per op).

    register_autograd("detops::roi_align", backward, save=("rois",))

    def backward(args, grad):
        n, c, h, w = args.input            # a tensor argument not saved: its shape
        return {"input": torch.ops.detops._roi_align_backward(grad, args.rois, ...)}
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Dict, Sequence

import torch
from torch.fx.operator_schemas import get_signature_for_torch_op


def _argument_names(qualname: str) -> list:
    namespace, name = qualname.split("::")
    (signature,) = get_signature_for_torch_op(getattr(getattr(torch.ops, namespace), name).default)
    return list(signature.parameters)


def _shape_of(value):
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [v.shape for v in value]
    return value


def register_autograd(
    qualname: str,
    backward: Callable[..., Dict[str, object]],
    *,
    save: Sequence[str] = (),
    save_outputs: Sequence[int] = (),
    materialize_grads: bool = True,
) -> None:
    """Register `backward` as the gradient of op `qualname` ("namespace::name").

    ``backward(args, *grads)`` gets one attribute per schema argument: the tensors named in
    `save` themselves; every other tensor argument as its shape (a list of shapes for a
    list of tensors); the rest as passed. ``args.outputs`` holds the outputs whose indices
    are in `save_outputs` and ``args.needs_grad`` maps argument names to whether autograd
    wants their gradient. It returns ``{argument name: gradient}``; arguments it leaves out
    get none. With `materialize_grads` False, outputs nobody differentiated arrive as None
    instead of zeros (for integer outputs such as an argmax).
    """
    names = _argument_names(qualname)
    saved = list(save)
    unknown = [n for n in saved if n not in names]
    if unknown:
        raise ValueError(f"{qualname} has no argument(s) {unknown}; its arguments are {names}")

    # Everything that does not depend on the call is resolved here: these closures run on
    # every call of the op, and their cost is most of an op's fixed overhead.
    count = len(names)
    saved_at = [names.index(n) for n in saved]
    kept_at = [i for i, n in enumerate(names) if n not in saved]
    fields = [names[i] for i in kept_at] + saved
    unset, unneeded = (None,) * count, (False,) * count
    known = set(names)

    def setup_context(ctx, inputs, output):
        # An optional argument left out of the call (its default, None) may be missing.
        if len(inputs) < count:
            inputs = (*inputs, *unset[len(inputs) :])
        if not materialize_grads:
            ctx.set_materialize_grads(False)
        tensors = [inputs[i] for i in saved_at]
        if save_outputs:
            outputs = output if isinstance(output, (list, tuple)) else (output,)
            tensors += [outputs[i] for i in save_outputs]
        ctx.save_for_backward(*tensors)
        ctx.kept = [_shape_of(inputs[i]) for i in kept_at]

    def run_backward(ctx, *grads):
        tensors = ctx.saved_tensors
        args = SimpleNamespace(**dict(zip(fields, (*ctx.kept, *tensors))))
        args.outputs = dict(zip(save_outputs, tensors[len(saved) :]))
        needs = ctx.needs_input_grad
        args.needs_grad = dict(zip(names, (*needs, *unneeded[len(needs) :])))
        result = backward(args, *grads)
        if not known.issuperset(result):
            extra = sorted(set(result) - known)
            raise ValueError(f"{qualname}: backward returned gradients for unknown arguments {extra}")
        return tuple([result.get(n) if need else None for n, need in zip(names, needs)])

    torch.library.register_autograd(qualname, run_backward, setup_context=setup_context)


def forbid_double_backward(qualname: str, what: str) -> None:
    """Differentiating op `qualname` (a backward op) raises a RuntimeError saying that
    `what` has first derivatives only, instead of silently returning no gradient."""

    def backward(ctx, *grads):
        raise RuntimeError(f"{what}: double backward is not supported (its gradient is implemented once)")

    torch.library.register_autograd(qualname, backward, setup_context=lambda ctx, inputs, output: None)
