"""The Spatio-Temporal Adapter (Pan et al., NeurIPS 2022), exactly as the reference implements it.

    x (B*T, P + H*W, C) -> patch tokens -> fc1 (C -> Ca) -> (B, Ca, T, H, W)
      -> depthwise Conv3d (kT, kH, kW) -> back to tokens -> fc2 (Ca -> C) -> added to the patch tokens

No activation; the P prefix tokens (e.g. CLS) pass through untouched. conv and the fc biases start at
zero, so the adapter is the identity at init, while fc1/fc2 keep PyTorch's default init so that
gradients reach the conv (zeroing fc2 as well would freeze everything at the identity).
Shapes are static (T, H, W fixed at construction) so torch.compile and ONNX export see no data-dependent
shapes; the batch dimension stays free. Nothing is written in place into the block input.
"""

from __future__ import annotations

import torch
from torch import nn

from stadapt.backbones.layout import TokenLayout


class STAdapter(nn.Module):
    """One ST-Adapter for tokens of the given layout, frames of one clip contiguous (b-major)."""

    def __init__(
        self,
        layout: TokenLayout,
        num_frames: int,
        bottleneck: int,
        kernel: tuple[int, int, int] = (3, 1, 1),
    ) -> None:
        super().__init__()
        if num_frames < 1 or bottleneck < 1:
            raise ValueError(f"num_frames and bottleneck must be positive, got {num_frames}, {bottleneck}")
        if len(kernel) != 3 or any(k < 1 or k % 2 == 0 for k in kernel):
            raise ValueError(f"adapter kernel must be three odd sizes (T, H, W), got {tuple(kernel)}")
        self.layout = layout
        self.num_frames = num_frames
        channels = layout.width
        self.fc1 = nn.Linear(channels, bottleneck)
        self.conv = nn.Conv3d(
            bottleneck,
            bottleneck,
            kernel_size=(kernel[0], kernel[1], kernel[2]),
            stride=1,
            padding=(kernel[0] // 2, kernel[1] // 2, kernel[2] // 2),
            groups=bottleneck,
        )
        self.fc2 = nn.Linear(bottleneck, channels)
        nn.init.zeros_(self.conv.weight)
        assert self.conv.bias is not None
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    @property
    def bottleneck(self) -> int:
        return self.fc1.out_features

    @property
    def kernel(self) -> tuple[int, int, int]:
        return tuple(self.conv.kernel_size)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        height, width = layout.grid
        prefix_count = layout.prefix_tokens
        if layout.channels_last_grid:  # (N, H, W, C): every token is a patch token
            prefix, patches = None, x
        else:  # (N, P + H*W, C)
            prefix, patches = x[:, :prefix_count], x[:, prefix_count:]
        z = self.fc1(patches)
        ca = z.shape[-1]
        z = z.reshape(-1, self.num_frames, height, width, ca).permute(0, 4, 1, 2, 3)
        z = self.conv(z)
        z = z.permute(0, 2, 3, 4, 1).reshape(patches.shape[:-1] + (ca,))
        patches = patches + self.fc2(z)
        if prefix is None or prefix_count == 0:
            return patches
        return torch.cat([prefix, patches], dim=1)

    def extra_repr(self) -> str:
        return f"frames={self.num_frames}, grid={self.layout.grid}, prefix_tokens={self.layout.prefix_tokens}"
