"""The sigmoid focal loss written from its definition (Lin et al. 2017, as torchvision
states it) in float64 with plain torch ops, and the cases the tests share.

The reference forms 1 - p_t as t * sigmoid(-x) + (1 - t) * sigmoid(x) and the
cross-entropy as max(x, 0) - t x + log1p(exp(-|x|)) (the textbook stable form; not
F.softplus, whose linear branch above 20 drops the log1p term): exact enough in float64
to judge how close float32 results (detops' and torchvision's) are to the true loss."""

import torch

import detops_losses
from detops_core.testing import register_op


def reference_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    x, t = inputs.double(), targets.double()
    ce = x.clamp(min=0) - t * x + torch.log1p(torch.exp(-x.abs()))
    m = t * torch.sigmoid(-x) + (1 - t) * torch.sigmoid(x)
    loss = ce * m**gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(torch.promote_types(inputs.dtype, targets.dtype))


register_op(
    "sigmoid_focal_loss",
    detops=detops_losses.sigmoid_focal_loss,
    reference=reference_sigmoid_focal_loss,
    torchvision="sigmoid_focal_loss",
)

# Logits a float32 loss must survive: saturated, near exp's underflow (87 to 104), huge,
# signed zeros and tiny values.
ADVERSARIAL_LOGITS = [
    0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 8.0, -8.0, 17.0, -17.0, 20.0, -20.0, 30.0, -30.0,
    86.9, -86.9, 87.5, -87.5, 88.8, -88.8, 100.0, -100.0, 104.0, -104.0, 1e4, -1e4, 1e30, -1e30,
]  # fmt: skip
ADVERSARIAL_TARGETS = [0.0, 1.0, 0.5, 0.25, 0.9]


def make_case(shape=(37, 11), dtype=torch.float32, seed=0, scale=4.0, soft=False, positives=0.2):
    """Logits of spread `scale` and binary targets (or uniform soft targets in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if soft:
        targets = torch.rand(shape, generator=g, dtype=torch.float64)
    else:
        targets = (torch.rand(shape, generator=g, dtype=torch.float64) < positives).double()
    return inputs.to(dtype), targets.to(dtype)


def adversarial_case(dtype=torch.float32):
    """Every adversarial logit against every adversarial target."""
    x = torch.tensor(ADVERSARIAL_LOGITS, dtype=torch.float64)
    t = torch.tensor(ADVERSARIAL_TARGETS, dtype=torch.float64)
    inputs = x.view(-1, 1).expand(-1, t.numel()).contiguous()
    targets = t.view(1, -1).expand(x.numel(), -1).contiguous()
    return inputs.to(dtype), targets.to(dtype)
