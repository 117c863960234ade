"""A line-by-line, plain-torch port of ZeroI2V's video model (leexinhao/ZeroI2V, ECCV 2024), for the tests.

Ported from leexinhao/ZeroI2V at commit ce04d8bf27ec1c9bd2ed8e361b9141b6fd371b16 (the snapshot's HEAD):

- ``mmaction/models/backbones/vit_zero_clip.py``: ``LinearAdapter`` (L17-54), ``LayerNorm`` (L56-62),
  ``QuickGELU`` (L64-66), ``ResidualAttentionBlock_ZeroI2V`` (L68-123), ``Transformer`` (L126-135),
  ``ViT_Zero_CLIP`` (L138-264; ``forward`` L236-264).
- ``mmaction/models/common/stdha.py``: ``TemporalShift`` (L9-60) and ``STDHA`` (L64-355): an
  ``nn.MultiheadAttention`` whose ``stdha_forward`` (L74-312) shifts keys and values across frames right after the
  packed input projection (L168-187). Only the path the backbone takes is ported (query is key is value, no masks,
  no ``bias_k``/``bias_v``, no ``add_zero_attn``, sequence-first); the others are refused.
- ``mmaction/models/common/stdha_ablation.py`` L43-58: the optional ``long_shift_right`` of the ``'stdha'`` branch
  (the SSv2 / u32 configs use ``ViT_Zero_CLIP_ablation`` with ``long_shift_div=12, long_shift_right=True``; with
  ``adapter_type='linear'`` and ``attn_adapter_type='share'`` its block, ``vit_zero_clip_ablation.py`` L107-186, is
  this block with that extra shift).
- ``mmaction/models/backbones/vit_zero_clip_eval.py``: ``ResidualAttentionBlock_Zero`` (L29-55), its ``Transformer``
  (L58-67, here ``TransformerEval``) and ``ViT_Zero_CLIP_eval`` (L72-139): the adapter-free model that loads the
  re-parameterised weights.
- ``mmaction/models/heads/i3d_head.py``: ``I3DHead`` (L12-88): mean over T (``AdaptiveAvgPool3d``), dropout,
  ``fc_cls``.
- ``mmaction/models/recognizers/recognizer3d.py`` L38-46 + ``base.py``: ``Recognizer3D`` holds ``backbone`` and
  ``cls_head``, folds ``(N, views, C, T, H, W)`` into ``N * views`` clips; ``average_clips='prob'`` averages the
  softmax over views at test time (``heads/base.py`` L197-227).
- ``tools/weight_reparam.py``: ``reparameterize_LinearAdapter`` (L22-58), ``fuse_Adapter2Proj`` (L60-69),
  ``reparam_vit_zero_clip`` (L71-145), wrapped as :func:`merge_linear_adapters`.

Class and attribute names are the repository's, so ``Recognizer3D(...).state_dict()`` has exactly the keys of
a checkpoint its mmaction training writes (``backbone.*``, ``cls_head.fc_cls.*``; the data preprocessor's
mean/std are non-persistent buffers and are not saved).

einops is not installed here: the upstream ``rearrange`` calls are written with reshape/permute, each next to
the pattern it replaces. mmcv/mmengine/clip are not used: OpenAI CLIP weight loading and the freezing in
``init_weights`` are training concerns and are left out; the adapters' upstream init (``D_fc2`` zero, the adapter
an identity) is :func:`zero_init_adapters`. :func:`build_tiny_zeroi2v` gives random weights where every path is
live instead (adapters nonzero, temporal embedding nonzero).

Checked once by hand (not in the suite: it needs the repository snapshot) against the upstream files themselves,
run under torch 2 with import stubs (mmengine logger, mmaction registry, an einops stand-in for the four patterns)
and torch 1.x's ``F._scaled_dot_product_attention`` restored: ViT_Zero_CLIP (num_tadapter 1 and 2, width 72/96),
ViT_Zero_CLIP_ablation with ``ops_type='stdha', long_shift_div=12, long_shift_right=True``, and
``reparam_vit_zero_clip`` all agreed with this port exactly (max difference 0.0).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UPSTREAM_REPO = "leexinhao/ZeroI2V"
UPSTREAM_COMMIT = "ce04d8bf27ec1c9bd2ed8e361b9141b6fd371b16"

# the data preprocessor of every vit_zero_clip config (0-255 pixel scale, RGB): CLIP's mean/std
CLIP_PIXEL_MEAN = (122.769, 116.74, 104.04)
CLIP_PIXEL_STD = (68.493, 66.63, 70.321)


# ---------------------------------------------------------------------------------------------------------------
# vit_zero_clip.py
# ---------------------------------------------------------------------------------------------------------------


class LinearAdapter(nn.Module):
    """vit_zero_clip.py L17-54: ``x + scale * D_fc2(dropout(D_fc1(x)))``, no activation."""

    def __init__(self, D_features, mlp_ratio=0.25, skip_connect=True, scale=1.0, dropout_rate=0.1):
        super().__init__()
        self.skip_connect = skip_connect
        D_hidden_features = int(D_features * mlp_ratio)
        self.D_fc1 = nn.Linear(D_features, D_hidden_features)
        self.dropout = nn.Dropout(dropout_rate)
        self.D_fc2 = nn.Linear(D_hidden_features, D_features)
        self.scale_act = None
        if isinstance(scale, str):
            raise NotImplementedError(scale)  # upstream: the learnable scales are commented out
        self.scale = scale

    def forward(self, x):
        # x is (HW+1, BT, D)
        xs = self.D_fc1(x)
        xs = self.dropout(xs)
        xs = self.D_fc2(xs)
        if self.skip_connect:
            x = x + xs * self.scale
        else:
            x = xs * self.scale
        return x


class LayerNorm(nn.LayerNorm):
    """vit_zero_clip.py L56-62: torch's LayerNorm computed in float32."""

    def forward(self, x: Tensor):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    """vit_zero_clip.py L64-66 (OpenAI CLIP's)."""

    def forward(self, x: Tensor):
        return x * torch.sigmoid(1.702 * x)


# ---------------------------------------------------------------------------------------------------------------
# common/stdha.py (+ stdha_ablation.py's long_shift_right)
# ---------------------------------------------------------------------------------------------------------------


class TemporalShift(nn.Module):
    """stdha.py L9-60 (``divide_head=False`` branch, the one every config uses) + stdha_ablation.py L57-58.

    x is (HW+1, B*T, C), frames minor in the second axis. Over the WHOLE width (not per head), with
    ``fold = C // n_div``: channels [0, fold) of frame t come from frame t-stride ("shift left" upstream), channels
    [fold, 2*fold) from frame t+stride; the frames without such a neighbour keep their own (``out`` starts as a
    clone). Optional long shift: [2*fold, 2*fold+C//long_shift_div) from t-2, and with ``long_shift_right`` the next
    C//long_shift_div channels from t+2.
    """

    def __init__(self, num_frames, n_head, n_div=8, divide_head=False, shift_stride=1, long_shift_div=-1,
                 long_shift_right=False):
        super().__init__()
        self.num_frames = num_frames
        self.fold_div = n_div
        self.n_head = n_head
        self.divide_head = divide_head
        self.shift_stride = shift_stride
        self.long_shift_div = long_shift_div
        self.long_shift_right = long_shift_right

    def forward(self, x):
        # x is (HW+1, BT, D)
        n, bt, c = x.shape
        feat = x

        if self.divide_head:
            raise NotImplementedError  # upstream raises at the top of this branch (stdha.py L29-30)

        feat = feat.view(n, bt // self.num_frames, self.num_frames, c)
        out = feat.clone()

        fold = int(c // self.fold_div)
        s = self.shift_stride
        out[:, :, s:, :fold] = feat[:, :, :-1 * s, :fold]  # shift left
        out[:, :, :-1 * s, fold:2 * fold] = feat[:, :, s:, fold:2 * fold]  # shift right

        if self.long_shift_div > 0:
            long_fold = c // self.long_shift_div
            out[:, :, 2:, 2 * fold:(2 * fold + long_fold)] = feat[:, :, :-2, 2 * fold:(2 * fold + long_fold)]
            if self.long_shift_right:  # stdha_ablation.py L57-58
                lo, hi = 2 * fold + long_fold, 2 * fold + 2 * long_fold
                out[:, :, :-2, lo:hi] = feat[:, :, 2:, lo:hi]

        out = out.view(n, bt, c)
        return out


class STDHA(nn.MultiheadAttention):
    """stdha.py L64-355: multi-head attention that shifts keys and values (not queries) after the in-projection."""

    def __init__(self, embed_dim, num_heads, num_frames, shift_div=4, divide_head=True, shift_pattern="kv",
                 shift_stride=1, long_shift_div=-1, long_shift_right=False, **kwargs) -> None:
        super().__init__(embed_dim=embed_dim, num_heads=num_heads, **kwargs)
        self.time_shift = TemporalShift(num_frames=num_frames, n_head=num_heads, n_div=shift_div,
                                        divide_head=divide_head, shift_stride=shift_stride,
                                        long_shift_div=long_shift_div, long_shift_right=long_shift_right)
        self.shift_pattern = shift_pattern

    def stdha_forward(self, query: Tensor, num_heads: int, in_proj_weight: Tensor, in_proj_bias: Tensor | None,
                      dropout_p: float, out_proj_weight: Tensor, out_proj_bias: Tensor | None,
                      training: bool = True, need_weights: bool = True, average_attn_weights: bool = True):
        """stdha.py L74-312 on the path the backbone takes (query is key is value, no masks, batched)."""
        tgt_len, bsz, embed_dim = query.shape
        head_dim = embed_dim // num_heads
        assert head_dim * num_heads == embed_dim, f"embed_dim {embed_dim} not divisible by num_heads {num_heads}"

        # compute in-projection: F._in_projection_packed with q is k is v == one linear, split in three
        q, k, v = F.linear(query, in_proj_weight, in_proj_bias).chunk(3, dim=-1)

        # shift k, v just like xvit
        if self.shift_pattern == "qkv":
            raise NotImplementedError  # stdha.py L182-184
        k = self.time_shift(k)
        v = self.time_shift(v)

        # reshape q, k, v for multihead attention and make em batch first
        q = q.contiguous().view(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
        k = k.contiguous().view(k.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
        v = v.contiguous().view(v.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
        src_len = k.size(1)

        if not training:
            dropout_p = 0.0

        # F._scaled_dot_product_attention (torch 1.x): scale q, bmm, softmax, dropout, bmm
        q = q / math.sqrt(head_dim)
        attn_output_weights = torch.softmax(torch.bmm(q, k.transpose(-2, -1)), dim=-1)
        if dropout_p > 0.0:
            attn_output_weights = F.dropout(attn_output_weights, p=dropout_p)
        attn_output = torch.bmm(attn_output_weights, v)
        attn_output = attn_output.transpose(0, 1).contiguous().view(tgt_len * bsz, embed_dim)
        attn_output = F.linear(attn_output, out_proj_weight, out_proj_bias)
        attn_output = attn_output.view(tgt_len, bsz, attn_output.size(1))

        if need_weights:
            attn_output_weights = attn_output_weights.view(bsz, num_heads, tgt_len, src_len)
            if average_attn_weights:
                attn_output_weights = attn_output_weights.sum(dim=1) / num_heads
            return attn_output, attn_output_weights
        return attn_output, None

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True):
        if not (query is key and key is value):
            raise NotImplementedError("the port covers self-attention only (the block calls attn(x, x, x))")
        if key_padding_mask is not None or attn_mask is not None:
            raise NotImplementedError("the backbone passes no masks")
        if self.batch_first or not self._qkv_same_embed_dim or self.bias_k is not None or self.add_zero_attn:
            raise NotImplementedError("the backbone's STDHA is sequence-first with a packed in-projection")
        if query.dim() != 3:
            raise NotImplementedError("the backbone's input is batched")
        return self.stdha_forward(
            query, self.num_heads, self.in_proj_weight, self.in_proj_bias, self.dropout,
            self.out_proj.weight, self.out_proj.bias, training=self.training, need_weights=need_weights,
            average_attn_weights=average_attn_weights)


# ---------------------------------------------------------------------------------------------------------------
# vit_zero_clip.py: block, transformer, backbone
# ---------------------------------------------------------------------------------------------------------------


class ResidualAttentionBlock_ZeroI2V(nn.Module):
    """vit_zero_clip.py L68-123.

    ``x = x + S_Adapter(attn(T_Adapter_in(ln_1(x))))``;
    ``x = x + MLP_Adapter_out(mlp(MLP_Adapter(ln_2(x))))`` (``num_tadapter == 2``) or
    ``x = x + mlp(MLP_Adapter(ln_2(x)))``.
    """

    def __init__(self, d_model: int, n_head: int, attn_mask: Tensor | None = None, scale=1.0, num_tadapter=1,
                 num_frames=8, dropout_rate=0.1, adapter_type="linear", mlp_ratio=0.25, stdha_cfg=None):
        super().__init__()
        stdha_cfg = {} if stdha_cfg is None else stdha_cfg
        self.num_tadapter = num_tadapter
        self.stdha_cfg = stdha_cfg
        # (long_shift_right: vit_zero_clip_ablation.py L114-119; vit_zero_clip.py's block does not pass it)
        self.attn = STDHA(embed_dim=d_model, num_heads=n_head, num_frames=num_frames,
                          shift_div=self.stdha_cfg.get("shift_div", 12),
                          divide_head=self.stdha_cfg.get("divide_head", False),
                          shift_stride=self.stdha_cfg.get("shift_stride", 1),
                          long_shift_div=self.stdha_cfg.get("long_shift_div", -1),
                          long_shift_right=self.stdha_cfg.get("long_shift_right", False))
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask
        self.n_head = n_head

        if adapter_type == "linear":
            self.MLP_Adapter = LinearAdapter(d_model, scale=scale, mlp_ratio=mlp_ratio, dropout_rate=dropout_rate)
            if self.num_tadapter == 2:
                self.MLP_Adapter_out = LinearAdapter(d_model, scale=scale, mlp_ratio=mlp_ratio,
                                                     dropout_rate=dropout_rate)
            self.S_Adapter = LinearAdapter(d_model, scale=scale, mlp_ratio=mlp_ratio, dropout_rate=dropout_rate)
            self.T_Adapter_in = LinearAdapter(d_model, scale=scale, mlp_ratio=mlp_ratio, dropout_rate=dropout_rate)
        else:
            raise NotImplementedError(adapter_type)

        self.num_frames = num_frames

    def attention(self, x: Tensor):
        self.attn_mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask)[0]

    def forward(self, x: Tensor):
        # x shape [HW+1, BT, D]
        x = x + self.S_Adapter(self.attention(self.T_Adapter_in(self.ln_1(x))))
        if self.num_tadapter == 2:
            x = x + self.MLP_Adapter_out(self.mlp(self.MLP_Adapter(self.ln_2(x))))
        else:
            x = x + self.mlp(self.MLP_Adapter(self.ln_2(x)))
        return x


class Transformer(nn.Module):
    """vit_zero_clip.py L126-135 (no drop path: upstream's is commented out)."""

    def __init__(self, num_frames, width: int, layers: int, heads: int, attn_mask: Tensor | None = None,
                 num_tadapter=1, scale=1.0, dropout_rate=0.1, adapter_type="linear", mlp_ratio=0.25,
                 stdha_cfg=None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[
            ResidualAttentionBlock_ZeroI2V(width, heads, attn_mask, scale, num_tadapter, num_frames,
                                           dropout_rate=dropout_rate, adapter_type=adapter_type,
                                           mlp_ratio=mlp_ratio, stdha_cfg=stdha_cfg)
            for _ in range(layers)])

    def forward(self, x: Tensor):
        return self.resblocks(x)


def _embed_frames(model: nn.Module, x: Tensor) -> tuple[Tensor, int, int]:
    """vit_zero_clip.py L238-252 (shared by ViT_Zero_CLIP_eval, vit_zero_clip_eval.py L113-127)."""
    B, C, T, H, W = x.shape
    assert T == model.num_frames, f"{T} != {model.num_frames}"
    # rearrange(x, 'b c t h w -> (b t) c h w')
    x = x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
    x = model.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    x = x.permute(0, 2, 1)
    x = torch.cat([model.class_embedding.to(x.dtype)
                   + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device), x], dim=1)
    x = x + model.positional_embedding.to(x.dtype)

    n = x.shape[1]
    d = x.shape[2]
    # rearrange(x, '(b t) n d -> (b n) t d', t=self.num_frames)
    x = x.reshape(B, model.num_frames, n, d).permute(0, 2, 1, 3).reshape(B * n, model.num_frames, d)
    x = x + model.temporal_embedding
    # rearrange(x, '(b n) t d -> (b t) n d', n=n)
    x = x.reshape(B, n, model.num_frames, d).permute(0, 2, 1, 3).reshape(B * model.num_frames, n, d)

    x = model.ln_pre(x)
    return x, B, T


def _pool_frames(model: nn.Module, x: Tensor, B: int, T: int) -> Tensor:
    """vit_zero_clip.py L254-264: CLS token per frame, ln_post per frame, (B, D, T, 1, 1) for the I3D head."""
    x = x.permute(1, 0, 2)  # LND -> NLD
    x = x[:, 0]  # the CLS token, (B*T, D)
    x = model.ln_post(x)
    # rearrange(x, '(b t) d -> b d t', b=B, t=T)
    x = x.reshape(B, T, x.shape[-1]).permute(0, 2, 1)
    x = x.unsqueeze(-1).unsqueeze(-1)  # BDTHW for I3D head
    return x


class ViT_Zero_CLIP(nn.Module):
    """vit_zero_clip.py L138-264: CLIP's image ViT over the B*T frames + temporal embedding + STDHA + adapters.

    CLIP's ``proj`` is not a parameter (upstream deletes it before loading). ``final_ta_cfg.use_it`` raises
    upstream and is not ported.
    """

    def __init__(self, input_resolution: int, num_frames: int, patch_size: int, width: int, layers: int,
                 heads: int, dropout_rate=0.1, num_tadapter=1, adapter_scale=0.5, pretrained=None,
                 adapter_type="linear", mlp_ratio=0.25, stdha_cfg=None, final_ta_cfg=None):
        super().__init__()
        self.input_resolution = input_resolution
        self.pretrained = pretrained
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size,
                               bias=False)

        scale = width ** -0.5
        self.layers = layers
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1,
                                                                     width))
        self.ln_pre = LayerNorm(width)

        self.num_frames = num_frames
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, width))

        self.transformer = Transformer(num_frames, width, layers, heads, num_tadapter=num_tadapter,
                                       scale=adapter_scale, dropout_rate=dropout_rate, adapter_type=adapter_type,
                                       mlp_ratio=mlp_ratio, stdha_cfg=stdha_cfg)
        self.final_ta_cfg = {} if final_ta_cfg is None else final_ta_cfg
        if self.final_ta_cfg.get("use_it", False):
            raise NotImplementedError
        self.ln_post = LayerNorm(width)

    def forward(self, x: Tensor):
        x, B, T = _embed_frames(self, x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        return _pool_frames(self, x, B, T)


# ---------------------------------------------------------------------------------------------------------------
# vit_zero_clip_eval.py: the adapter-free model for the re-parameterised weights
# ---------------------------------------------------------------------------------------------------------------


class ResidualAttentionBlock_Zero(nn.Module):
    """vit_zero_clip_eval.py L29-55. NB upstream's defaults differ from training's: ``shift_div`` 4 (not 12), and
    ``long_shift_div`` is not passed at all (a merged long-shift model would lose its long shift)."""

    def __init__(self, d_model: int, n_head: int, num_frames=8, stdha_cfg=None):
        super().__init__()
        stdha_cfg = {} if stdha_cfg is None else stdha_cfg
        self.n_head = n_head
        self.num_frames = num_frames
        self.stdha_cfg = stdha_cfg
        self.attn = STDHA(embed_dim=d_model, num_heads=n_head, num_frames=num_frames,
                          shift_div=self.stdha_cfg.get("shift_div", 4),
                          divide_head=self.stdha_cfg.get("divide_head", False),
                          shift_stride=self.stdha_cfg.get("shift_stride", 1))
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)

    def attention(self, x: Tensor):
        return self.attn(x, x, x, need_weights=False, attn_mask=None)[0]

    def forward(self, x: Tensor):
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class TransformerEval(nn.Module):
    """vit_zero_clip_eval.py L58-67 (named ``Transformer`` there; the attribute, hence the keys, is the same)."""

    def __init__(self, num_frames, width: int, layers: int, heads: int, stdha_cfg=None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock_Zero(width, heads, num_frames, stdha_cfg=stdha_cfg)
                                         for _ in range(layers)])

    def forward(self, x: Tensor):
        return self.resblocks(x)


class ViT_Zero_CLIP_eval(nn.Module):
    """vit_zero_clip_eval.py L72-139: ``ViT_Zero_CLIP`` without adapters (same forward otherwise)."""

    def __init__(self, input_resolution: int, num_frames: int, patch_size: int, width: int, layers: int,
                 heads: int, stdha_cfg=None, freeze_all=False):
        super().__init__()
        self.input_resolution = input_resolution
        self.freeze_all = freeze_all
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size,
                               bias=False)
        scale = width ** -0.5
        self.layers = layers
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1,
                                                                     width))
        self.ln_pre = LayerNorm(width)
        self.num_frames = num_frames
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, width))
        self.transformer = TransformerEval(num_frames, width, layers, heads, stdha_cfg=stdha_cfg)
        self.ln_post = LayerNorm(width)

    def forward(self, x: Tensor):
        x, B, T = _embed_frames(self, x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        return _pool_frames(self, x, B, T)


# ---------------------------------------------------------------------------------------------------------------
# heads/i3d_head.py and recognizers/recognizer3d.py
# ---------------------------------------------------------------------------------------------------------------


class I3DHead(nn.Module):
    """i3d_head.py L12-88: AdaptiveAvgPool3d((1, 1, 1)) over (T, 1, 1), dropout, ``fc_cls``.

    (BaseHead's loss_cls, label smoothing and ``average_clips`` hold no tensors; upstream inits ``fc_cls`` with
    normal std ``init_std=0.01``, bias 0.)"""

    def __init__(self, num_classes: int, in_channels: int, spatial_type: str = "avg", dropout_ratio: float = 0.5,
                 init_std: float = 0.01, average_clips: str | None = "prob", **kwargs) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.spatial_type = spatial_type
        self.dropout_ratio = dropout_ratio
        self.init_std = init_std
        self.average_clips = average_clips
        self.dropout = nn.Dropout(p=self.dropout_ratio) if self.dropout_ratio != 0 else None
        self.fc_cls = nn.Linear(self.in_channels, self.num_classes)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1)) if self.spatial_type == "avg" else None

    def init_weights(self) -> None:
        nn.init.normal_(self.fc_cls.weight, 0, self.init_std)
        nn.init.constant_(self.fc_cls.bias, 0)

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        # [N, in_channels, T, 1, 1]
        if self.avg_pool is not None:
            x = self.avg_pool(x)
        if self.dropout is not None:
            x = self.dropout(x)
        x = x.view(x.shape[0], -1)
        return self.fc_cls(x)

    def average_clip(self, cls_scores: Tensor, num_segs: int = 1) -> Tensor:
        """heads/base.py L197-227 (test time: several views of one video)."""
        batch_size = cls_scores.shape[0]
        cls_scores = cls_scores.view(batch_size // num_segs, num_segs, -1)
        if self.average_clips is None:
            return cls_scores
        if self.average_clips == "prob":
            return F.softmax(cls_scores, dim=2).mean(dim=1)
        if self.average_clips == "score":
            return cls_scores.mean(dim=1)
        raise ValueError(self.average_clips)


class Recognizer3D(nn.Module):
    """recognizer3d.py: ``backbone`` then ``cls_head`` (no neck in these configs). ``forward`` takes one clip
    per sample, (B, 3, T, H, W), already normalised with CLIP_PIXEL_MEAN/STD, and returns the logits;
    ``predict_views`` takes mmaction's (N, views, 3, T, H, W) and averages as the test loop does."""

    def __init__(self, backbone: nn.Module, cls_head: I3DHead):
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward(self, inputs: Tensor) -> Tensor:
        return self.cls_head(self.backbone(inputs))

    def predict_views(self, inputs: Tensor) -> Tensor:
        num_segs = inputs.shape[1]
        inputs = inputs.view((-1,) + inputs.shape[2:])  # recognizer3d.py L46
        return self.cls_head.average_clip(self.forward(inputs), num_segs=num_segs)


# ---------------------------------------------------------------------------------------------------------------
# tools/weight_reparam.py
# ---------------------------------------------------------------------------------------------------------------


def reparameterize_LinearAdapter(D_fc1_W, D_fc2_W, D_fc1_b=None, D_fc2_b=None, scale=1.0, skip_connect=True):
    """weight_reparam.py L22-58: with skip, W = I + scale * W2 @ W1, b = scale * (W2 @ b1 + b2)."""
    new_W = (D_fc2_W @ D_fc1_W) * scale
    if skip_connect:
        new_W = new_W + torch.eye(D_fc1_W.shape[1], D_fc2_W.shape[0]).to(D_fc1_W.device)
    new_b = 0
    if D_fc1_b is not None:
        new_b = D_fc2_W @ D_fc1_b
    if D_fc2_b is not None:
        new_b = new_b + D_fc2_b
    new_b = new_b * scale
    if D_fc1_b is None and D_fc2_b is None:
        return new_W, None
    return new_W, new_b


def fuse_Adapter2Proj(adapter_W, proj_W, adapter_b=None, proj_b=None, adapter_fisrt=True):
    """weight_reparam.py L60-69: compose two affine maps (adapter before or after the projection)."""
    if adapter_fisrt:
        return reparameterize_LinearAdapter(adapter_W, proj_W, adapter_b, proj_b, scale=1.0, skip_connect=False)
    return reparameterize_LinearAdapter(proj_W, adapter_W, proj_b, adapter_b, scale=1.0, skip_connect=False)


_ADAPTER_INTO = (
    # adapter, projection it folds into, adapter first? (weight_reparam.py L74-145)
    ("T_Adapter_in", "attn.in_proj_", True),  # the shift is per channel after in_proj, so it commutes
    ("S_Adapter", "attn.out_proj.", False),
    ("MLP_Adapter", "mlp.c_fc.", True),
    ("MLP_Adapter_out", "mlp.c_proj.", False),  # only when num_tadapter == 2
)


def reparam_vit_zero_clip(state_dict, scale=1.0, skip_connect=True, num_tadapter=2, num_layers=12,
                          model_prefix="backbone.transformer.resblocks"):
    """weight_reparam.py L71-145, in place: fold every layer's adapters into attn/mlp, delete the adapters."""
    for layer_id in range(num_layers):
        p = f"{model_prefix}.{layer_id}"
        for adapter, proj, adapter_first in _ADAPTER_INTO:
            if adapter == "MLP_Adapter_out" and num_tadapter != 2:
                continue
            a_W, a_b = reparameterize_LinearAdapter(
                D_fc1_W=state_dict[f"{p}.{adapter}.D_fc1.weight"], D_fc2_W=state_dict[f"{p}.{adapter}.D_fc2.weight"],
                D_fc1_b=state_dict[f"{p}.{adapter}.D_fc1.bias"], D_fc2_b=state_dict[f"{p}.{adapter}.D_fc2.bias"],
                scale=scale, skip_connect=skip_connect)
            w_key, b_key = f"{p}.{proj}weight", f"{p}.{proj}bias"
            state_dict[w_key], state_dict[b_key] = fuse_Adapter2Proj(
                a_W, state_dict[w_key], a_b, state_dict[b_key], adapter_fisrt=adapter_first)
            for name in ("D_fc1.weight", "D_fc2.weight", "D_fc1.bias", "D_fc2.bias"):
                del state_dict[f"{p}.{adapter}.{name}"]


def merge_linear_adapters(state_dict, scale: float = 0.5, model_prefix: str = "backbone.transformer.resblocks"):
    """A merged copy of a ZeroI2V state_dict (weight_reparam.py's math; the layer count and ``num_tadapter`` are
    read from the keys). ``scale`` is the training config's ``adapter_scale``: it is NOT in the state_dict
    (0.5 in the K400/UCF/HMDB configs and in weight_reparam.py's ``__main__``, 1 in the SSv2 config)."""
    merged = OrderedDict((k, v.clone()) for k, v in state_dict.items())
    prefix = model_prefix + "."
    layers = sorted({int(k[len(prefix):].split(".")[0]) for k in merged if k.startswith(prefix)})
    assert layers == list(range(len(layers))), layers
    num_tadapter = 2 if f"{prefix}0.MLP_Adapter_out.D_fc1.weight" in merged else 1
    reparam_vit_zero_clip(merged, scale=scale, skip_connect=True, num_tadapter=num_tadapter,
                          num_layers=len(layers), model_prefix=model_prefix)
    return merged


# ---------------------------------------------------------------------------------------------------------------
# tiny random models and mmaction-style checkpoints for the tests
# ---------------------------------------------------------------------------------------------------------------


def zero_init_adapters(model: nn.Module) -> None:
    """The upstream adapter init (vit_zero_clip.py L212-219): every adapter's D_fc2 weight and bias zero."""
    for n, m in model.named_modules():
        if "Adapter" in n or "adapter" in n:
            for n2, m2 in m.named_modules():
                if "D_fc2" in n2 and isinstance(m2, nn.Linear):
                    nn.init.constant_(m2.weight, 0)
                    nn.init.constant_(m2.bias, 0)


@torch.no_grad()
def randomize_(model: nn.Module, generator: torch.Generator, gain: float = 1.0) -> nn.Module:
    """Every tensor random and nonzero: norms around 1, biases and embeddings around 0, matrices ~ 1/sqrt(fan_in)
    (so an adapter adds about half its input: 0.5 * W2 W1 x with both ~ 1/sqrt(fan_in))."""
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        leaf = name.rsplit(".", 1)[-1]
        if ("ln_" in name or ".ln" in name) and leaf == "weight":
            p.copy_(1.0 + 0.2 * noise)
        elif leaf == "bias" or leaf.endswith("_bias"):
            p.copy_(0.2 * noise)
        elif leaf in ("class_embedding", "positional_embedding", "temporal_embedding"):
            p.copy_(0.5 * noise)
        else:
            fan_in = p[0].numel()
            std = gain / math.sqrt(fan_in)
            p.copy_(std * noise)
    return model


def tiny_backbone_kwargs(*, width: int = 96, heads: int = 12, layers: int = 2, num_frames: int = 4,
                         patch_size: int = 16, input_resolution: int = 32, num_tadapter: int = 2,
                         adapter_scale: float = 0.5, dropout_rate: float = 0.1, mlp_ratio: float = 0.25,
                         stdha_cfg: dict | None = None) -> dict:
    """ViT_Zero_CLIP keyword arguments, the K400 config's settings at toy size (width % 12 == 0 so c/12 is whole)."""
    if stdha_cfg is None:
        stdha_cfg = {"shift_div": 12, "divide_head": False}
    return {"input_resolution": input_resolution, "num_frames": num_frames, "patch_size": patch_size,
            "width": width, "layers": layers, "heads": heads, "dropout_rate": dropout_rate,
            "num_tadapter": num_tadapter, "adapter_scale": adapter_scale, "mlp_ratio": mlp_ratio,
            "stdha_cfg": dict(stdha_cfg)}


def build_tiny_zeroi2v(seed: int = 0, num_classes: int = 5, **kwargs) -> Recognizer3D:
    """A tiny ``Recognizer3D(ViT_Zero_CLIP, I3DHead)`` in eval mode with random weights on every path.

    kwargs go to :func:`tiny_backbone_kwargs` (width 96, 12 heads, 2 layers, 4 frames, patch 16, 32x32 input,
    num_tadapter 2, adapter_scale 0.5, shift_div 12 by default)."""
    cfg = tiny_backbone_kwargs(**kwargs)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the constructors' own randn; all overwritten below
    model = Recognizer3D(ViT_Zero_CLIP(**cfg), I3DHead(num_classes=num_classes, in_channels=cfg["width"]))
    randomize_(model, generator)
    return model.eval()


def build_tiny_zeroi2v_eval(num_classes: int = 5, **kwargs) -> Recognizer3D:
    """The adapter-free ``Recognizer3D(ViT_Zero_CLIP_eval, I3DHead)`` matching :func:`build_tiny_zeroi2v` (load
    :func:`merge_linear_adapters` output into it)."""
    cfg = tiny_backbone_kwargs(**kwargs)
    backbone = ViT_Zero_CLIP_eval(cfg["input_resolution"], cfg["num_frames"], cfg["patch_size"], cfg["width"],
                                  cfg["layers"], cfg["heads"], stdha_cfg=cfg["stdha_cfg"])
    return Recognizer3D(backbone, I3DHead(num_classes=num_classes, in_channels=cfg["width"])).eval()


def config_text(backbone_kwargs: dict, num_classes: int, backbone_type: str = "ViT_Zero_CLIP") -> str:
    """A stand-in for mmengine's ``cfg.pretty_text`` (the checkpoint meta's ``cfg``): the model part of a config."""
    args = ",\n".join(f"        {k}={v!r}" for k, v in backbone_kwargs.items())
    return (
        "model = dict(\n"
        "    type='Recognizer3D',\n"
        "    backbone=dict(\n"
        f"        type={backbone_type!r},\n"
        "        pretrained='pretrained_models',\n"
        f"{args}),\n"
        "    cls_head=dict(\n"
        "        type='I3DHead',\n"
        f"        in_channels={backbone_kwargs['width']},\n"
        f"        num_classes={num_classes},\n"
        "        spatial_type='avg',\n"
        "        dropout_ratio=0.5,\n"
        "        average_clips='prob'),\n"
        "    data_preprocessor=dict(\n"
        "        type='ActionDataPreprocessor',\n"
        f"        mean={list(CLIP_PIXEL_MEAN)!r},\n"
        f"        std={list(CLIP_PIXEL_STD)!r},\n"
        "        format_shape='NCTHW'))\n"
    )


def save_mmaction_checkpoint(model: Recognizer3D, path: str | Path, *, backbone_kwargs: dict | None = None,
                             epoch: int = 40, iteration: int = 1000, extra: dict | None = None) -> Path:
    """Write ``{"meta": {...}, "state_dict": {...}}`` as mmengine's ``Runner.save_checkpoint`` does (meta: epoch,
    iter, cfg text, seed, experiment_name, time, mmengine_version, dataset_meta; ``state_dict`` = the CPU
    ``model.state_dict()``, ``backbone.*`` and ``cls_head.*``).

    Real files also carry ``message_hub`` (mmengine HistoryBuffer objects, so ``torch.load(weights_only=True)``
    refuses them), ``optimizer`` and ``param_schedulers``; this writes only what a weights-only load can read.
    ``extra`` entries are added at the top level."""
    path = Path(path)
    state_dict = model.state_dict()
    state_dict = OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items())
    if backbone_kwargs is None:
        bb = model.backbone
        blk = bb.transformer.resblocks[0]
        backbone_kwargs = {"input_resolution": bb.input_resolution, "num_frames": bb.num_frames,
                           "patch_size": bb.conv1.kernel_size[0], "width": bb.conv1.out_channels,
                           "layers": bb.layers, "heads": blk.attn.num_heads}
        if isinstance(blk, ResidualAttentionBlock_ZeroI2V):
            backbone_kwargs.update(adapter_scale=blk.S_Adapter.scale, num_tadapter=blk.num_tadapter,
                                   stdha_cfg=dict(blk.stdha_cfg))
        else:
            backbone_kwargs.update(stdha_cfg=dict(blk.stdha_cfg))
    backbone_type = "ViT_Zero_CLIP" if isinstance(model.backbone, ViT_Zero_CLIP) else "ViT_Zero_CLIP_eval"
    meta = {
        "epoch": int(epoch),
        "iter": int(iteration),
        "cfg": config_text(backbone_kwargs, model.cls_head.num_classes, backbone_type),
        "seed": 0,
        "experiment_name": "vit_zero_base_clip_k400_16x8x1_20240101_000000",
        "time": time.strftime("%Y%m%d_%H%M%S", time.gmtime(0)),
        "mmengine_version": "0.8.4",
        "dataset_meta": {},
    }
    checkpoint = {"meta": meta, "state_dict": state_dict}
    if extra:
        checkpoint.update(extra)
    torch.save(checkpoint, path)
    return path


def block_key_suffixes(num_tadapter: int = 2) -> list[str]:
    """The keys of one ``ResidualAttentionBlock_ZeroI2V``, in registration (hence state_dict) order."""
    keys = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
            "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
            "ln_2.weight", "ln_2.bias"]
    adapters = ["MLP_Adapter"] + (["MLP_Adapter_out"] if num_tadapter == 2 else []) + ["S_Adapter", "T_Adapter_in"]
    for a in adapters:
        keys += [f"{a}.D_fc1.weight", f"{a}.D_fc1.bias", f"{a}.D_fc2.weight", f"{a}.D_fc2.bias"]
    return keys
