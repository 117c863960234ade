"""Self-attention of an nn.MultiheadAttention computed on batch-first tokens, for backbone plugins.

nn.MultiheadAttention works sequence-first: called on batch-first tokens it transposes them to
(L, N, C) (batch_first=True does it inside). With a frozen weight the input projection of those
transposed tokens becomes a batched matmul over the weight broadcast to every token, which the CPU
copies in bf16 (0.7 GB per ViT-B block), and q, k, v are split with copies whose backward pass
fills three zero tensors. `self_attention` gives the same result on the tokens as they lie.
`AttentionProjections` is a block's attention as its projections, for methods that re-run or fold it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def is_plain_self_attention(attn: nn.Module) -> bool:
    """Whether `attn` is an nn.MultiheadAttention that `self_attention` computes exactly: one packed
    in-projection with a bias, no bias_k/v, no zero attention."""
    return (type(attn) is nn.MultiheadAttention and attn._qkv_same_embed_dim and attn.in_proj_bias is not None
            and attn.bias_k is None and not attn.add_zero_attn)


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """attn(x, x, x, need_weights=False)[0] without a mask for batch-first x (N, L, C), whatever
    attn.batch_first says; only for attention modules that `is_plain_self_attention` accepts."""
    n, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if attn.training else 0.0)
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


def query_attention(q: torch.Tensor, k: torch.Tensor, heads: int, *, first_query: bool) -> torch.Tensor:
    """(N, L) attention weights over L tokens from projected queries and keys (N, L, C), averaged over
    the heads (rows sum to 1): of the first token's query ([CLS]) with `first_query`, else the mean over
    every query (for models without a class token). What `FrameBackbone.block_attention` returns."""
    n, length, width = k.shape
    dim = width // heads
    q = (q[:, :1] if first_query else q).reshape(n, -1, heads, dim).transpose(1, 2)  # (N, heads, Q, d)
    k = k.reshape(n, length, heads, dim).transpose(1, 2)  # (N, heads, L, d)
    scores = (q.float() @ k.float().transpose(-1, -2)) / dim**0.5  # (N, heads, Q, L)
    return scores.softmax(dim=-1).mean(dim=(1, 2))


def mha_query_attention(attn: nn.MultiheadAttention, h: torch.Tensor, *, first_query: bool = True) -> torch.Tensor:
    """`query_attention` of an nn.MultiheadAttention on its (normed) batch-first input h (N, L, C),
    recomputed from the module's own projections (packed or separate)."""
    width = attn.embed_dim
    if attn.in_proj_weight is not None:
        w_q, w_k = attn.in_proj_weight[:width], attn.in_proj_weight[width : 2 * width]
    else:
        w_q, w_k = attn.q_proj_weight, attn.k_proj_weight
    b_q = b_k = None
    if attn.in_proj_bias is not None:
        b_q, b_k = attn.in_proj_bias[:width], attn.in_proj_bias[width : 2 * width]
    q = F.linear(h[:, :1] if first_query else h, w_q, b_q)
    return query_attention(q, F.linear(h, w_k, b_k), attn.num_heads, first_query=first_query)


@dataclass(frozen=True)
class AttentionProjections:
    """A block's attention as its projections (`FrameBackbone.attention_projections`), so that a method can
    re-run the attention with keys or values it changed (ZeroI2V's STDHA shifts channels of k and v across
    frames) or fold its own linear layers into these weights (merging).

    `qkv_weight` (3C, C) and `qkv_bias` (3C) hold q, then k, then v, in the layout nn.MultiheadAttention's
    `in_proj_weight` and timm's fused `qkv` Linear share; they are the module's live tensors where it packs
    them (so an in-place write changes the model), a concatenation where it keeps them apart (Eva's
    q_bias / k_bias / v_bias). `out_proj` is the output projection (an nn.Linear), `layer_scale` the
    per-channel scale the branch applies after it (None: none). Dropouts are not part of it: the backbone
    is frozen and runs in eval mode."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    out_proj: nn.Module
    num_heads: int
    layer_scale: torch.Tensor | None = None

    def project(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v), each (N, heads, L, C / heads), of the normed tokens h (N, L, C)."""
        n, length, _ = h.shape
        inner = self.qkv_weight.shape[0] // 3  # the heads' total width (the model's width, but for Eva's option)
        qkv = F.linear(h, self.qkv_weight, self.qkv_bias)
        q, k, v = qkv.view(n, length, 3, self.num_heads, inner // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention of (possibly modified) q, k, v, the heads merged, the output
        projection and the layer scale: what the block's attention body gives for the unmodified ones."""
        n, heads, length, dim = q.shape
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, heads * dim)
        out = self.out_proj(out)
        return out if self.layer_scale is None else out * self.layer_scale

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """The attention body on normed tokens h, recomputed from the projections."""
        return self.attend(*self.project(h))


def mha_projections(attn: nn.MultiheadAttention, layer_scale: torch.Tensor | None = None) -> AttentionProjections:
    """The projections of an nn.MultiheadAttention that `is_plain_self_attention` accepts (packed in_proj)."""
    if not is_plain_self_attention(attn):
        raise NotImplementedError("the block's nn.MultiheadAttention is not plain self-attention with one "
                                  "packed in-projection (attention_projections)")
    return AttentionProjections(attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, attn.num_heads, layer_scale)
