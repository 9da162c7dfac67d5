"""The detection demo: torchvision's Mask R-CNN (random weights, nothing downloaded) run
on torchvision's own ops and on detops (``detops.use_detops``), with per-op timings on the
inputs the model really produced, and a picture of the detections.

    python examples/demo.py [--out demo-output] [--size 512]

Writes ``<out>/maskrcnn_detops.png`` (detections and the per-op timing chart).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# The interleaved timer of the benchmarks (tools/bench.py).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench  # noqa: E402


def _scene(size):
    """A synthetic street-like image: sky, ground, a few coloured blocks."""
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = size, int(size * 1.5)
    img = torch.zeros(3, h, w)
    img[:, : h // 2] = torch.tensor([0.55, 0.7, 0.9])[:, None, None]
    img[:, h // 2 :] = torch.tensor([0.35, 0.33, 0.3])[:, None, None]
    for _ in range(7):
        x, y = int(torch.randint(0, w - 80, (1,), generator=g)), int(torch.randint(h // 4, h - 80, (1,), generator=g))
        bw, bh = int(torch.randint(30, 160, (1,), generator=g)), int(torch.randint(30, 140, (1,), generator=g))
        img[:, y : y + bh, x : x + bw] = torch.rand(3, 1, 1, generator=g)
    return (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1)


class _Recorder:
    """Keeps the first inputs each op sees while the model runs."""

    def __init__(self):
        self.calls = {}

    def wrap(self, key, fn):
        def recorded(*args, **kwargs):
            self.calls.setdefault(key, (args, kwargs))
            return fn(*args, **kwargs)

        return recorded


def run(out: str, size: int) -> None:
    import torch
    import torchvision
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    import detops

    torch.set_num_threads(2)
    print(f"detops demo: torch {torch.__version__}, torchvision {torchvision.__version__}, 2 threads")
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=size, max_size=int(size * 1.5), box_score_thresh=0.0
    ).eval()
    image = _scene(size)

    # Record what each op receives inside the real pipeline (torchvision's ops).
    rec = _Recorder()
    tv_boxes = torchvision.ops.boxes
    original_bnms = tv_boxes.batched_nms
    fpn, box_pool, mask_pool = model.backbone.fpn, model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool
    fpn_forward, box_forward, mask_forward = fpn.forward, box_pool.forward, mask_pool.forward
    tv_boxes.batched_nms = rec.wrap("batched_nms", original_bnms)
    fpn.forward = rec.wrap("fpn", fpn_forward)
    box_pool.forward = rec.wrap("box_pool", box_forward)
    mask_pool.forward = rec.wrap("mask_pool", mask_forward)
    with torch.no_grad():
        t0 = time.perf_counter()
        expected = model([image])[0]
        tv_total = time.perf_counter() - t0
    tv_boxes.batched_nms = original_bnms
    del fpn.forward, box_pool.forward, mask_pool.forward

    with torch.no_grad(), detops.use_detops(model):
        t0 = time.perf_counter()
        got = model([image])[0]
        detops_total = time.perf_counter() - t0
        ours = {
            "fpn": model.backbone.fpn,
            "box_pool": model.roi_heads.box_roi_pool,
            "mask_pool": model.roi_heads.mask_roi_pool,
        }
    same = torch.equal(got["labels"], expected["labels"]) and torch.allclose(got["boxes"], expected["boxes"], atol=1e-3)
    print(
        f"Mask R-CNN (ResNet-50 FPN, random weights), {image.shape[1]}x{image.shape[2]} image: "
        f"{len(got['boxes'])} detections, {'identical to' if same else 'DIFFERENT FROM'} torchvision's ops"
    )

    rows = []
    with torch.no_grad():
        args, _ = rec.calls["fpn"]
        twin_fpn = ours["fpn"]
        rows.append(("FeaturePyramidNetwork", lambda: twin_fpn(*args), lambda: fpn(*args)))
        for key, label in (
            ("box_pool", "MultiScaleRoIAlign 7x7 (box head)"),
            ("mask_pool", "MultiScaleRoIAlign 14x14 (mask head)"),
        ):
            a, _ = rec.calls[key]
            twin, orig = ours[key], {"box_pool": box_pool, "mask_pool": mask_pool}[key]
            rows.append(
                (f"{label}, {len(torch.cat(a[1]))} boxes", lambda t=twin, a=a: t(*a), lambda o=orig, a=a: o(*a))
            )
        a, _ = rec.calls["batched_nms"]
        rows.append(
            (f"batched_nms (RPN, {len(a[0])} boxes)", lambda a=a: detops.batched_nms(*a), lambda a=a: original_bnms(*a))
        )
    results = []
    print(f"{'op (inputs from the pipeline)':52s} {'detops':>10s} {'torchvision':>12s} {'speed-up':>9s}")
    for label, ours_fn, theirs_fn in rows:
        with torch.no_grad():
            a, b, _ = bench._time_interleaved(ours_fn, theirs_fn, min_seconds=1.0, min_rounds=7)
        results.append((label, a, b))
        print(f"{label:52s} {a * 1e3:8.2f}ms {b * 1e3:10.2f}ms {b / a:8.2f}x")
    print(f"{'whole model, first run (incl. backbone)':52s} {detops_total * 1e3:8.0f}ms {tv_total * 1e3:10.0f}ms")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "maskrcnn_detops.png")
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1.3, 1]})
    ax_img.imshow(image.permute(1, 2, 0).numpy())
    top = got["scores"].argsort(descending=True)[:15]
    overlay = torch.zeros(image.shape[1], image.shape[2])
    for i in top.tolist():
        x1, y1, x2, y2 = got["boxes"][i].tolist()
        ax_img.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, color="yellow"))
        overlay = torch.maximum(overlay, got["masks"][i, 0])
    ax_img.imshow(overlay.numpy(), alpha=0.35, cmap="magma")
    ax_img.set_title("Mask R-CNN (random weights) on detops: top-15 detections")
    ax_img.axis("off")
    labels = [r[0].replace(", ", "\n") for r in results]
    ys = range(len(results))
    ax_bar.barh([y + 0.2 for y in ys], [r[2] * 1e3 for r in results], height=0.4, label="torchvision 0.29.1")
    ax_bar.barh([y - 0.2 for y in ys], [r[1] * 1e3 for r in results], height=0.4, label="detops")
    ax_bar.set_yticks(list(ys), labels, fontsize=8)
    ax_bar.set_xlabel("ms (median of interleaved calls, 2 threads)")
    ax_bar.set_title("per-op time on the pipeline's own inputs")
    ax_bar.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"picture: {path}")
    if not same:
        raise SystemExit("detections differ between torchvision's ops and detops")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(ROOT, "demo-output"))
    parser.add_argument("--size", type=int, default=512, help="shorter image side")
    args = parser.parse_args()
    run(args.out, args.size)
