"""The hook contract of the one block loop: what a tuning method runs at the named points of every block.

It lives below the model (stadapt.model.blocks runs the loop) so that a tuner can build its hooks without
importing the model. Hook points of block `index` (each a `Hook`, `(index, tokens) -> tokens`):

- `pre_attn`: the tokens entering the attention branch (after the block's transition);
- `pre_mlp`: the tokens entering the MLP branch (after the attention branch's residual sum).

`observe` sees each branch's input and output, `(index, "attn" | "mlp", input, output) -> output`: checks
and probes, not changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not imported by a recipe's validation, which asks the tuners too
    import torch

Hook = Callable[[int, "torch.Tensor"], "torch.Tensor"]
Observer = Callable[[int, str, "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
HOOK_POINTS = ("pre_attn", "pre_mlp")


@dataclass(frozen=True)
class BlockHooks:
    """What runs at the hook points of every block; None runs nothing there."""

    pre_attn: Hook | None = None
    pre_mlp: Hook | None = None
    observe: Observer | None = None


NO_HOOKS = BlockHooks()
