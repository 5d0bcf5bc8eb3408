"""The learning rate over the run, as a factor of each parameter group's peak rate.

    cosine    linear warmup, then half a cosine from the peak down to the floor at the last step
    wsd       warmup-stable-decay: linear warmup, flat at the peak, then a linear fall to the
              floor over the last `decay_fraction` of the steps (a run can be extended from
              any checkpoint taken before the decay)
    constant  linear warmup, then flat

The factor is a pure function of the step, so resuming a run needs nothing but the step number.
"""

from __future__ import annotations

import math

from lmsmith.schema.train import TrainConfig


def lr_factor(step: int, config: TrainConfig, total: int | None = None) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (counted from 0) of `total` steps.

    `total` is `config.steps` unless a time budget planned another number (see budget.py).
    """
    warmup, floor = config.warmup_steps, config.min_lr_ratio
    total = config.steps if total is None else total
    if step < warmup:
        return (step + 1) / warmup  # never 0: the first step already moves the weights a little
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, total - 1 - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    decay_steps = max(1, round(config.decay_fraction * total))
    decay_start = max(warmup, total - decay_steps)
    if step < decay_start:
        return 1.0
    progress = (step - decay_start + 1) / max(1, total - decay_start)
    return 1.0 - (1.0 - floor) * min(1.0, progress)


def set_learning_rates(optimizers, step: int, config: TrainConfig, total: int | None = None) -> float:
    """Scale every group to its peak rate times the schedule; returns the factor."""
    factor = lr_factor(step, config, total)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
    return factor
