"""ST-Adapter's modules per block, imported only when a model is built (a recipe's validation needs no torch)."""

from __future__ import annotations

from torch import nn

from stadapt.backbones.layout import TokenLayout
from stadapt.model.adapters import AdapterConfig, STAdapter


class BlockAdapters(nn.Module):
    """The adapters of one block, at the positions the config names (keys `adapters.N.pre_attn...`)."""

    pre_attn: STAdapter | None
    pre_mlp: STAdapter | None

    def __init__(self, layout: TokenLayout, num_frames: int, config: AdapterConfig) -> None:
        super().__init__()
        for position in ("pre_attn", "pre_mlp"):
            adapter = (
                STAdapter(layout, num_frames, config.bottleneck_for(layout.width), config.kernel)
                if position in config.positions
                else None
            )
            setattr(self, position, adapter)
