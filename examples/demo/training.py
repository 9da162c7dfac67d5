"""Training the demo detector: one run per model, steppable side by side.

Two runs built from the same weights and seed, stepped alternately on the same batches,
see the same data in the same order, the same learning rates and (each keeps its own RNG
state) the same random draws as long as they make the same decisions, so their losses can
be compared step by step and their step times measured in one interleaved run.
"""

from __future__ import annotations

import contextlib
import time

import torch

import detops

LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4


class TrainingRun:
    """``model`` trained by AdamW with a one-cycle learning rate over ``total_steps`` steps;
    ``on_detops``: each step runs inside ``detops.use_detops(model)``."""

    def __init__(self, model: torch.nn.Module, total_steps: int, seed: int, on_detops: bool) -> None:
        self.model = model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        # Warm-up over 5% of the steps, and at least the two steps OneCycleLR needs.
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=LEARNING_RATE,
            total_steps=total_steps,
            pct_start=max(0.05, 2.5 / total_steps),
        )
        self.rng = torch.Generator().manual_seed(seed).get_state()
        self.on_detops = on_detops
        self.losses: list[float] = []
        self.seconds: list[float] = []

    def _ops(self):
        return detops.use_detops(self.model) if self.on_detops else contextlib.nullcontext()

    def step(self, images: list[torch.Tensor], targets: list[dict]) -> float:
        """One optimisation step; returns the total loss before it."""
        saved = torch.get_rng_state()
        torch.set_rng_state(self.rng)  # the proposal samplers draw from torch's global RNG
        start = time.perf_counter()
        with self._ops():
            losses = self.model(images, targets)
            loss = sum(losses.values())
            self.optimizer.zero_grad()
            loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.seconds.append(time.perf_counter() - start)
        self.rng = torch.get_rng_state()
        torch.set_rng_state(saved)
        self.losses.append(float(loss.detach()))
        return self.losses[-1]


def batches(dataset: list, batch_size: int, steps: int, seed: int):
    """``steps`` batches of ``batch_size`` images drawn from ``dataset`` with replacement."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        picked = torch.randint(0, len(dataset), (batch_size,), generator=g).tolist()
        yield [dataset[i][0] for i in picked], [dataset[i][1] for i in picked]
