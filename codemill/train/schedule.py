"""The paper's learning-rate schedule (SPEC §6), computed by codemill from the step number alone, so that
neither skipped FP16-overflow steps nor a scheduler's defaults can bend it.

Linear warm-up to lr_max over `warmup_steps`, then over `decay_steps`
    lr = lr_min + 0.5 · (lr_max − lr_min) · (1 + cos(π · n / n_decay)),  n = steps since warm-up ended,
then lr_min.
"""

from __future__ import annotations

import math

LR_MAX = 1e-4
LR_MIN = 1e-6
WARMUP_STEPS = 2_000
DECAY_STEPS = 200_000


def learning_rate(step: int, lr_max: float = LR_MAX, lr_min: float = LR_MIN,
                  warmup_steps: int = WARMUP_STEPS, decay_steps: int = DECAY_STEPS) -> float:
    """The learning rate of optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return lr_max * (step + 1) / warmup_steps  # step 0 already learns
    n = min(step - warmup_steps, decay_steps)
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * n / decay_steps))
