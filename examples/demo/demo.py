"""The detops demo: train a small Mask R-CNN on detops, on images it generates, and see it work.

    python examples/demo/demo.py [--out demo-output] [--steps 1200] [--compare-steps 100]

1. Generates a seeded data set of discs, squares and triangles (shapes.py): 1,000 training
   images and 500 held-out ones, 128 x 128.
2. Trains torchvision's ``MaskRCNN`` with a small backbone and FPN (small_maskrcnn.py) on
   detops' ops (``detops.use_detops``), with a progress bar. For the first
   ``--compare-steps`` steps a copy of the same model, same seed, trains on torchvision's
   own ops, step for step on the same batches (training.py): both runs' step times are
   measured in one interleaved run and their losses compared.
3. Evaluates COCO box and mask mAP on the held-out images (coco_map.py, pycocotools).
4. Checks that the trained model's detections on detops equal those on torchvision's ops,
   and times each op on the inputs the trained model really produced.
5. Writes ``detections.jpg``, ``training.png``, ``summary.json`` and ``summary.txt`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time

import coco_map
import figures
import shapes
import torch
import torchvision
import torchvision.ops.boxes as tv_boxes
import training
from small_maskrcnn import small_maskrcnn
from tqdm import tqdm

import detops

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # the interleaved timer of the benchmarks
import bench  # noqa: E402

TRAIN_IMAGES, HELD_OUT_IMAGES, BATCH = 1000, 500, 4
STEPS, COMPARE_STEPS = 1200, 100
CHECKED_IMAGES = 16  # held-out images whose detections are compared with torchvision's ops


def _predict(model, images, on_detops: bool, batch: int = 8) -> list:
    model.eval()
    out = []
    with torch.no_grad(), detops.use_detops(model) if on_detops else contextlib.nullcontext():
        for i in range(0, len(images), batch):
            out += model(images[i : i + batch])
    return out


def _same(a: dict, b: dict) -> bool:
    return (
        torch.equal(a["labels"], b["labels"])
        and torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
        and torch.allclose(a["scores"], b["scores"], atol=1e-4)
        and torch.allclose(a["masks"], b["masks"], atol=1e-3)
    )


class _Recorder:
    """Keeps the first inputs each wrapped callable sees."""

    def __init__(self):
        self.calls = {}

    def wrap(self, key, fn):
        def recorded(*args, **kwargs):
            self.calls.setdefault(key, (args, kwargs))
            return fn(*args, **kwargs)

        return recorded


def _op_timings(model, images) -> list:
    """(label, detops seconds, torchvision seconds) of each op on the inputs the model gives it."""
    model.eval()
    rec, heads, bnms = _Recorder(), model.roi_heads, tv_boxes.batched_nms
    originals = {"fpn": model.backbone.fpn, "box_pool": heads.box_roi_pool, "mask_pool": heads.mask_roi_pool}
    for key, module in originals.items():
        module.forward = rec.wrap(key, module.forward)
    tv_boxes.batched_nms = rec.wrap("batched_nms", bnms)
    try:
        with torch.no_grad():
            model(images)
    finally:
        tv_boxes.batched_nms = bnms
        for module in originals.values():
            del module.forward
    with detops.use_detops(model):
        twins = {"fpn": model.backbone.fpn, "box_pool": heads.box_roi_pool, "mask_pool": heads.mask_roi_pool}
    fpn, box, mask, nms = (rec.calls[k][0] for k in ("fpn", "box_pool", "mask_pool", "batched_nms"))
    rows = [
        ("FeaturePyramidNetwork", lambda: twins["fpn"](*fpn), lambda: originals["fpn"](*fpn)),
        (
            f"MultiScaleRoIAlign 7x7 (box head), {len(torch.cat(box[1]))} boxes",
            lambda: twins["box_pool"](*box),
            lambda: originals["box_pool"](*box),
        ),
        (
            f"MultiScaleRoIAlign 14x14 (mask head), {len(torch.cat(mask[1]))} boxes",
            lambda: twins["mask_pool"](*mask),
            lambda: originals["mask_pool"](*mask),
        ),
        (f"batched_nms (RPN, {len(nms[0])} boxes)", lambda: detops.batched_nms(*nms), lambda: bnms(*nms)),
    ]
    timings = []
    with torch.no_grad():
        for label, ours, theirs in rows:
            a, b, _ = bench._time_interleaved(ours, theirs, min_seconds=1.0, min_rounds=7)
            timings.append((label, a, b))
    return timings


def _report(s: dict) -> str:
    """The summary, as the demo prints it."""
    ms, cmp, tail = s["step_ms"], s["compare_steps"], s["loss_tail_mean"]
    lines = [
        f"trained {s['steps']} steps of {s['batch']} images in {s['train_seconds']:.0f} s "
        f"({s['steps_per_second']} steps/s, {s['threads']} threads)",
        f"held-out ({s['held_out_images']} images): box mAP@0.5 {s['box_map50']:.3f}, mAP@[.5:.95] {s['box_map']:.3f}; "
        f"mask mAP@0.5 {s['mask_map50']:.3f}, mAP@[.5:.95] {s['mask_map']:.3f}",
        f"training step, first {cmp} steps interleaved: detops ops {ms['detops ops']:.0f} ms, "
        f"torchvision ops {ms['torchvision ops']:.0f} ms: {s['training_step_speedup']}x",
        f"losses of the two runs: step 1 relative difference {s['first_step_loss_relative_difference']:.1e}, "
        f"first step differing by more than 0.1%: {s['first_step_differing']}; "
        f"mean of the last {tail['steps']} compared steps: detops ops {tail['detops ops']:.3f}, "
        f"torchvision ops {tail['torchvision ops']:.3f}",
        f"detections on detops equal to torchvision's ops for the same weights: {s['identical_detections']} images",
        "",
        f"{'op (inputs from the trained model)':52s} {'detops':>10s} {'torchvision':>12s} {'speed-up':>9s}",
    ]
    lines += [f"{label:52s} {a:8.0f}us {b:10.0f}us {b / a:8.2f}x" for label, (a, b) in s["op_us"].items()]
    return "\n".join(lines)


def run(out: str, steps: int, compare_steps: int, threads: int = 2, progress: bool = True) -> dict:
    began = time.perf_counter()
    torch.set_num_threads(threads)
    print(f"detops demo: torch {torch.__version__}, torchvision {torchvision.__version__}, {threads} threads")
    train_set = shapes.make_dataset(TRAIN_IMAGES, seed=1)
    held_out = shapes.make_dataset(HELD_OUT_IMAGES, seed=2)
    print(f"data: {TRAIN_IMAGES} training and {HELD_OUT_IMAGES} held-out images of {', '.join(shapes.CLASSES)}")

    torch.manual_seed(0)
    model = small_maskrcnn(len(shapes.CLASSES), shapes.SIZE)
    compare_steps = min(compare_steps, steps)
    ours = training.TrainingRun(model, steps, seed=0, on_detops=True)
    theirs = training.TrainingRun(copy.deepcopy(model), steps, seed=0, on_detops=False)
    bar = tqdm(total=steps, unit="step", desc="training (detops + torchvision ops)", disable=not progress)
    for step, (images, targets) in enumerate(training.batches(train_set, BATCH, steps, seed=3)):
        loss = ours.step(images, targets)
        if step < compare_steps:
            theirs.step(images, targets)
        elif step == compare_steps:
            bar.set_description("training (detops)")
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update()
    bar.close()
    train_seconds = sum(ours.seconds)
    step_ms = {
        "detops ops": 1e3 * statistics.median(ours.seconds[:compare_steps]),
        "torchvision ops": 1e3 * statistics.median(theirs.seconds),
    }

    held_images, held_targets = [i for i, _ in held_out], [t for _, t in held_out]
    start = time.perf_counter()
    predictions = _predict(model, held_images, on_detops=True)
    stats = coco_map.coco_map(predictions, held_targets, (shapes.SIZE, shapes.SIZE), shapes.CLASSES)
    eval_seconds = time.perf_counter() - start

    checked = CHECKED_IMAGES
    reference = _predict(model, held_images[:checked], on_detops=False)
    identical = sum(_same(a, b) for a, b in zip(predictions, reference))
    op_rows = _op_timings(model, held_images[:BATCH])

    os.makedirs(out, exist_ok=True)
    # Eight held-out images with two or more shapes, their detections scored 0.5 or more.
    busy = [i for i, t in enumerate(held_targets) if len(t["labels"]) >= 2][:8]
    shown = [{k: v[predictions[i]["scores"] >= 0.5] for k, v in predictions[i].items()} for i in busy]
    figures.detections([held_images[i] for i in busy], shown, shapes.CLASSES, os.path.join(out, "detections.jpg"))
    figures.training(ours.losses, theirs.losses, step_ms, op_rows, os.path.join(out, "training.png"))

    first = abs(ours.losses[0] - theirs.losses[0]) / abs(theirs.losses[0])
    differing = [i + 1 for i, (a, b) in enumerate(zip(ours.losses, theirs.losses)) if abs(a - b) > 1e-3 * abs(b)]
    tail = min(20, compare_steps)
    summary = {
        **{k: round(v, 4) for k, v in stats.items()},
        "held_out_images": HELD_OUT_IMAGES,
        "steps": steps,
        "batch": BATCH,
        "threads": threads,
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round(steps / train_seconds, 2),
        "eval_seconds": round(eval_seconds, 1),
        "compare_steps": compare_steps,
        "step_ms": {k: round(v, 1) for k, v in step_ms.items()},
        "training_step_speedup": round(step_ms["torchvision ops"] / step_ms["detops ops"], 2),
        "first_step_loss_relative_difference": float(f"{first:.2g}"),
        "first_step_differing": differing[0] if differing else None,
        "loss_tail_mean": {
            "steps": tail,
            "detops ops": round(statistics.mean(ours.losses[compare_steps - tail : compare_steps]), 4),
            "torchvision ops": round(statistics.mean(theirs.losses[-tail:]), 4),
        },
        "identical_detections": f"{identical}/{checked}",
        "op_us": {label: [round(a * 1e6, 1), round(b * 1e6, 1)] for label, a, b in op_rows},
        "demo_seconds": round(time.perf_counter() - began, 1),
    }
    report = _report(summary)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(report + "\n")
    print(f"\n{report}\n\nwrote {out}: detections.jpg, training.png, summary.json, summary.txt "
          f"({summary['demo_seconds']:.0f} s in all)")  # fmt: skip
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo-output"))
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps on detops")
    parser.add_argument(
        "--compare-steps", type=int, default=COMPARE_STEPS, help="of them, also run on torchvision's ops"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.steps < 4:
        parser.error("--steps: at least 4 (the learning-rate schedule warms up over two)")
    if args.compare_steps < 1:
        parser.error("--compare-steps: at least 1 (the comparison needs a step of each run)")
    summary = run(args.out, args.steps, args.compare_steps, args.threads)
    if summary["identical_detections"] != f"{CHECKED_IMAGES}/{CHECKED_IMAGES}":
        raise SystemExit("detections differ between torchvision's ops and detops")
