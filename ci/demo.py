"""The detection demo: detops ops in a detector's post-processing, timed against
torchvision's own ops on the same inputs, plus a picture of what was kept.

    python ci/demo.py [--out demo-output]

Proposals come from ``detops_nms._workloads`` (synthetic RPN-like boxes: nothing is
downloaded). Prints one line per op and writes ``<out>/detections.png``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envs  # noqa: E402

import packages  # noqa: E402


def _best_of(fn, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_inside(out: str) -> None:
    import torch
    import torchvision

    import detops_nms
    from detops_nms._workloads import detections, rpn_proposals

    torch.set_num_threads(2)
    print(f"detops demo: torch {torch.__version__}, torchvision {torchvision.__version__}, 2 threads")
    rows = []
    proposals, objectness = rpn_proposals(4000, seed=7)
    keep = detops_nms.nms(proposals, objectness, 0.7)
    assert torch.equal(keep, torchvision.ops.nms(proposals, objectness, 0.7))
    rows.append(
        (
            "nms (4000 RPN proposals, IoU 0.7)",
            _best_of(lambda: detops_nms.nms(proposals, objectness, 0.7)),
            _best_of(lambda: torchvision.ops.nms(proposals, objectness, 0.7)),
            f"kept {len(keep)}, identical",
        )
    )
    boxes, scores, labels = detections(8000, classes=80, seed=7)
    kept = detops_nms.batched_nms(boxes, scores, labels, 0.5)
    theirs = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
    assert set(kept.tolist()) == set(theirs.tolist())
    rows.append(
        (
            "batched_nms (8000 boxes, 80 classes)",
            _best_of(lambda: detops_nms.batched_nms(boxes, scores, labels, 0.5)),
            _best_of(lambda: torchvision.ops.batched_nms(boxes, scores, labels, 0.5)),
            f"kept {len(kept)}, same set",
        )
    )
    print(f"{'op':40s} {'detops':>10s} {'torchvision':>12s} {'speed-up':>9s}")
    for name, ours, theirs_t, note in rows:
        print(f"{name:40s} {ours * 1e3:8.2f}ms {theirs_t * 1e3:10.2f}ms {theirs_t / ours:8.1f}x  {note}")

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "detections.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for ax, (title, shown) in zip(
        axes, (("before NMS: 4000 proposals", proposals), ("after detops.nms", proposals[keep[:300]]))
    ):
        for x1, y1, x2, y2 in shown[:1500].tolist():
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=0.4, alpha=0.5, color="tab:blue"))
        ax.set_xlim(0, 1216)
        ax.set_ylim(800, 0)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"picture: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(packages.ROOT, "demo-output"))
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        run_inside(args.out)
    else:
        python = envs.ensure("dev")
        cmd = [python, os.path.abspath(__file__), "--inside", "--out", args.out]
        sys.exit(subprocess.run(cmd).returncode)
