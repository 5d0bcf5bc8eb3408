"""A time budget for training (`train.max_minutes`): plan the steps that fit, so the run ends decayed.

A learning-rate schedule needs to know its last step; a budget in minutes does not say it. So the
run first trains a few steps to measure its speed, then plans the total number of steps that fit
in what is left of the budget, and schedules warmup and decay for that total. The plan is checked
again as the run goes (evaluations and checkpoints cost time too): it is changed only when the
measured speed moves it by more than a few percent, so the schedule does not wobble step by step.

The first step is never measured: it pays for one-time costs (allocations, kernel selection, a
compile) that later steps do not.
"""

from __future__ import annotations

import math
import time

from lmsmith.core.errors import UserError

UNCAPPED = 10**9  # train.steps under `lmsmith build --minutes`: the budget alone decides
PROBE_STEPS = 5  # steps timed before the first plan (after the unmeasured first step)
REPLAN_TOLERANCE = 0.02  # a new plan replaces the old only when it differs by more than this share


class TimeBudget:
    """Plans the total optimizer steps of a run from `minutes` and the speed measured so far."""

    def __init__(self, minutes: float, max_steps: int, warmup_steps: int, eval_every: int, eval_share: float,
                 used_seconds: float = 0.0):
        self.seconds = 60.0 * minutes
        self.max_steps, self.warmup_steps = max_steps, warmup_steps
        # Before the first evaluation its cost is unknown: a validation pass of `eval_share` training
        # steps' worth of forward passes, every `eval_every` steps, is added to each step's time.
        self.eval_overhead = eval_share / eval_every if eval_every else 0.0
        self.started = time.perf_counter() - used_seconds  # a resumed run spends what is left
        self.clock_step: int | None = None  # the step at which the speed measurement began
        self.clock_start = 0.0
        self.planned: int | None = None

    def after_step(self, step: int, planned: int | None) -> int | None:
        """Call after each optimizer step `step` (1, 2, ...); returns the planned total once there is one.

        `planned` is a plan carried over from a checkpoint (a resumed run keeps its schedule).
        """
        if planned is not None and self.planned is None:
            self.planned = planned
        now = time.perf_counter()
        if self.clock_step is None:  # the first step here (of a fresh or resumed run) is not measured
            self.clock_step, self.clock_start = step, now
            return self.planned
        measured = step - self.clock_step
        if measured < PROBE_STEPS:
            return self.planned
        per_step = (now - self.clock_start) / measured
        if self.planned is None:
            per_step *= 1.0 + self.eval_overhead
        remaining = self.seconds - (now - self.started)
        total = min(self.max_steps, step + max(0, math.floor(remaining / per_step)))
        if self.planned is None:
            self._check_room(total, per_step)
            self.planned = max(total, step + 1)
        elif abs(total - self.planned) > REPLAN_TOLERANCE * self.planned:
            self.planned = max(total, step + 1)
        return self.planned

    def _check_room(self, total: int, per_step: float) -> None:
        if total > self.warmup_steps:
            return
        needed = (self.warmup_steps + 10 * PROBE_STEPS) * per_step / 60.0
        raise UserError(f"train.max_minutes={self.seconds / 60:g} is too short: at {per_step:.2f} s a step only "
                        f"{total} steps fit, not even the {self.warmup_steps} warmup steps; give at least "
                        f"{math.ceil(needed * 10) / 10:g} minutes, or lower train.warmup_steps")
