"""open_clip's VisionTransformer as a stadapt FrameBackbone."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
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

_CHUNK_ELEMENTS = 1 << 20  # elements per piece of the elementwise work: 4 MiB in float32


def _row_chunks(*tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Matching pieces (views) of same-shaped tensors, split along their rows (all but the last dim)."""
    width = tensors[0].shape[-1] if tensors[0].dim() else 1
    flat = [t.view(-1, width) for t in tensors]
    rows = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return list(zip(*(f.split(rows) for f in flat), strict=True))


class _QuickGELUFunction(torch.autograd.Function):
    """x * sigmoid(1.702 x) that saves only x for the backward pass (the sigmoid is recomputed) and
    works in row pieces, so that its temporaries are a piece's size, not the (N, tokens, 4 x width)
    hidden activation's: in training the backward of this activation was the peak of the step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        x = x.contiguous()
        out = torch.empty_like(x)
        for xs, os in _row_chunks(x, out):
            torch.sigmoid(xs * 1.702, out=os)
            os.mul_(xs)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
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
        raise PluginError("the installed open_clip runs its transformer sequence-first",
                          "pip install -U open_clip_torch")
    visual.proj = None  # the video head reads the CLS feature before CLIP's image-text projection
    return visual


class ClipBackbone(FrameBackbone):
    """Tokens (N, 1 + H*W, C): the CLS token, then the patch grid.

    Features as open_clip pools them: CLIP's CLS token (or mean patch token, `final_ln_after_pool`) with
    the final norm `ln_post` applied after the mean over time, as the reference's head does; where
    open_clip normalises every token before pooling (`pool_type` avg) or pools with an attentional
    pooler (CoCa), the features are open_clip's own pooled feature per frame and `video_norm` is the
    identity. The image-text projection `proj` is never used.
    """

    def __init__(self, visual: ForeignModule) -> None:
        super().__init__()
        self.visual = visual
        self._blocks = list(visual.transformer.resblocks)
        self._plain_attention = [is_plain_self_attention(block.attn) for block in self._blocks]
        self._layout = TokenLayout(width=visual.transformer.width, grid=tuple(visual.grid_size), prefix_tokens=1)
        pool = getattr(visual, "pool_type", "tok")
        if getattr(visual, "attn_pool", None) is not None:
            self._pooling = "open_clip"  # attentional pooler: open_clip's own _pool per frame
            self.feature_width = int(visual.ln_post.normalized_shape[0])
        elif pool == "tok" or (pool == "avg" and getattr(visual, "final_ln_after_pool", False)):
            self._pooling = "cls" if pool == "tok" else "mean"  # ln_post after the mean over time
            self.feature_width = visual.transformer.width
        elif pool == "avg":
            self._pooling = "open_clip"
            self.feature_width = visual.transformer.width
        else:
            raise PluginError(f"the open_clip vision tower pools with {pool!r}, not into one image feature",
                              "use a tower with pool_type tok or avg, or an attentional pooler")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_norm(self.embed_tokens(images))

    def embed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(images)
        x = x.flatten(2).transpose(1, 2)  # (N, H*W, C)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)

    def embed_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Patch dropout (training only; it drops whole tokens, so it commutes with a per-frame embedding
        added before it) and ln_pre."""
        v = self.visual
        return v.ln_pre(v.patch_dropout(x))

    def final_norm_modules(self) -> list[nn.Module]:
        """ln_post: the final norm wherever this tower applies it (video_norm, or open_clip's own pooling)."""
        return [self.visual.ln_post]

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
            return block.ls_1(self_attention(block.attn, y))
        if hasattr(block, "ln_attn"):  # open_clip's CustomResidualAttentionBlock (qk-norm, scaled cosine, ...)
            return block.ls_1(block.ln_attn(block.attn(y)))
        return block.ls_1(block.attention(y))

    def mlp_norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._blocks[index].ln_2(x)

    def mlp_body(self, index: int, y: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return block.ls_2(block.mlp(y))

    def attention_projections(self, index: int) -> AttentionProjections:
        """CLIP's nn.MultiheadAttention: its packed in_proj and out_proj (and open_clip's layer scale);
        custom blocks (qk-norm, scaled cosine attention) are not plain softmax attention and are refused."""
        block = self._blocks[index]
        if not self._plain_attention[index]:
            raise NotImplementedError(f"block {index} of this open_clip tower is not plain nn.MultiheadAttention "
                                      "(attention_projections)")
        return mha_projections(block.attn, getattr(block.ls_1, "gamma", None))

    def mlp_projections(self, index: int) -> tuple[nn.Linear, nn.Linear]:
        """CLIP's MLP `c_fc` and `c_proj`; refused where open_clip's MLP layer scale (`ls_2`) follows it or
        the MLP is not plain (an open_clip variant with a norm inside it, SwiGLU)."""
        block = self._blocks[index]
        mlp = block.mlp
        layers = (getattr(mlp, "c_fc", None), getattr(mlp, "c_proj", None))
        children = [m for m in mlp.children() if not isinstance(m, (nn.Linear, nn.Identity, nn.Dropout))]
        if not (isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.Linear) and len(children) == 1
                and isinstance(block.ls_2, nn.Identity)):
            raise NotImplementedError(f"block {index}'s MLP is not c_fc, activation, c_proj with nothing after it "
                                      "(a layer scale or another MLP), so it has no mlp_projections")
        return layers[0], layers[1]

    def peft_target_modules(self, index: int) -> list[str]:
        """The attention's `out_proj` and the MLP's `c_fc` and `c_proj`. CLIP's q/k/v projection is the
        packed `in_proj_weight` parameter of nn.MultiheadAttention, not an nn.Linear, so it is not among
        them: a method reaches it through `attention_projections`."""
        block = self._blocks[index]
        return linear_names(self, block.attn, block.mlp)

    def attend_sequence(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's attention is global and position-free (positions enter at `embed`): any (N, L, C) works."""
        return self.attn_body(index, self.attn_norm(index, tokens))

    def block_attention(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        if isinstance(block.attn, nn.MultiheadAttention):
            return mha_query_attention(block.attn, block.ln_1(x))
        return open_clip_query_attention(block.attn, block.ln_1(x))

    def block_modules(self, index: int) -> list[nn.Module]:
        return [self._blocks[index]]

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        if self._pooling == "cls":
            return x[:, 0]
        if self._pooling == "mean":
            return x[:, 1:].mean(dim=1)
        pooled = self.visual._pool(x)[0]
        return pooled.reshape(pooled.shape[0], -1)

    def video_norm(self, features: torch.Tensor) -> torch.Tensor:
        return self.visual.ln_post(features) if self._pooling in ("cls", "mean") else features

    def fit_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A position embedding of another patch grid (weights for another input size, option image_size)
        resampled to this tower's grid as open_clip does (`resize_pos_embed`: class token kept, grid bicubic),
        with a notice. A file of another architecture (another width, patch or class-token layout) is left
        as it is, so the load names its shapes."""
        key = "visual.positional_embedding"
        found, own = state_dict.get(key), self.visual.positional_embedding
        if found is None or found.shape == own.shape or found.ndim != 2 or found.shape[1] != own.shape[1]:
            return state_dict
        side = math.isqrt(found.shape[0] - 1)
        conv = state_dict.get("visual.conv1.weight")
        if side * side != found.shape[0] - 1 or (conv is not None and conv.shape != self.visual.conv1.weight.shape):
            return state_dict
        from open_clip.model import resize_pos_embed

        fitted = dict(state_dict)
        resize_pos_embed(fitted, self)  # reads self.visual.grid_size, writes fitted[key]
        grid = tuple(self.visual.grid_size)
        size = self.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        warnings.warn(f"the weights' position embeddings ({key} {tuple(found.shape)}, a {side}x{side} patch grid) "
                      f"were resampled to this backbone's {grid[0]}x{grid[1]} grid ({size} px: {tuple(own.shape)}) "
                      "as open_clip does (resize_pos_embed, bicubic)", stacklevel=3)
        return fitted

    def native_forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.visual(images)
        pooled = out[0] if isinstance(out, tuple) else out  # output_tokens towers return (pooled, tokens)
        return pooled.reshape(pooled.shape[0], -1)


def open_clip_query_attention(attn: ForeignModule, h: torch.Tensor) -> torch.Tensor:
    """The [CLS] query's attention weights (N, L) of open_clip's own `Attention` module (custom blocks) on
    its normed input h, with its q/k norms or scaled cosine logits, averaged over the heads."""
    n, length, width = h.shape
    heads = attn.num_heads
    q, k, _ = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q = q[:, :1].reshape(n, 1, heads, -1).transpose(1, 2)
    k = k.reshape(n, length, heads, -1).transpose(1, 2)
    if attn.logit_scale is not None:
        scale = torch.clamp(attn.logit_scale, max=attn.logit_scale_max).exp()
        scores = (F.normalize(q.float(), dim=-1) @ F.normalize(k.float(), dim=-1).transpose(-1, -2)) * scale
    else:
        q, k = attn.ln_q(q), attn.ln_k(k)
        scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scale
    return scores.softmax(dim=-1).mean(dim=(1, 2))


def use_memory_saving_quick_gelu(visual: ForeignModule) -> None:
    """Swap open_clip's QuickGELU modules in the tower's MLPs for ours (same values, a quarter less memory)."""
    from open_clip.transformer import QuickGELU as OpenClipQuickGELU

    for block in visual.transformer.resblocks:
        if type(block.mlp.gelu) is OpenClipQuickGELU:
            block.mlp.gelu = QuickGELU()


def build_open_clip_tower(embed_dim: int, vision_cfg: dict, *, quick_gelu: bool) -> nn.Module:
    """open_clip's vision tower built from its model configuration by open_clip's own builder, randomly
    initialised (timm towers without their pretrained weights), without the unused `proj`."""
    from open_clip.model import _build_vision_tower

    cfg = dict(vision_cfg)
    if cfg.get("timm_model_name"):
        cfg["timm_model_pretrained"] = False  # never download: weights come through the plugin
    visual = _build_vision_tower(embed_dim, cfg, quick_gelu=quick_gelu, cast_dtype=None)
    if not cfg.get("timm_model_name"):
        if not getattr(visual.transformer, "batch_first", True):
            raise PluginError("the installed open_clip runs its transformer sequence-first",
                              "pip install -U open_clip_torch")
        use_memory_saving_quick_gelu(visual)
        visual.proj = None
    return visual
