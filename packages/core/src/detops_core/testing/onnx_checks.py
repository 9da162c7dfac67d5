"""ONNX export checks (need onnx, onnxscript and onnxruntime: the `onnx` extra)."""

from __future__ import annotations


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
