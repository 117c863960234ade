"""open_clip's timm vision towers (`TimmModel`: SigLIP, SigLIP2, PE-Core, EVA-CLIP) as a FrameBackbone.

A minimal decomposition of timm's VisionTransformer and Eva blocks for the clip plugin; the timm plugin owns
the full one, and this one is to be folded onto it. The branches call timm's own submodules in the order
timm's block `forward` does; features are timm's own head (pooling, attention pool, fc_norm) before any
projection, per frame, so the video feature is their mean over time.
"""

from __future__ import annotations

import torch
from torch import nn

from stadapt.backbones.attention import query_attention
from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.layout import TokenLayout
from stadapt.errors import PluginError

_HINT = "use an open_clip model whose timm tower is a plain ViT or EVA (timm's VisionTransformer or Eva)"


def strip_projection(visual: nn.Module) -> None:
    """Drop what projects the feature into the text space: the trunk's classifier and open_clip's head."""
    trunk = visual.trunk
    if not isinstance(getattr(trunk, "head", nn.Identity()), nn.Identity):
        trunk.head = nn.Identity()
    visual.head = nn.Sequential()


class TimmTowerBackbone(FrameBackbone):
    """Tokens (N, P + H*W, C), P = the trunk's prefix tokens (class, register); `visual` = open_clip's
    TimmModel (keys `visual.trunk.*`, as open_clip's files have them)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        trunk = visual.trunk
        kind = type(trunk).__name__
        if kind not in ("VisionTransformer", "Eva"):
            raise PluginError(f"the clip plugin cannot decompose the timm tower {kind}", _HINT)
        if getattr(trunk, "dynamic_img_size", False) or getattr(trunk, "rope_mixed", False):
            raise PluginError(f"the timm tower {kind} uses dynamic image sizes or per-block rotary embeddings", _HINT)
        block_kinds = {type(b).__name__ for b in trunk.blocks}
        if not block_kinds <= {"Block", "EvaBlock", "EvaBlockPostNorm"}:
            raise PluginError(f"the timm tower has blocks of kind {', '.join(sorted(block_kinds))}", _HINT)
        strip_projection(visual)
        self.visual = visual
        self._eva = kind == "Eva"
        self._blocks = list(trunk.blocks)
        self._prefix = int(trunk.num_prefix_tokens)
        self._layout = TokenLayout(width=int(trunk.embed_dim), grid=tuple(trunk.patch_embed.grid_size),
                                   prefix_tokens=self._prefix)
        self.feature_width = int(trunk.num_features)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        t = self.visual.trunk
        x = t.patch_embed(images)
        if self._eva:
            x, _ = t._pos_embed(x)
        else:
            x = t.patch_drop(t._pos_embed(x))
        return t.norm_pre(x)

    def _rope(self) -> torch.Tensor | None:
        """Eva's rotary embedding for the fixed grid, as Eva._pos_embed computes it."""
        rope = getattr(self.visual.trunk, "rope", None)
        if rope is None:
            return None
        if hasattr(rope, "feat_shape"):
            return rope.get_embed()
        return rope.get_embed(shape=self.visual.trunk.patch_embed.grid_size)

    def block_layouts(self) -> list[TokenLayout]:
        return [self._layout] * len(self._blocks)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        if not self._eva:
            return block.drop_path1(block.ls1(block.attn(block.norm1(x))))
        if type(block).__name__ == "EvaBlockPostNorm":
            return block.drop_path1(block.norm1(block.attn(x, rope=self._rope())))
        y = block.attn(block.norm1(x), rope=self._rope())
        return block.drop_path1(y if block.gamma_1 is None else block.gamma_1 * y)

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        if not self._eva:
            return block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        if type(block).__name__ == "EvaBlockPostNorm":
            return block.drop_path2(block.norm2(block.mlp(x)))
        y = block.mlp(block.norm2(x))
        return block.drop_path2(y if block.gamma_2 is None else block.gamma_2 * y)

    def block_attention(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        attn = block.attn
        if self._eva or not hasattr(attn, "qkv"):
            return super().block_attention(index, x)  # rotary attention: not provided by this minimal tower
        n, length, width = x.shape
        heads = attn.num_heads
        qkv = attn.qkv(block.norm1(x)).reshape(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # (N, heads, L, d)
        flat = [t.transpose(1, 2).reshape(n, length, -1) for t in (q, k)]
        return query_attention(flat[0], flat[1], heads, first_query=self._prefix > 0)

    def block_modules(self, index: int) -> list[nn.Module]:
        return [self._blocks[index]]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        t = self.visual.trunk
        return t.forward_head(t.norm(x), pre_logits=True)

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        t = self.visual.trunk
        return t.forward_head(t.forward_features(images), pre_logits=True)
