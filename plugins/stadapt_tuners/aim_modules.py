"""AIM's modules (imported only when a model is built): its bottleneck adapter, the adapters of one block and
the temporal embedding, with the temporal path that runs the frozen block's attention along time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from stadapt_tuners.temporal import add_temporal_embedding

if TYPE_CHECKING:
    from stadapt.backbones.base import FrameBackbone


class AimAdapter(nn.Module):
    """fc1 -> GELU (exact erf, not CLIP's QuickGELU) -> fc2, with or without a skip; fc2 starts at zero, as
    AIM initialises it, so that a fresh model computes the image model per frame."""

    def __init__(self, width: int, mlp_ratio: float, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.fc1 = nn.Linear(width, int(width * mlp_ratio))
        self.act = nn.GELU()
        self.fc2 = nn.Linear(int(width * mlp_ratio), width)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out


class AimBlock(nn.Module):
    """One block's adapters, named after AIM's (T_Adapter_in, T_Adapter, S_Adapter, MLP_Adapter)."""

    t_adapter_in: AimAdapter | None

    def __init__(self, width: int, settings: Any) -> None:
        super().__init__()
        ratio = settings.mlp_ratio
        self.t_adapter_in = AimAdapter(width, ratio, skip=True) if settings.num_tadapter == 2 else None
        self.t_adapter = AimAdapter(width, ratio, skip=False)
        self.s_adapter = AimAdapter(width, ratio, skip=True)
        self.mlp_adapter = AimAdapter(width, ratio, skip=False)


class AimModules(nn.Module):
    """Keys `adapters.temporal_embedding` (1, T, C) and `adapters.blocks.<i>.<adapter>.fc1/fc2`."""

    temporal_embedding: nn.Parameter | None

    def __init__(self, widths: list[int], num_frames: int, settings: Any) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.scale = float(settings.adapter_scale)
        self.blocks = nn.ModuleList(AimBlock(width, settings) for width in widths)
        self.temporal_embedding = (nn.Parameter(torch.zeros(1, num_frames, widths[0]))
                                   if settings.temporal_embedding else None)

    def block(self, index: int) -> AimBlock:
        """Block `index`'s adapters (typed: nn.ModuleList items are plain modules to a type checker)."""
        return cast(AimBlock, self.blocks[index])

    def add_temporal_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The temporal embedding added to each frame's tokens (stadapt_tuners.temporal)."""
        assert self.temporal_embedding is not None
        return add_temporal_embedding(x, self.temporal_embedding, self.num_frames)

    def temporal(self, backbone: FrameBackbone, index: int, x: torch.Tensor) -> torch.Tensor:
        """x + T_Adapter(attn(ln_1(x)) along time): the block's norm (per token, so taken on the frames'
        tokens), T_Adapter_in when there is one, the block's attention body over each token position's T
        frames ((N*L, T, C): a backbone with `attend_sequence` has global, position-free attention), then
        T_Adapter, without skip, added to the residual."""
        block = self.block(index)
        frames, width = self.num_frames, x.shape[-1]
        y = backbone.attn_norm(index, x)
        if block.t_adapter_in is not None:
            y = block.t_adapter_in(y)
        tokens = y.reshape(-1, frames, y[0].numel() // width, width)  # (N, T, L, C)
        along_time = tokens.transpose(1, 2).reshape(-1, frames, width)  # (N*L, T, C)
        out = block.t_adapter(backbone.attn_body(index, along_time))
        return x + out.reshape(tokens.shape[0], tokens.shape[2], frames, width).transpose(1, 2).reshape(x.shape)
