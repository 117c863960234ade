"""The hook contract of the one block loop: what a tuning method runs at the named points of every block.

It lives below the model (stadapt.model.blocks runs the loop) so that a tuner can build its hooks without
importing the model. Hook points of block `index` (each a `Hook`, `(index, tokens) -> tokens`):

- `pre_attn`: the tokens entering the attention branch (after the block's transition);
- `attn_in`: the attention branch's normed tokens, before its body (attention, projection);
- `attn_body`: replaces the attention body itself, `(index, normed tokens) -> attention output` (what the
  backbone's `attn_body` gives: attention, output projection, layer scale), e.g. ZeroI2V's STDHA, which re-runs
  the attention from the block's `attention_projections` with keys and values shifted across frames;
- `attn_out`: the attention body's output, before the residual sum;
- `pre_mlp`: the tokens entering the MLP branch (after the attention branch's residual sum);
- `mlp_in` / `mlp_out`: the MLP branch's normed tokens before its body / the body's output before the sum;
- `mlp_parallel`: a term added to the residual after the MLP branch, computed from the MLP's normed input
  (AIM's MLP adapter, parallel to the MLP).

The points inside a branch (`attn_in` ... `mlp_parallel`, `attn_body` included) need the backbone's branch split
(its hook `branch_split`): a method using them names it in `Tuner.needs`. Unused, a branch runs whole, as before.

`observe` sees each branch's input and output, `(index, "attn" | "mlp", input, output) -> output`: checks
and probes, not changes.

One point is per model, not per block: `post_embed` (`EmbedHook`, `tokens -> tokens`) sees the embedded
tokens (N*T, L, C), frames of one clip contiguous, after the position embedding and before the backbone's
pre-blocks norm (CLIP's ln_pre), where AIM and ZeroI2V add their temporal embedding; it needs the backbone's
embedding split (`embed_split`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not imported by a recipe's validation, which asks the tuners too
    import torch

Hook = Callable[[int, "torch.Tensor"], "torch.Tensor"]
EmbedHook = Callable[["torch.Tensor"], "torch.Tensor"]
Observer = Callable[[int, str, "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
HOOK_POINTS = ("pre_attn", "attn_in", "attn_body", "attn_out", "pre_mlp", "mlp_in", "mlp_out", "mlp_parallel")
POOLINGS = ("mean_then_norm", "norm_then_mean")
"""How per-frame features become a video's: the mean over time then the backbone's final norm (ST-Adapter's
reference), or the final norm on every frame then the mean (AIM's and ZeroI2V's)."""


@dataclass(frozen=True)
class BlockHooks:
    """What runs at the hook points of every block (and `post_embed` once per model); None runs nothing."""

    pre_attn: Hook | None = None
    pre_mlp: Hook | None = None
    observe: Observer | None = None
    attn_in: Hook | None = None
    attn_out: Hook | None = None
    mlp_in: Hook | None = None
    mlp_out: Hook | None = None
    mlp_parallel: Hook | None = None
    post_embed: EmbedHook | None = None
    attn_body: Hook | None = None

    @property
    def splits_attn(self) -> bool:
        """Whether the attention branch runs as its norm and body (a hook sits between or after them, or
        replaces the body)."""
        return self.attn_in is not None or self.attn_out is not None or self.attn_body is not None

    @property
    def splits_mlp(self) -> bool:
        """Whether the MLP branch runs as its norm and body."""
        return self.mlp_in is not None or self.mlp_out is not None or self.mlp_parallel is not None


NO_HOOKS = BlockHooks()
