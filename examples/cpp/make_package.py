"""Make what the C++ example runs: an AOTInductor package of a model that calls detops ops,
its inputs (torch.save) and, for comparison, its eager outputs.

    python examples/cpp/make_package.py OUT_DIR [--model tiny|fasterrcnn]

writes OUT_DIR/model.pt2, OUT_DIR/inputs.pt and OUT_DIR/expected.pt, and prints the detops
libraries the package needs (for DETOPS_OPS_LIBRARIES). `tiny` (default): a convolution,
roi_align over proposals, a linear classifier and batched_nms, the shape of a detector's
second stage; `fasterrcnn`: torchvision's fasterrcnn_resnet50_fpn (random weights, small
images) made exportable by `detops.exportable`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
from torch import Tensor, nn

import detops_core
import detops_nms
import detops_roi


class TinyDetector(nn.Module):
    """Scores proposals from pooled features and keeps the best per class."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.classify = nn.Linear(8 * 4 * 4, classes)

    def forward(self, images: Tensor, proposals: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.features(images)  # stride 2
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        pooled = detops_roi.roi_align(features, rois, (4, 4), spatial_scale=0.5, sampling_ratio=2, aligned=True)
        scores, labels = self.classify(pooled.flatten(1)).softmax(-1).max(-1)
        keep = detops_nms.batched_nms(proposals, scores, labels, 0.5)
        return proposals[keep], scores[keep], labels[keep]


def tiny_inputs(proposals: int = 64, size: int = 48, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 3, size, size, generator=g)
    xy = torch.rand(proposals, 2, generator=g) * (size - 8)
    wh = torch.rand(proposals, 2, generator=g) * (size / 2) + 4
    return images, torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)


def tiny():
    torch.manual_seed(0)
    model = TinyDetector().eval()
    dynamic = {"images": None, "proposals": {0: torch.export.Dim("proposals", min=2, max=4096)}}
    return model, tiny_inputs(), dynamic, contextlib.nullcontext()


class _Detections(nn.Module):
    # A detector's list of dicts as flat tensors (boxes, scores, labels of the one image).
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model([image])[0]
        return out["boxes"], out["scores"], out["labels"]


def fasterrcnn():
    import torchvision

    import detops

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=128, max_size=128
    ).eval()
    image = torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(0))
    # Inside exportable(model): detops ops and export-friendly post-processing with the
    # same results; outside it the model is torchvision's own again.
    return _Detections(model).eval(), (image,), None, detops.exportable(model)


MODELS = {"tiny": tiny, "fasterrcnn": fasterrcnn}
PACKAGES = {"tiny": ["detops_roi", "detops_nms"], "fasterrcnn": ["detops_roi", "detops_nms", "detops_fpn"]}


def make(out: str, model_name: str = "tiny") -> dict[str, float]:
    """Write model.pt2, inputs.pt, expected.pt into `out`; returns the seconds per step."""
    os.makedirs(out, exist_ok=True)
    model, inputs, dynamic, exporting = MODELS[model_name]()
    times = {}
    with torch.no_grad():
        expected = model(*inputs)
        start = time.perf_counter()
        with exporting:
            program = torch.export.export(model, inputs, dynamic_shapes=dynamic, strict=False)
        times["export"] = time.perf_counter() - start
        start = time.perf_counter()
        torch._inductor.aoti_compile_and_package(program, package_path=os.path.join(out, "model.pt2"))
        times["aoti_compile"] = time.perf_counter() - start
    torch.save(tuple(inputs), os.path.join(out, "inputs.pt"))
    torch.save(tuple(expected), os.path.join(out, "expected.pt"))
    return times


def libraries(model_name: str = "tiny") -> list[str]:
    """The detops libraries `model_name`'s package calls into, in load order."""
    return [lib for package in PACKAGES[model_name] for lib in detops_core.native_libraries(package)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    args = parser.parse_args()
    times = make(args.out, args.model)
    print(" ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print("DETOPS_OPS_LIBRARIES=" + ":".join(libraries(args.model)))
