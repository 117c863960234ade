"""ZeroI2V's modules (imported only when a model is built): its linear adapter, the adapters of one block, the
temporal embedding and STDHA, the block's own attention re-run with channels of its keys and values taken from
the neighbouring frames; and the folds of an adapter into the linear layer before or after it (the merge)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from stadapt_tuners.temporal import add_temporal_embedding

if TYPE_CHECKING:
    from stadapt.backbones.attention import AttentionProjections


class LinearAdapter(nn.Module):
    """x + scale * fc2(dropout(fc1(x))): ZeroI2V's LinearAdapter (D_fc1, D_fc2). No activation, so that it folds
    into the linear layer next to it. Initialised as upstream's init_weights does (fc1 trunc-normal 0.02, bias 0;
    fc2 zero): a fresh adapter is the identity."""

    def __init__(self, width: int, mlp_ratio: float, scale: float, dropout: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.scale = scale
        self.fc1 = nn.Linear(width, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, width)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.dropout(self.fc1(x))) * self.scale

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) in float64 with adapter(x) == M x + c in eval mode: M = I + s W2 W1, c = s (W2 b1 + b2)
        (upstream's tools/weight_reparam.py reparameterize_LinearAdapter)."""
        w1, b1 = self.fc1.weight.double(), self.fc1.bias.double()
        w2, b2 = self.fc2.weight.double(), self.fc2.bias.double()
        eye = torch.eye(w2.shape[0], dtype=torch.float64, device=w2.device)
        return eye + self.scale * (w2 @ w1), self.scale * (w2 @ b1 + b2)


class ZeroI2VBlock(nn.Module):
    """One block's adapters, upstream's T_Adapter_in, S_Adapter, MLP_Adapter and (num_tadapter 2) MLP_Adapter_out."""

    mlp_adapter_out: LinearAdapter | None

    def __init__(self, width: int, settings: Any) -> None:
        super().__init__()
        args = (width, settings.mlp_ratio, settings.adapter_scale, settings.adapter_dropout)
        self.t_adapter_in = LinearAdapter(*args)
        self.s_adapter = LinearAdapter(*args)
        self.mlp_adapter = LinearAdapter(*args)
        self.mlp_adapter_out = LinearAdapter(*args) if settings.num_tadapter == 2 else None


class ZeroI2VModules(nn.Module):
    """Keys `adapters.temporal_embedding` (1, T, C) and `adapters.blocks.<i>.<adapter>.fc1/fc2`; a merged
    model's (settings.merged) hold the temporal embedding only."""

    temporal_embedding: nn.Parameter | None

    def __init__(self, widths: list[int], num_frames: int, settings: Any) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.shift_div = int(settings.shift_div)
        self.long_shift_div = int(settings.long_shift_div)
        self.long_shift_right = bool(settings.long_shift_right)
        self.blocks = nn.ModuleList([] if settings.merged else [ZeroI2VBlock(width, settings) for width in widths])
        self.temporal_embedding = (nn.Parameter(torch.zeros(1, num_frames, widths[0]))
                                   if settings.temporal_embedding else None)

    def block(self, index: int) -> ZeroI2VBlock:
        """Block `index`'s adapters (typed: nn.ModuleList items are plain modules to a type checker)."""
        return cast(ZeroI2VBlock, self.blocks[index])

    def add_temporal_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The temporal embedding added to each frame's tokens (stadapt_tuners.temporal)."""
        assert self.temporal_embedding is not None
        return add_temporal_embedding(x, self.temporal_embedding, self.num_frames)

    def folds(self, width: int) -> tuple[int, int]:
        """(fold, long_fold): the channels of k and v each shift moves (upstream's C // n_div, C // long_shift_div;
        0: no long shift)."""
        return width // self.shift_div, width // self.long_shift_div if self.long_shift_div > 0 else 0

    def stdha(self, projections: AttentionProjections, y: torch.Tensor) -> torch.Tensor:
        """STDHA on the normed tokens y (N*T, L, C): the packed in-projection, then, over the whole width of k and
        v (before the heads split), channels [0, f) from frame t-1 and [f, 2f) from frame t+1 (edge frames keep
        their own), the optional long shift ([2f, 2f+g) from t-2, with long_shift_right [2f+g, 2f+2g) from t+2),
        then scaled dot-product attention, the output projection and the layer scale. k and v are shifted
        together, no loop over frames: in eager mode in place in the projection's fresh output, from a copy of
        the moved channels only (the merged model then costs the bare backbone's time: a copy of all of k and v
        costs about 8% of the attention on the CPU); when exported or compiled out of place, as an in-place
        write into the projection's output exports wrongly to ONNX (one copy of k and v)."""
        n, length = y.shape[0], y.shape[1]
        frames, heads = self.num_frames, projections.num_heads
        qkv = F.linear(y, projections.qkv_weight, projections.qkv_bias)
        inner = projections.qkv_weight.shape[0] // 3  # the heads' total width (a constant when traced)
        fold, long_fold = self.folds(inner)
        kv = qkv.view(n // frames, frames, length, 3, inner)[:, :, :, 1:]
        q = qkv.view(n, length, 3, heads, inner // heads)[:, :, 0].transpose(1, 2)
        if _tracing():
            kv = _shift_frames(kv, frames, fold, long_fold, self.long_shift_right)
            k, v = kv.view(n, length, 2, heads, inner // heads).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            _shift_frames_in_place(kv, fold, long_fold, self.long_shift_right)
            k, v = qkv.view(n, length, 3, heads, inner // heads).permute(2, 0, 3, 1, 4)[1:].unbind(0)
        return projections.attend(q, k, v)


def _tracing() -> bool:
    """Whether the model is being exported (TorchScript or dynamo) or compiled rather than run eagerly."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling())


def _shift_frames_in_place(kv: torch.Tensor, fold: int, long_fold: int, long_right: bool) -> None:
    """`_shift_frames` written into kv (clips, T, L, 2, C) itself, from a copy of the channels that move."""
    end = 2 * fold + (long_fold * (2 if long_right else 1) if long_fold else 0)
    moved = kv[..., :end].clone()
    kv[:, 1:, ..., :fold] = moved[:, :-1, ..., :fold]  # from frame t - 1
    kv[:, :-1, ..., fold:2 * fold] = moved[:, 1:, ..., fold:2 * fold]  # from frame t + 1
    if long_fold:
        lo = 2 * fold
        kv[:, 2:, ..., lo:lo + long_fold] = moved[:, :-2, ..., lo:lo + long_fold]  # from frame t - 2
        if long_right:
            lo += long_fold
            kv[:, :-2, ..., lo:lo + long_fold] = moved[:, 2:, ..., lo:lo + long_fold]  # from frame t + 2


def _shift_frames(kv: torch.Tensor, frames: int, fold: int, long_fold: int, long_right: bool) -> torch.Tensor:
    """kv (clips, T, L, 2, C) with channels taken from other frames: upstream's TemporalShift (stdha.py,
    divide_head=False, stride 1, and stdha_ablation.py's long_shift_right) on k and v at once. A frame without the
    neighbour keeps its own channels. `frames` is T as a Python int, so that an exported graph's slices are
    constants."""

    def earlier(lo: int, hi: int, by: int) -> torch.Tensor:  # channels [lo, hi) of frame t - by
        part = kv[..., lo:hi]
        return torch.cat([part[:, :by], part[:, : max(frames - by, 0)]], dim=1)

    def later(lo: int, hi: int, by: int) -> torch.Tensor:  # channels [lo, hi) of frame t + by
        part = kv[..., lo:hi]
        return torch.cat([part[:, by:], part[:, max(frames - by, 0):]], dim=1)

    pieces = [earlier(0, fold, 1), later(fold, 2 * fold, 1)]
    end = 2 * fold
    if long_fold:
        pieces.append(earlier(end, end + long_fold, 2))
        end += long_fold
        if long_right:
            pieces.append(later(end, end + long_fold, 2))
            end += long_fold
    return torch.cat([*pieces, kv[..., end:]], dim=-1)


@torch.no_grad()
def fold_before(weight: torch.Tensor, bias: torch.Tensor, adapter: LinearAdapter) -> None:
    """layer(adapter(x)) as one layer, in place: W' = W M, b' = W c + b (upstream's fuse_Adapter2Proj with the
    adapter first: T_Adapter_in into the q/k/v projection, MLP_Adapter into the MLP's first layer)."""
    m, c = adapter.affine()
    w = weight.double()
    new_weight, new_bias = w @ m, w @ c + bias.double()
    weight.copy_(new_weight.to(weight.dtype))
    bias.copy_(new_bias.to(bias.dtype))


@torch.no_grad()
def fold_after(weight: torch.Tensor, bias: torch.Tensor, adapter: LinearAdapter) -> None:
    """adapter(layer(x)) as one layer, in place: W' = M W, b' = M b + c (S_Adapter into the attention's output
    projection, MLP_Adapter_out into the MLP's last layer)."""
    m, c = adapter.affine()
    new_weight, new_bias = m @ weight.double(), m @ bias.double() + c
    weight.copy_(new_weight.to(weight.dtype))
    bias.copy_(new_bias.to(bias.dtype))
