"""The third party's own image model, written as they would without stadapt in mind: a ViT with a
CLS token and register tokens ("Vision Transformers Need Registers"), whose image feature is the
final norm of the mean patch token."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        return self.attn(y, y, y, need_weights=False)[0]

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(x)
        return x + self.feed_forward(x)


class RegViT(nn.Module):
    """(N, 3, size, size) -> (N, width) image features; `head` is the ImageNet classifier of the
    released checkpoints, which a video model does not use."""

    def __init__(self, *, size: int, patch: int, width: int, depth: int, heads: int, registers: int,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.grid = (size // patch, size // patch)
        self.prefix = 1 + registers  # CLS, then the registers, then the patch grid
        self.patch_embed = nn.Conv2d(3, width, patch, patch)
        self.prefix_tokens = nn.Parameter(torch.randn(1, self.prefix, width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed
        return torch.cat([self.prefix_tokens.expand(x.shape[0], -1, -1), x], dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, self.prefix:].mean(dim=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
