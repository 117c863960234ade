"""classy-vision's VisionTransformer (the architecture of SWAG's ViTs) as a stadapt FrameBackbone."""

from __future__ import annotations

import torch
from torch import nn

from stadapt.backbones.attention import (
    AttentionProjections,
    is_plain_self_attention,
    mha_projections,
    mha_query_attention,
    self_attention,
)
from stadapt.backbones.base import ForeignModule, FrameBackbone, linear_names
from stadapt.backbones.layout import TokenLayout
from stadapt.errors import PluginError


def build_vit(*, image_size: int, patch_size: int, layers: int, heads: int, width: int, mlp_dim: int) -> nn.Module:
    """A randomly initialised classy-vision VisionTransformer without a head (SWAG's trunk), no dropout."""
    from stadapt.extras import require

    VisionTransformer = require("classy_vision.models.vision_transformer", extra="swag",
                                what="the swag backbone").VisionTransformer
    vit = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=width,
        mlp_dim=mlp_dim,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        classifier="token",
    )
    # ClassyModel's metaclass hands out a non-Module wrapper (for its head machinery); keep the module.
    vit = getattr(vit, "classy_model", vit)
    if not isinstance(vit, nn.Module) or type(vit).__name__ != "VisionTransformer":
        raise PluginError("the installed classy-vision builds no plain VisionTransformer module",
                          "pip install classy-vision==0.7.0")
    return vit


class SwagBackbone(FrameBackbone):
    """Tokens (N, 1 + H*W, C) batch-first: the class token, then the patch grid.

    classy-vision runs its encoder sequence-first (S, N, C); the branches transpose around the attention
    only, so each computes exactly what the EncoderBlock computes. Features = the class token before the
    encoder's final LayerNorm, which `video_norm` applies after the mean over time.
    """

    def __init__(self, vit: ForeignModule) -> None:
        super().__init__()
        self.vit = vit
        self.feature_width = int(vit.hidden_dim)
        self._blocks = list(vit.encoder.layers)
        self._plain_attention = [is_plain_self_attention(block.self_attention) for block in self._blocks]
        side = vit.image_size // vit.patch_size
        self._layout = TokenLayout(width=self.feature_width, grid=(side, side), prefix_tokens=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        v = self.vit
        x = v.conv_proj(images)  # (N, C, n_h, n_w)
        x = x.reshape(x.shape[0], v.hidden_dim, -1).transpose(1, 2)  # (N, n_h * n_w, C)
        cls = v.class_token.expand(x.shape[0], -1, -1)  # (1, 1, C) -> (N, 1, C)
        x = torch.cat([cls, x], dim=1)
        x = x + v.encoder.pos_embedding.transpose(0, 1)  # (S, 1, C) -> (1, S, C)
        return v.encoder.dropout(x)

    def block_layouts(self) -> list[TokenLayout]:
        return [self._layout] * len(self._blocks)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.attn_body(index, self.attn_norm(index, x))

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_body(index, self.mlp_norm(index, x))

    def attn_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._blocks[index].ln_1(x)

    def attn_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        if self._plain_attention[index]:
            return block.dropout(self_attention(block.self_attention, y))
        y = y.transpose(0, 1)  # the module is sequence-first
        y, _ = block.self_attention(query=y, key=y, value=y, need_weights=False)
        return block.dropout(y.transpose(0, 1))

    def mlp_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._blocks[index].ln_2(x)

    def mlp_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        return self._blocks[index].mlp(y)

    def attention_projections(self, index: int) -> AttentionProjections:
        """The block's nn.MultiheadAttention: packed in_proj and out_proj; SWAG has no layer scale."""
        return mha_projections(self._blocks[index].self_attention)

    def mlp_projections(self, index: int) -> tuple[nn.Linear, nn.Linear]:
        """classy-vision's MLPBlock: `linear_1` and `linear_2` (its dropouts are off in eval mode; SWAG has no
        layer scale)."""
        mlp = self._blocks[index].mlp
        return mlp.linear_1, mlp.linear_2

    def peft_target_modules(self, index: int) -> list[str]:
        """The attention's `out_proj` and the MLP's two linear layers. The q/k/v projection is the packed
        `in_proj_weight` of nn.MultiheadAttention, not an nn.Linear: reach it through `attention_projections`."""
        block = self._blocks[index]
        return linear_names(self, block.self_attention, block.mlp)

    def attend_sequence(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """SWAG's attention is global and position-free (positions enter at `embed`): any (N, L, C) works."""
        return self.attn_body(index, self.attn_norm(index, tokens))

    def block_attention(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return mha_query_attention(block.self_attention, block.ln_1(x))

    def block_modules(self, index: int) -> list[nn.Module]:
        return [self._blocks[index]]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]

    def video_norm(self, features: torch.Tensor) -> torch.Tensor:
        return self.vit.encoder.ln(features)

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit(images)  # classy-vision's forward: the class token after encoder.ln (trunk output)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        """SWAG's release layout: the VisionTransformer's own keys (what vit_b16.torch holds)."""
        return dict(self.vit.state_dict())
