"""An independent, plain-torch statement of the reference ST-Adapter CLIP model's math.

Written from the reference implementation's math (docs/guides/import-checkpoint.md) with explicit tensor ops and no
open_clip, so that comparing it with stadapt's open_clip-based model checks the semantics, not a copy.
It reads OpenAI-layout visual weights and reference-layout trainable tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _adapter(x: torch.Tensor, sd: dict, name: str, frames: int) -> torch.Tensor:
    bt, length, _ = x.shape
    side = math.isqrt(length - 1)
    patches = x[:, 1:, :] @ sd[f"{name}.fc1.weight"].T + sd[f"{name}.fc1.bias"]
    ca = patches.shape[-1]
    z = patches.reshape(bt // frames, frames, side, side, ca).permute(0, 4, 1, 2, 3)
    weight = sd[f"{name}.conv.weight"]
    pad = tuple(k // 2 for k in weight.shape[2:])
    z = F.conv3d(z, weight, sd[f"{name}.conv.bias"], padding=pad, groups=ca)
    z = z.permute(0, 2, 3, 4, 1).reshape(bt, length - 1, ca)
    delta = z @ sd[f"{name}.fc2.weight"].T + sd[f"{name}.fc2.bias"]
    return torch.cat([x[:, :1, :], x[:, 1:, :] + delta], dim=1)


def _attention(x: torch.Tensor, sd: dict, name: str, heads: int) -> torch.Tensor:
    n, length, c = x.shape
    qkv = x @ sd[f"{name}.in_proj_weight"].T + sd[f"{name}.in_proj_bias"]
    q, k, v = qkv.reshape(n, length, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(n, length, c)
    return out @ sd[f"{name}.out_proj.weight"].T + sd[f"{name}.out_proj.bias"]


def reference_logits(video: torch.Tensor, visual: dict, trained: dict, *, heads: int, patch: int) -> torch.Tensor:
    """video (B, 3, T, H, W) -> logits, the reference way (QuickGELU, CLS mean over T, then ln_post)."""
    b, _, t, _, _ = video.shape
    x = video.permute(0, 2, 1, 3, 4).flatten(0, 1)
    x = F.conv2d(x, visual["conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    cls = visual["class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual["positional_embedding"]
    x = _ln(x, visual, "ln_pre")
    blocks = sorted({int(k.split(".")[2]) for k in visual if k.startswith("transformer.resblocks.")})
    for i in blocks:
        p = f"transformer.resblocks.{i}"
        if f"{p}.adapter_pre_attn.fc1.weight" in trained:
            x = _adapter(x, trained, f"{p}.adapter_pre_attn", t)
        x = x + _attention(_ln(x, visual, f"{p}.ln_1"), visual, f"{p}.attn", heads)
        if f"{p}.adapter_pre_mlp.fc1.weight" in trained:
            x = _adapter(x, trained, f"{p}.adapter_pre_mlp", t)
        h = _ln(x, visual, f"{p}.ln_2") @ visual[f"{p}.mlp.c_fc.weight"].T + visual[f"{p}.mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ visual[f"{p}.mlp.c_proj.weight"].T + visual[f"{p}.mlp.c_proj.bias"]
    feats = x.reshape(b, t, x.shape[1], x.shape[2])[:, :, 0, :].mean(dim=1)
    feats = _ln(feats, visual, "ln_post")
    return feats @ trained["fc.weight"].T + trained["fc.bias"]
