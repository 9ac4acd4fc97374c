"""Learning-rate schedule: linear warm-up times cosine annealing, computed from the step (so resuming needs
no scheduler state). The official code's CosineAnnealingLR(T_max=500k) over 100k steps leaves the rate at
~0.9x after warm-up; ``cosine_steps`` reproduces that (set it equal to ``steps`` for a full decay; None keeps the
rate constant after warm-up)."""

import math


def learning_rate(step: int, base: float, warmup_steps: int, cosine_steps: int | None) -> float:
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if cosine_steps is None:
        return base * warm
    cos = 0.5 * (1.0 + math.cos(math.pi * min(step, cosine_steps) / cosine_steps))
    return base * warm * cos
