"""How the tokens entering a transformer block are laid out, as a plugin declares it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLayout:
    """The tokens one block sees for one frame.

    width: channels C. grid: the (H, W) patch grid. prefix_tokens: tokens before the grid in the
    sequence (CLS, registers). channels_last_grid: tokens come as (N, H, W, C) (Swin) rather than as a
    sequence (N, prefix + H*W, C) (ViT).
    """

    width: int
    grid: tuple[int, int]
    prefix_tokens: int = 1
    channels_last_grid: bool = False

    def shape(self, frames: int) -> tuple[int, ...]:
        """The block input's shape for `frames` frames."""
        height, width = self.grid
        if self.channels_last_grid:
            return (frames, height, width, self.width)
        return (frames, self.prefix_tokens + height * width, self.width)
