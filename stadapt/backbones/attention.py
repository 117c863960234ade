"""Self-attention of an nn.MultiheadAttention computed on batch-first tokens, for backbone plugins.

nn.MultiheadAttention works sequence-first: called on batch-first tokens it transposes them to
(L, N, C) (batch_first=True does it inside). With a frozen weight the input projection of those
transposed tokens becomes a batched matmul over the weight broadcast to every token, which the CPU
copies in bf16 (0.7 GB per ViT-B block), and q, k, v are split with copies whose backward pass
fills three zero tensors. `self_attention` gives the same result on the tokens as they lie.
"""

from __future__ import annotations

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
