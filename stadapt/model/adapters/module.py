"""The Spatio-Temporal Adapter (Pan et al., NeurIPS 2022), exactly as the reference implements it.

    x (B*T, P + H*W, C) -> patch tokens -> fc1 (C -> Ca) -> (B, Ca, T, H, W)
      -> depthwise Conv3d (kT, kH, kW) -> back to tokens -> fc2 (Ca -> C) -> added to the patch tokens

No activation; the P prefix tokens (e.g. CLS) pass through untouched. conv and the fc biases start at
zero, so the adapter is the identity at init, while fc1/fc2 keep PyTorch's default init so that
gradients reach the conv (zeroing fc2 as well would freeze everything at the identity).
Shapes are static (T, H, W fixed at construction) so torch.compile and ONNX export see no data-dependent
shapes; the batch dimension stays free. Nothing is written in place into the block input.

The temporal convolution has three exact forms over the same `conv.weight` / `conv.bias` (checkpoints do
not change): PyTorch's depthwise `nn.Conv3d` ("conv3d", the reference's), and for kernels (kT, 1, 1) a
grouped Conv1d over time ("conv1d") or kT shifted multiply-adds over time on the channels-last tokens
("shift", no permutes at all). Depthwise Conv3d is known to be slow on CUDA, above all backward.
`TEMPORAL_CONV` below is THE place that picks one per device type; `STAdapter.temporal_conv` forces one
per module (tests, benchmarks).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from stadapt.backbones.layout import TokenLayout
from stadapt.vocabulary import kernel_is_odd

TEMPORAL_FORMS = ("conv3d", "conv1d", "shift")
# The temporal convolution's form per device type: the fastest where measured forward+backward at
# ViT-B/16 shapes (`python -m stadapt.tools.bench.temporal_conv`, also run by `make device-check`). CPU: Conv3d,
# measured fastest (README, "Memory and speed"). CUDA keeps the reference's Conv3d until device-check has
# measured the three on a GPU. Device types not listed: Conv3d.
TEMPORAL_CONV: dict[str, str] = {"cpu": "conv3d", "cuda": "conv3d"}


def temporal_shift_conv(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise convolution over time of z (B, T, ..., C) with a Conv3d weight (C, 1, kT, 1, 1), zero
    padding kT // 2: exactly `conv3d` on the permuted tensor, as kT multiply-adds of shifted slices."""
    frames, channels = z.shape[1], z.shape[-1]
    k = weight.shape[2]
    taps = weight.reshape(channels, k)
    pad = k // 2
    if pad:
        z = F.pad(z, (0, 0) * (z.ndim - 2) + (pad, pad))
    out = z[:, 0:frames] * taps[:, 0]
    for i in range(1, k):
        out = out + z[:, i:i + frames] * taps[:, i]
    return out if bias is None else out + bias


def temporal_conv1d(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The same convolution as a grouped Conv1d over time on (B * H*W, C, T): one permute each way."""
    batch, frames, tokens, channels = z.shape
    k = weight.shape[2]
    x = z.permute(0, 2, 3, 1).reshape(batch * tokens, channels, frames)
    out = F.conv1d(x, weight.reshape(channels, 1, k), bias, padding=k // 2, groups=channels)
    return out.reshape(batch, tokens, channels, frames).permute(0, 3, 1, 2)


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
        if not kernel_is_odd(kernel):
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
        self.temporal_conv: str | None = None  # None: TEMPORAL_CONV[device type]; else one of TEMPORAL_FORMS
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

    def form(self, device: torch.device) -> str:
        """The temporal convolution's form on `device`: forced, else TEMPORAL_CONV's; other than "conv3d"
        only where the kernel is (kT, 1, 1)."""
        form = self.temporal_conv or TEMPORAL_CONV.get(device.type, "conv3d")
        if form not in TEMPORAL_FORMS:
            raise ValueError(f"temporal_conv must be one of {TEMPORAL_FORMS}, got {form!r}")
        return form if self.kernel[1:] == (1, 1) else "conv3d"

    def temporal(self, z: torch.Tensor) -> torch.Tensor:
        """The depthwise temporal convolution of fc1's output z ((N, H*W, Ca) or (N, H, W, Ca), N = B*T),
        in the form `form` picks; same shape out."""
        height, width = self.layout.grid
        ca = z.shape[-1]
        form = self.form(z.device)
        if form != "conv3d":
            fn = temporal_shift_conv if form == "shift" else temporal_conv1d
            out = fn(z.reshape(-1, self.num_frames, height * width, ca), self.conv.weight, self.conv.bias)
        else:
            out = self.conv(z.reshape(-1, self.num_frames, height, width, ca).permute(0, 4, 1, 2, 3))
            out = out.permute(0, 2, 3, 4, 1)
        return out.reshape(z.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        prefix_count = layout.prefix_tokens
        if layout.channels_last_grid:  # (N, H, W, C): every token is a patch token
            prefix, patches = None, x
        else:  # (N, P + H*W, C)
            prefix, patches = x[:, :prefix_count], x[:, prefix_count:]
        patches = patches + self.fc2(self.temporal(self.fc1(patches)))
        if prefix is None or prefix_count == 0:
            return patches
        return torch.cat([prefix, patches], dim=1)

    def extra_repr(self) -> str:
        return f"frames={self.num_frames}, grid={self.layout.grid}, prefix_tokens={self.layout.prefix_tokens}"
