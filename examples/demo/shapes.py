"""The demo's data set: images of discs, squares and triangles, generated from a seed.

Each image has a background of a random colour with pixel noise, up to three stripes of
clutter, and one to four shapes of random kind, colour, size and place. Later shapes
cover earlier ones; a shape left with fewer than ``MIN_PIXELS`` visible pixels is not
annotated. Targets are what torchvision's Mask R-CNN trains on: ``boxes`` (x1, y1, x2, y2,
the visible pixels' extent), ``labels`` (1 disc, 2 square, 3 triangle) and ``masks``.
"""

from __future__ import annotations

import torch

CLASSES = ("disc", "square", "triangle")
SIZE = 128
MIN_PIXELS = 30


def _shape(kind: str, cx: float, cy: float, r: float, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    if kind == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == "square":
        return ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
    # an upright isosceles triangle: apex at (cx, cy - r), base of width 2r at y = cy + r
    return (yy >= cy - r) & (yy <= cy + r) & ((xx - cx).abs() <= (yy - (cy - r)) / 2)


def _randint(low: int, high: int, g: torch.Generator) -> int:
    return int(torch.randint(low, high, (1,), generator=g))


def make_image(g: torch.Generator) -> tuple[torch.Tensor, dict]:
    """One image [3, SIZE, SIZE] in [0, 1] and its target, drawn from ``g``."""
    yy, xx = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij"
    )
    img = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.25 + 0.08 * torch.randn(3, SIZE, SIZE, generator=g)
    for _ in range(_randint(0, 4, g)):
        y = _randint(0, SIZE, g)
        img[:, y : y + 2, :] = torch.rand(3, 1, 1, generator=g)
    masks, labels = [], []
    for _ in range(_randint(1, 5, g)):
        kind = _randint(0, len(CLASSES), g)
        r = _randint(8, 28, g)
        cx, cy = _randint(r, SIZE - r, g), _randint(r, SIZE - r, g)
        m = _shape(CLASSES[kind], cx, cy, r, yy, xx)
        img = torch.where(m, torch.rand(3, 1, 1, generator=g), img)
        masks = [earlier & ~m for earlier in masks]
        masks.append(m)
        labels.append(kind + 1)
    kept = [i for i, m in enumerate(masks) if int(m.sum()) >= MIN_PIXELS]
    masks = torch.stack([masks[i] for i in kept])
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor([labels[i] for i in kept], dtype=torch.int64),
        "masks": masks.to(torch.uint8),
    }
    return img.clamp(0, 1), target


def make_dataset(n: int, seed: int) -> list[tuple[torch.Tensor, dict]]:
    g = torch.Generator().manual_seed(seed)
    return [make_image(g) for _ in range(n)]
