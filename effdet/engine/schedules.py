"""Learning-rate schedules of training (per optimiser step)."""
from __future__ import annotations

import math

__all__ = ["WarmupCosine"]


class WarmupCosine:
    """LR factor per optimiser step: linear warm-up from ``start_factor`` to 1, then cosine to ``min_factor``
    (or constant). A plain object so LambdaLR's state dict (saved in checkpoints) holds only numbers."""

    def __init__(self, total_steps: int, warmup_steps: int, start_factor: float, min_factor: float, schedule: str):
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        self.start_factor = float(start_factor)
        self.min_factor = float(min_factor)
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
