"""open_clip's VisionTransformer as a stadapt FrameBackbone."""

from __future__ import annotations

import torch
from torch import nn

from stadapt.backbones.attention import is_plain_self_attention, mha_query_attention, self_attention
from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.layout import TokenLayout
from stadapt.errors import PluginError


_CHUNK_ELEMENTS = 1 << 20  # elements per piece of the elementwise work: 4 MiB in float32


def _row_chunks(*tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Matching pieces (views) of same-shaped tensors, split along their rows (all but the last dim)."""
    width = tensors[0].shape[-1] if tensors[0].dim() else 1
    flat = [t.view(-1, width) for t in tensors]
    rows = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return list(zip(*(f.split(rows) for f in flat)))


class _QuickGELUFunction(torch.autograd.Function):
    """x * sigmoid(1.702 x) that saves only x for the backward pass (the sigmoid is recomputed) and
    works in row pieces, so that its temporaries are a piece's size, not the (N, tokens, 4 x width)
    hidden activation's: in training the backward of this activation was the peak of the step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        x = x.contiguous()
        out = torch.empty_like(x)
        for xs, os in _row_chunks(x, out):
            torch.sigmoid(xs * 1.702, out=os)
            os.mul_(xs)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        x, grad = x.contiguous(), grad.contiguous()
        out = torch.empty_like(x)
        for xs, gs, os in _row_chunks(x, grad, out):
            s = torch.sigmoid(xs * 1.702)
            slope = (1 - s).mul_(xs).mul_(1.702).add_(1).mul_(s)  # d/dx = s (1 + 1.702 x (1 - s))
            torch.mul(gs, slope, out=os)
        return out


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation, x * sigmoid(1.702 x), as open_clip computes it, but keeping one
    tensor for the backward pass instead of two: autograd of the plain expression saves x AND the
    sigmoid, two (N, tokens, 4 x width) tensors per block, about a quarter of everything ST-Adapter
    training stores. Without gradients (inference, export) it is the plain expression."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _QuickGELUFunction.apply(x)
        return x * torch.sigmoid(1.702 * x)


def build_visual(
    *, image_size: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int, quick_gelu: bool
) -> nn.Module:
    """A randomly initialised open_clip vision tower without the unused `proj`."""
    from open_clip.transformer import LayerNorm, VisionTransformer

    visual = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        layers=layers,
        heads=heads,
        mlp_ratio=4.0,
        output_dim=output_dim,
        act_layer=QuickGELU if quick_gelu else nn.GELU,
        norm_layer=LayerNorm,
    )
    if not getattr(visual.transformer, "batch_first", False):
        raise PluginError("the installed open_clip runs its transformer sequence-first", "pip install -U open_clip_torch")
    visual.proj = None  # the video head reads the CLS feature before CLIP's image-text projection
    return visual


class ClipBackbone(FrameBackbone):
    """Tokens (N, 1 + H*W, C): the CLS token, then the patch grid; features = CLS, final norm = ln_post."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.feature_width = visual.transformer.width
        self._blocks = list(visual.transformer.resblocks)
        self._plain_attention = [is_plain_self_attention(block.attn) for block in self._blocks]
        self._layout = TokenLayout(width=self.feature_width, grid=tuple(visual.grid_size), prefix_tokens=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(images)
        x = x.flatten(2).transpose(1, 2)  # (N, H*W, C)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(v.patch_dropout(x))

    def block_layouts(self) -> list[TokenLayout]:
        return [self._layout] * len(self._blocks)

    def attn_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        y = block.ln_1(x)
        return block.ls_1(self_attention(block.attn, y) if self._plain_attention[index] else block.attention(y))

    def mlp_branch(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return block.ls_2(block.mlp(block.ln_2(x)))

    def block_attention(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return mha_query_attention(block.attn, block.ln_1(x))

    def block_modules(self, index: int) -> list[nn.Module]:
        return [self._blocks[index]]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]

    def video_norm(self, features: torch.Tensor) -> torch.Tensor:
        return self.visual.ln_post(features)

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)
