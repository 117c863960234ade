"""RegViT seen by stadapt: embed, then each block as two residual branches, then the features."""

from __future__ import annotations

import torch
from torch import nn

from stadapt.backbones import FrameBackbone, TokenLayout
from stadapt_regvit.model import RegViT


class RegViTBackbone(FrameBackbone):
    """Tokens (N, prefix + H*W, C): CLS and registers first, so adapters leave them alone (they mix
    time only between patch tokens). Features: mean patch token per frame; averaged over time, then
    the final norm, exactly the model's own `features` when a clip has one frame."""

    def __init__(self, model: RegViT) -> None:
        super().__init__()
        self.model = model
        self.feature_width = model.norm.normalized_shape[0]
        self._layout = TokenLayout(width=self.feature_width, grid=model.grid, prefix_tokens=model.prefix)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)

    def block_layouts(self) -> list[TokenLayout]:
        return [self._layout] * len(self.model.blocks)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.model.blocks[index].attention(x)

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.model.blocks[index].feed_forward(x)

    def block_modules(self, index: int) -> list[nn.Module]:
        return [self.model.blocks[index]]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.model.prefix:].mean(dim=1)

    def video_norm(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.norm(features)

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()
