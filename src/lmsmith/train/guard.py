"""The non-finite guard: a step whose loss or gradients are NaN or infinite changes nothing.

One bad batch (a loss spike that overflows) is skipped and training goes on; several in a row
mean the run has diverged, and it stops with advice instead of burning compute on NaNs.
"""

from __future__ import annotations

import math

from lmsmith.core.errors import UserError


class NonFiniteGuard:
    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.skipped = 0  # over the whole run

    @staticmethod
    def is_bad(loss: float, grad_norm: float) -> bool:
        return not (math.isfinite(loss) and math.isfinite(grad_norm))

    def record(self, bad: bool, step: int) -> None:
        """Count a skipped (bad) or taken step; raise once too many bad ones came in a row."""
        if not bad:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.skipped += 1
        if self.in_a_row >= self.max_in_a_row:
            raise UserError(
                f"the loss or the gradients were NaN or infinite for {self.in_a_row} steps in a row "
                f"(up to step {step}): "
                "training has diverged. Lower train.lr, lengthen train.warmup_steps, keep train.grad_clip on, "
                "or use train.precision=bf16 or fp32 instead of fp16; "
                "then start again or resume from an earlier checkpoint"
            )
