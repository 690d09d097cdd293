"""Learning-rate schedule: linear warm-up, then constant or cosine decay.

The rate is a pure function of the optimizer step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math

import torch

__all__ = ["learning_rate", "set_learning_rate"]


def learning_rate(
    step: int,
    *,
    lr: float,
    max_steps: int,
    warmup_steps: int = 0,
    schedule: str = "constant",
    min_lr: float = 0.0,
) -> float:
    """The learning rate of optimizer update number ``step + 1`` (``step`` counts from 0).

    Warm-up: ``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``. After it,
    ``constant`` keeps ``lr``; ``cosine`` decays from ``lr`` to ``min_lr`` over the remaining
    ``max_steps - warmup_steps`` updates: ``min_lr + (lr - min_lr) (1 + cos(pi p)) / 2`` with
    ``p = (step - warmup_steps) / (max_steps - warmup_steps)``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = max(1, max_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {schedule!r}; choose 'constant' or 'cosine'")


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set ``lr`` on every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = value
