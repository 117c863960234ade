"""The one block loop: a backbone's blocks run as transition, attention branch and MLP branch, with named
hook points where a tuning method changes the tokens.

The video model, `stadapt visualize` and the plugin conformance suite all run blocks through here, so what
they run is what the model runs: the same order of operations, the same residual sums.

The hook points and what runs there (`BlockHooks`, `HOOK_POINTS`, `NO_HOOKS`) are the tuners' contract,
defined in stadapt.tuners.hooks and re-exported here: `pre_attn` (the tokens entering the attention branch),
`pre_mlp` (those entering the MLP branch), `observe` (each branch's input and output, to check or probe), the
points inside a branch (`attn_in`, `attn_body`, `attn_out`, `mlp_in`, `mlp_out`, `mlp_parallel`: they run the
branch as the backbone's norm and body, `attn_body` replacing that body) and the model's `post_embed` (run by
`embed`). Without those, a branch runs whole, as it always has, so no number of a method that does not use them
changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from stadapt.backbones.base import FrameBackbone
from stadapt.tuners.hooks import HOOK_POINTS, NO_HOOKS, BlockHooks, EmbedHook, Hook, Observer

__all__ = ["HOOK_POINTS", "NO_HOOKS", "RECOMPUTE", "BlockHooks", "EmbedHook", "Hook", "Observer", "embed", "run_block",
           "run_blocks"]

RECOMPUTE = (None, "mlp", "block")  # what the backward pass recomputes instead of keeping


def embed(backbone: FrameBackbone, images: torch.Tensor, hooks: BlockHooks = NO_HOOKS) -> torch.Tensor:
    """The tokens entering block 0 for (N*T, 3, H, W) frames (those of a clip contiguous): the backbone's
    embedding, split around the `post_embed` hook (before the pre-blocks norm) when a method sets one."""
    if hooks.post_embed is None:
        return backbone.embed(images)
    return backbone.embed_norm(hooks.post_embed(backbone.embed_tokens(images)))


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
    x = x + _branch(_attn(backbone, hooks) if hooks.splits_attn else backbone.attn_branch, "attn", index, x, hooks)
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
    if not hooks.splits_mlp:
        return x + _branch(backbone.mlp_branch, "mlp", index, x, hooks)
    y = backbone.mlp_norm(index, x)

    def body(index: int, x: torch.Tensor) -> torch.Tensor:
        out = backbone.mlp_body(index, y if hooks.mlp_in is None else hooks.mlp_in(index, y))
        return out if hooks.mlp_out is None else hooks.mlp_out(index, out)

    x = x + _branch(body, "mlp", index, x, hooks)
    # the parallel term is summed after the branch, as AIM writes x + mlp(xn) + s * adapter(xn)
    return x if hooks.mlp_parallel is None else x + hooks.mlp_parallel(index, y)


def _attn(backbone: FrameBackbone, hooks: BlockHooks) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """The attention branch as norm, `attn_in`, body, `attn_out` (the backbone's branch split); the body is
    the method's `attn_body` where it sets one, else the backbone's."""
    body = backbone.attn_body if hooks.attn_body is None else hooks.attn_body

    def branch(index: int, x: torch.Tensor) -> torch.Tensor:
        y = backbone.attn_norm(index, x)
        out = body(index, y if hooks.attn_in is None else hooks.attn_in(index, y))
        return out if hooks.attn_out is None else hooks.attn_out(index, out)
    return branch


def _branch(branch: Callable[[int, torch.Tensor], torch.Tensor], name: str, index: int, x: torch.Tensor,
            hooks: BlockHooks) -> torch.Tensor:
    out = branch(index, x)
    return out if hooks.observe is None else hooks.observe(index, name, x, out)
