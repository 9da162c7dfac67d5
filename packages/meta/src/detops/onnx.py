"""ONNX export of models that use detops ops (needs the ``onnx`` extra: onnx, onnxscript).

    import detops.onnx
    program = detops.onnx.export(model, (images,), "model.onnx", dynamic_shapes=...)

Every detops op maps to standard ONNX operators with detops' semantics; where an argument
has no exact mapping the export raises an error naming the op and the argument. The
per-op mappings and their exactness are documented in ``detops_nms.onnx``,
``detops_roi.onnx``, ``detops_deform.onnx``, ``detops_deform_attn.onnx`` and
``detops_fpn.onnx``.
"""

from __future__ import annotations

from typing import Any, Optional

import detops_deform.onnx
import detops_deform_attn.onnx
import detops_fpn.onnx
import detops_losses.onnx
import detops_nms.onnx
import detops_roi.onnx

__all__ = ["export", "translation_table"]


def translation_table() -> dict:
    """``{torch.ops.detops.<op>.default: onnxscript function}`` for every detops op, for
    ``torch.onnx.export(..., dynamo=True, custom_translation_table=...)``."""
    table = {}
    packages = (detops_nms.onnx, detops_roi.onnx, detops_deform.onnx, detops_deform_attn.onnx, detops_fpn.onnx)
    for package in (*packages, detops_losses.onnx):
        table.update(package.translation_table())
    return table


def export(model, args: tuple, f: Optional[Any] = None, **kwargs):
    """``torch.onnx.export(model, args, f, dynamo=True, ...)`` with detops' translations.

    A ``custom_translation_table`` in `kwargs` is merged in and wins for the ops it names.
    Returns the ``torch.onnx.ONNXProgram`` (also written to `f` when given)."""
    import torch

    table = translation_table()
    table.update(kwargs.pop("custom_translation_table", None) or {})
    kwargs.setdefault("dynamo", True)
    return torch.onnx.export(model, args, f, custom_translation_table=table, **kwargs)
