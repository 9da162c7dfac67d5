"""COCO-style box and mask mAP of a detector on the demo's held-out images, computed by
pycocotools: the reference implementation of the COCO metric, whose numbers are the ones
torchvision's and detectron2's reference scripts report."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _xywh(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def _rle(mask: torch.Tensor) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_map(predictions: list[dict], targets: list[dict], size: tuple[int, int], classes: tuple[str, ...]) -> dict:
    """mAP@[.5:.95] and mAP@.5 of boxes and of masks (a predicted mask is its probability
    map above 0.5). ``predictions``: torchvision detection outputs; ``targets``: the
    ground truth in the same order."""
    height, width = size
    images, annotations, results = [], [], []
    for image_id, (pred, target) in enumerate(zip(predictions, targets)):
        images.append({"id": image_id, "height": height, "width": width})
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"]):
            xywh = _xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": xywh,
                    "area": float(mask.sum()),
                    "segmentation": _rle(mask),
                    "iscrowd": 0,
                }
            )
        masks = pred["masks"][:, 0] > 0.5
        for box, label, score, mask in zip(
            pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist(), masks
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": _xywh(box),
                    "score": score,
                    "segmentation": _rle(mask),
                }
            )
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }
    stats = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground_truth.createIndex()
        detections = ground_truth.loadRes(results) if results else None
        for kind, iou_type in (("box", "bbox"), ("mask", "segm")):
            if detections is None:
                stats[f"{kind}_map"] = stats[f"{kind}_map50"] = 0.0
                continue
            evaluation = COCOeval(ground_truth, detections, iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            stats[f"{kind}_map"], stats[f"{kind}_map50"] = float(evaluation.stats[0]), float(evaluation.stats[1])
    return stats
