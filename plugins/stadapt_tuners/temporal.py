"""What AIM and ZeroI2V share: a learned temporal embedding added to every token of each frame, after the
position embedding (before CLIP's ln_pre), imported only when a model is built."""

from __future__ import annotations

import torch


def add_temporal_embedding(x: torch.Tensor, embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """(N*T, L, C) embedded tokens, a clip's T frames contiguous: frame t of every token gets embedding[0, t]
    ((1, T, C); the authors' '(b t) n d -> (b n) t d' + temporal_embedding)."""
    clips = x.reshape(-1, frames, *x.shape[1:])
    return (clips + embedding.to(x.dtype).reshape(1, frames, *([1] * (x.ndim - 2)), x.shape[-1])).reshape(x.shape)
