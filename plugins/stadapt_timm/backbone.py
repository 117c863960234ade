"""timm's SwinTransformer and VisionTransformer as stadapt FrameBackbones.

The branches call timm's own submodules in the order timm's block `forward` does, so the decomposition
equals timm's forward pass (the conformance suite checks it); the timm model lives at `self.model`, so
the backbone's keys are `model.` + timm's keys.
"""

from __future__ import annotations

import torch
from torch import nn

from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.layout import TokenLayout
from stadapt.errors import PluginError


class TimmSwinBackbone(FrameBackbone):
    """Tokens (N, H, W, C) per block; the stage's patch merging is the transition before its first block.

    Features: the final norm on every token, then the mean over H and W (timm's avg-pool head), so the
    video feature is the mean over space and time of the normalised tokens; `video_norm` is the identity.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "global_pool", "avg") != "avg" or getattr(model, "dynamic_img_size", False):
            raise PluginError("the timm Swin backbone needs global_pool='avg' and a fixed image size",
                              "build the timm model with its defaults")
        self.model = model
        self.feature_width = int(model.num_features)
        self._blocks: list[nn.Module] = []
        self._downsamples: list[nn.Module | None] = []  # the transition before each block, if any
        self._layouts: list[TokenLayout] = []
        for stage in model.layers:
            merge = None if isinstance(stage.downsample, nn.Identity) else stage.downsample
            for j, block in enumerate(stage.blocks):
                self._blocks.append(block)
                self._downsamples.append(merge if j == 0 else None)
                self._layouts.append(TokenLayout(width=int(block.dim), grid=tuple(block.input_resolution),
                                                 prefix_tokens=0, channels_last_grid=True))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.patch_embed(images)  # (N, H, W, C); timm's Swin has no absolute position embedding

    def block_layouts(self) -> list[TokenLayout]:
        return list(self._layouts)

    def transition(self, index: int, x: torch.Tensor) -> torch.Tensor:
        merge = self._downsamples[index]
        return x if merge is None else merge(x)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return block.drop_path1(block._attn(block.norm1(x)))

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        batch, height, width, channels = x.shape
        tokens = x.reshape(batch, -1, channels)  # timm runs the MLP on (N, H*W, C)
        return block.drop_path2(block.mlp(block.norm2(tokens))).reshape(batch, height, width, channels)

    def block_modules(self, index: int) -> list[nn.Module]:
        # the patch merging runs as this block's transition: it belongs to the first block of its stage
        merge = self._downsamples[index]
        return [self._blocks[index]] + ([merge] if merge is not None else [])

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x).mean(dim=(1, 2))

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.forward_head(m.forward_features(images), pre_logits=True)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()


class TimmViTBackbone(FrameBackbone):
    """Tokens (N, P + H*W, C), P = CLS (+ register) tokens.

    Features: the CLS token before the final norm; `video_norm` = timm's `norm` then `fc_norm`, applied
    to the time-averaged CLS feature (as CLIP's ln_post in the reference). With global_pool='avg'
    (fc_norm models, norm = Identity) the features are the mean patch token instead.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        pool = getattr(model, "global_pool", None)
        if getattr(model, "attn_pool", None) is not None or pool not in ("token", "avg"):
            raise PluginError(f"the timm ViT backbone supports global_pool 'token' or 'avg', not {pool!r}",
                              "build the timm model with global_pool='token'")
        if getattr(model, "dynamic_img_size", False) or getattr(model, "pool_include_prefix", False):
            raise PluginError("the timm ViT backbone needs a fixed image size and prefix tokens left out of pooling",
                              "build the timm model with its defaults")
        self.model = model
        self.feature_width = int(model.num_features)
        self._pool = pool
        self._blocks = list(model.blocks)
        self._prefix = int(model.num_prefix_tokens)
        self._layout = TokenLayout(width=int(model.embed_dim), grid=tuple(model.patch_embed.grid_size),
                                   prefix_tokens=self._prefix)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(images)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def block_layouts(self) -> list[TokenLayout]:
        return [self._layout] * len(self._blocks)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return block.drop_path1(block.ls1(block.attn(block.norm1(x))))

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    def block_modules(self, index: int) -> list[nn.Module]:
        return [self._blocks[index]]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        if self._pool == "token":
            return x[:, 0]
        return self.model.norm(x)[:, self._prefix:].mean(dim=1)  # norm is Identity in fc_norm models

    def video_norm(self, features: torch.Tensor) -> torch.Tensor:
        if self._pool == "token":
            features = self.model.norm(features)
        return self.model.fc_norm(features)

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.forward_head(m.forward_features(images), pre_logits=True)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()
