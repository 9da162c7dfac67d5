"""The demo's pictures: detections on held-out images, and the training report."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

COLOURS = ((1.0, 0.85, 0.1), (0.1, 0.9, 1.0), (1.0, 0.3, 0.8))  # per class


def detections(images: list, predictions: list, classes: tuple, path: str, columns: int = 4) -> None:
    """Each image with its predicted masks (tinted), boxes, labels and scores."""
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred in zip(axes.flat, images, predictions):
        picture = image.permute(1, 2, 0).clone()
        for label, mask in zip(pred["labels"].tolist(), pred["masks"][:, 0] > 0.5):
            tint = torch.tensor(COLOURS[label - 1])
            picture[mask] = 0.5 * picture[mask] + 0.5 * tint
        ax.imshow(picture.clamp(0, 1).numpy())
        for (x1, y1, x2, y2), label, score in zip(
            pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist()
        ):
            colour = COLOURS[label - 1]
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, color=colour))
            ax.text(
                x1,
                y1 - 1,
                f"{classes[label - 1]} {score:.2f}",
                color="black",
                fontsize=7,
                bbox={"facecolor": colour, "pad": 1, "lw": 0},
            )
    fig.suptitle("Mask R-CNN trained on detops: held-out images with two or more shapes (scores >= 0.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=90, pil_kwargs={"quality": 85})  # JPEG: the images' pixel noise makes PNGs large
    plt.close(fig)


def _smooth(values: list, window: int) -> list:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def training(detops_losses: list, torchvision_losses: list, step_ms: dict, op_rows: list, path: str) -> None:
    """Loss curves of both runs (the whole run smoothed; the compared steps one by one),
    their median step times, and per-op times."""
    fig, (ax_loss, ax_cmp, ax_step, ax_ops) = plt.subplots(
        1, 4, figsize=(21, 4.8), gridspec_kw={"width_ratios": [1.3, 1.1, 0.7, 1.3]}
    )
    window = 20
    ax_loss.plot(_smooth(detops_losses, window), label="detops ops", color="C0")
    ax_loss.plot(_smooth(torchvision_losses, window), label="torchvision ops (same seed)", color="C1")
    ax_loss.set(xlabel="step", ylabel=f"total loss (mean of {window} steps)", yscale="log", title="training loss")
    ax_loss.legend()
    steps = range(1, len(torchvision_losses) + 1)
    ax_cmp.plot(steps, detops_losses[: len(torchvision_losses)], label="detops ops", color="C0", lw=2.5)
    ax_cmp.plot(steps, torchvision_losses, label="torchvision ops", color="C1", lw=1, ls="--")
    ax_cmp.set(xlabel="step", ylabel="total loss", title="the two runs, step by step (same batches)")
    ax_cmp.legend()
    names = list(step_ms)
    ax_step.bar([n.replace(" ", "\n") for n in names], [step_ms[n] for n in names], color=["C0", "C1"])
    ax_step.set(ylabel="ms per training step (median, interleaved)", title="whole training step")
    labels = [r[0].replace(", ", "\n") for r in op_rows]
    ys = range(len(op_rows))
    ax_ops.barh(
        [y + 0.2 for y in ys], [r[2] * 1e6 for r in op_rows], height=0.4, label="torchvision 0.29.1", color="C1"
    )
    ax_ops.barh([y - 0.2 for y in ys], [r[1] * 1e6 for r in op_rows], height=0.4, label="detops", color="C0")
    ax_ops.set_yticks(list(ys), labels, fontsize=8)
    ax_ops.set(xlabel="us (median of interleaved calls)", title="per op, on the trained model's own inputs")
    ax_ops.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
