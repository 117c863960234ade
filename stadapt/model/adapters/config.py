"""Where adapters go and how big they are: the paper's knobs as one value type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stadapt.vocabulary import kernel_is_odd

POSITIONS = ("pre_attn", "pre_mlp")


@dataclass(frozen=True)
class AdapterConfig:
    """Adapters on the residual stream: before the attention branch and/or before the MLP branch.

    The paper's Table 1 (CLIP ViT-B/16): K400 one adapter per block = ("pre_mlp",); SSv2 two per block
    = ("pre_attn", "pre_mlp"); bottleneck 384; kernel 3x1x1. `blocks` None means every block; negative
    indices count from the end (the reference adapts the last N blocks).

    `bottleneck_ratio` (optional) sizes each adapter from the width of the tokens it sees instead:
    bottleneck = round(ratio x width). Hierarchical backbones (Swin: 128, 256, 512, 1024 channels over
    four stages) need it; 0.5 is ViT-B/16's 384 / 768. It overrides `bottleneck` when set.
    """

    bottleneck: int = 384
    kernel: tuple[int, int, int] = (3, 1, 1)
    positions: tuple[str, ...] = ("pre_mlp",)
    blocks: tuple[int, ...] | None = None
    bottleneck_ratio: float | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.positions if p not in POSITIONS]
        if unknown or not self.positions:
            raise ValueError(f"adapter positions must be a non-empty subset of {POSITIONS}, got {self.positions}")
        if not kernel_is_odd(self.kernel):
            raise ValueError(f"adapter kernel must be three odd sizes (T, H, W), got {self.kernel}")
        if self.bottleneck < 1:
            raise ValueError(f"adapter bottleneck must be positive, got {self.bottleneck}")
        if self.bottleneck_ratio is not None and not 0 < self.bottleneck_ratio <= 4:
            raise ValueError(f"adapter bottleneck_ratio must be in (0, 4], got {self.bottleneck_ratio}")
        # keep a canonical order so that equal configs compare equal
        object.__setattr__(self, "positions", tuple(p for p in POSITIONS if p in self.positions))

    def bottleneck_for(self, width: int) -> int:
        """The bottleneck of an adapter on tokens `width` channels wide."""
        if self.bottleneck_ratio is None:
            return self.bottleneck
        return max(1, round(self.bottleneck_ratio * width))

    def block_indices(self, num_blocks: int) -> list[int]:
        """The adapted blocks for a backbone of `num_blocks` blocks, ascending."""
        if self.blocks is None:
            return list(range(num_blocks))
        out = set()
        for index in self.blocks:
            if not -num_blocks <= index < num_blocks:
                raise ValueError(f"adapter block {index} does not exist: the backbone has {num_blocks} blocks")
            out.add(index % num_blocks)
        return sorted(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bottleneck": self.bottleneck,
            "kernel": list(self.kernel),
            "positions": list(self.positions),
            "blocks": None if self.blocks is None else list(self.blocks),
            **({} if self.bottleneck_ratio is None else {"bottleneck_ratio": self.bottleneck_ratio}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterConfig:
        blocks: Sequence[int] | None = data.get("blocks")
        return cls(
            bottleneck=int(data.get("bottleneck", 384)),
            kernel=tuple(int(k) for k in data.get("kernel", (3, 1, 1))),  # type: ignore[arg-type]
            positions=tuple(data.get("positions", ("pre_mlp",))),
            blocks=None if blocks is None else tuple(int(b) for b in blocks),
            bottleneck_ratio=None if data.get("bottleneck_ratio") is None else float(data["bottleneck_ratio"]),
        )
