"""What ONNX export costs or gains on the CPU: each op exported with detops.onnx and run in
ONNX Runtime (CPU execution provider, as many threads as torch uses), against detops eager
on the same inputs (see tools/bench.py). Workloads are the packages' CPU benchmark workloads:
RPN-like proposals for nms, the Mask R-CNN P2 map with 512 RoIs for the RoI ops, and a
ResNet stage for deform_conv2d. Skipped, with the reason, without the onnx extra."""

import importlib.util
import math
import os

import torch

import detops
from detops_nms._workloads import detections, rpn_proposals

ALTERNATIVE = "ONNX Runtime"


def _bench_module(package: str, name: str):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", package, "benchmarks", name)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _session(fn, args):
    import onnxruntime

    import detops.onnx

    program = detops.onnx.export(_Call(fn), args)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    return lambda: session.run(None, feeds)


def _case(op, workload, fn, args, check):
    run = _session(fn, args)
    got = torch.from_numpy(run()[0])
    want = fn(*args)
    check(got, want)
    return (op, workload, lambda: fn(*args), run, ALTERNATIVE)


def _same(got, want):
    assert torch.equal(got, want)


def _close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def cases(quick: bool, device: str = "cpu"):
    if device != "cpu":
        return  # ONNX Runtime runs here on its CPU execution provider only
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"ONNX Runtime rows need the onnx extra and onnxruntime: {e}") from None
    n = 1000 if quick else 20000
    boxes, scores = rpn_proposals(n)
    yield _case("nms", f"{n} RPN-like proposals, IoU 0.7", lambda b, s: detops.nms(b, s, 0.7), (boxes, scores), _same)
    boxes, scores, labels = detections(n)
    yield _case(
        "batched_nms",
        f"{n} boxes, 80 classes, IoU 0.5",
        lambda b, s, c: detops.batched_nms(b, s, c, 0.5),
        (boxes, scores, labels),
        _same,
    )

    roi = _bench_module("roi", "bench_roi.py")
    g = torch.Generator().manual_seed(0)
    k, channels = (64, 49) if quick else (512, 245)
    features = torch.randn(2, channels, 200, 304, generator=g)
    rois = roi.proposals(k)
    scale = roi.SCALE
    workload = f"{k} rois, 7x7, C={channels}"
    for op, fn in (
        ("roi_align", lambda x, r: detops.roi_align(x, r, 7, scale, 2, True)),
        ("roi_pool", lambda x, r: detops.roi_pool(x, r, 7, scale)),
        ("ps_roi_align", lambda x, r: detops.ps_roi_align(x, r, 7, scale, 2)),
        ("ps_roi_pool", lambda x, r: detops.ps_roi_pool(x, r, 7, scale)),
    ):
        yield _case(op, workload + (", sr 2" if "align" in op else ""), fn, (features, rois), _close)

    c = 16 if quick else 64
    x = torch.randn(2, c, 64, 64, generator=g)
    offset = torch.randn(2, 18, 64, 64, generator=g) * 2
    mask = torch.rand(2, 9, 64, 64, generator=g)
    weight = torch.randn(c, c, 3, 3, generator=g) / math.sqrt(9 * c)
    yield _case(
        "deform_conv2d",
        f"2x{c}x64x64, 3x3, {c} out, mask",
        lambda a, o, w, m: detops.deform_conv2d(a, o, w, padding=1, mask=m),
        (x, offset, weight, mask),
        _close,
    )
