"""Learning-rate schedule: linear warmup from 0, then half-cosine to 0, stepped per iteration.

A pure function of the step, so resuming needs no scheduler state and any step's rate can be checked.
"""

from __future__ import annotations

import math


def lr_factor(step: int, warmup: int, total: int) -> float:
    """The multiplier of the base rate for optimizer step `step` (0-based) of `total`."""
    if step < warmup:
        return (step + 1) / warmup  # step 0 already moves: a zero first step would be wasted work
    decay = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, decay) / decay))
