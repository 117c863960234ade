"""The one block loop: a backbone's blocks run as transition, attention branch and MLP branch, with named
hook points where a tuning method changes the tokens.

The video model, `stadapt visualize` and the plugin conformance suite all run blocks through here, so what
they run is what the model runs: the same order of operations, the same residual sums.

The hook points and what runs there (`BlockHooks`, `HOOK_POINTS`, `NO_HOOKS`) are the tuners' contract,
defined in stadapt.tuners.hooks and re-exported here: `pre_attn` (the tokens entering the attention branch),
`pre_mlp` (those entering the MLP branch), `observe` (each branch's input and output, to check or probe).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from stadapt.backbones.base import FrameBackbone
from stadapt.tuners.hooks import HOOK_POINTS, NO_HOOKS, BlockHooks, Hook, Observer

__all__ = ["HOOK_POINTS", "NO_HOOKS", "RECOMPUTE", "BlockHooks", "Hook", "Observer", "run_block", "run_blocks"]

RECOMPUTE = (None, "mlp", "block")  # what the backward pass recomputes instead of keeping


def run_block(backbone: FrameBackbone, index: int, x: torch.Tensor, hooks: BlockHooks = NO_HOOKS, *,
              until: str | None = None, recompute_mlp: bool = False) -> torch.Tensor:
    """Block `index` on `x`. `until="attn"` stops at the tokens entering the attention branch (what its
    attention map is computed from); `recompute_mlp` keeps only the input of the pre_mlp hook + MLP branch
    pair for the backward pass (activation checkpointing)."""
    x = backbone.transition(index, x)
    if hooks.pre_attn is not None:
        x = hooks.pre_attn(index, x)
    if until == "attn":
        return x
    x = x + _branch(backbone.attn_branch, "attn", index, x, hooks)
    if recompute_mlp:
        return checkpoint(_mlp_part, backbone, index, x, hooks, use_reentrant=False)
    return _mlp_part(backbone, index, x, hooks)


def run_blocks(backbone: FrameBackbone, x: torch.Tensor, hooks: BlockHooks = NO_HOOKS, *,
               recompute: str | None = None, stop_before_attn_of: int | None = None) -> torch.Tensor:
    """All blocks on the embedded tokens `x`. `recompute` ("mlp" or "block") trades time for memory;
    `stop_before_attn_of=i` returns the tokens entering block i's attention branch instead."""
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute={recompute!r}: one of {RECOMPUTE}")
    for index in range(len(backbone.block_layouts())):
        if index == stop_before_attn_of:
            return run_block(backbone, index, x, hooks, until="attn")
        if recompute == "block":
            x = checkpoint(run_block, backbone, index, x, hooks, use_reentrant=False)
        else:
            x = run_block(backbone, index, x, hooks, recompute_mlp=recompute == "mlp")
    if stop_before_attn_of is not None:
        raise IndexError(f"block {stop_before_attn_of} is not a block of this backbone")
    return x


def _mlp_part(backbone: FrameBackbone, index: int, x: torch.Tensor, hooks: BlockHooks) -> torch.Tensor:
    if hooks.pre_mlp is not None:
        x = hooks.pre_mlp(index, x)
    return x + _branch(backbone.mlp_branch, "mlp", index, x, hooks)


def _branch(branch: Callable[[int, torch.Tensor], torch.Tensor], name: str, index: int, x: torch.Tensor,
            hooks: BlockHooks) -> torch.Tensor:
    out = branch(index, x)
    return out if hooks.observe is None else hooks.observe(index, name, x, out)
