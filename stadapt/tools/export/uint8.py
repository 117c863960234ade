"""`stadapt export --onnx --input uint8`: a graph that takes frames as decoders give them and
normalises inside, so an ONNX consumer does not re-implement the checkpoint's mean and std.

Layout: `video` (batch, T, S, S, 3) uint8 RGB, 0-255: T frames of S x S pixels, channels last, as PyAV
(`to_ndarray(format="rgb24")`), decord, OpenCV (after BGR->RGB) and PIL give them, stacked. Resizing
and cropping stay outside (the consumer's frames are already S x S: short side resized to S, then
cropped); the graph does the float conversion, the channel move and (x / 255 - mean) / std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Uint8Frames(nn.Module):
    """`model` behind the conversion of (B, T, S, S, 3) uint8 RGB frames to its normalised (B, 3, T, S, S)
    input, computed as the data pipeline computes it: (x / 255 - mean) / std in float32."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        video = frames.permute(0, 4, 1, 2, 3).to(torch.float32)
        return self.model((video / 255.0 - self.mean) / self.std)


def frames_from_unit_clip(clip: torch.Tensor) -> torch.Tensor:
    """A (3, T, S, S) clip in 0..1 (the test transform with mean 0, std 1) as the (T, S, S, 3) uint8
    frames a consumer's own resize and crop would give."""
    return (clip * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous()
