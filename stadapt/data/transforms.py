"""Per-clip spatial transforms, parameterised by the backbone's own input size and normalisation.

Every frame of a clip gets the same resize, crop and flip: the adapters model motion between frames,
and per-frame jitter would invent some. Input is (T, H, W, 3) uint8 as decoded; output is float32,
channels first (3, T, S, S), normalised. Richer training augmentation (RandAugment,
RandomResizedCrop for SSv2) can replace `TrainTransform` behind the same `(frames, rng)` call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stadapt.errors import DataError

INTERPOLATIONS = ("bicubic", "bilinear")


def _check_common(size: int, mean: Sequence[float], std: Sequence[float], interpolation: str) -> None:
    if int(size) < 1:
        raise DataError(f"crop size must be >= 1, got {size}")
    if len(mean) != 3 or len(std) != 3:
        raise DataError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise DataError(f"std values must be > 0, got {tuple(std)}")
    if interpolation not in INTERPOLATIONS:
        raise DataError(f"unknown interpolation {interpolation!r}", f"choose one of: {', '.join(INTERPOLATIONS)}")


def _to_float_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in 0..255."""
    clip = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {tuple(clip.shape)}")
    return clip.permute(0, 3, 1, 2).to(torch.float32)


def resize_short_side(clip: torch.Tensor, short: int, interpolation: str) -> torch.Tensor:
    """Resize (T, 3, H, W) so its short side is `short`, aspect kept; a no-op when already there."""
    height, width = clip.shape[-2:]
    if min(height, width) == short:
        return clip
    if height <= width:
        new_h, new_w = short, max(short, round(width * short / height))
    else:
        new_h, new_w = max(short, round(height * short / width)), short
    out = F.interpolate(clip, size=(new_h, new_w), mode=interpolation, antialias=True, align_corners=False)
    return out.clamp_(0.0, 255.0)


def _normalise(clip: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(T, 3, S, S) in 0..255 -> (3, T, S, S) normalised, contiguous."""
    clip = (clip / 255.0 - mean) / std
    return clip.permute(1, 0, 2, 3).contiguous()


class _Normalising:
    """Holds the normalisation as plain tuples (cheap to pickle into DataLoader workers)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], interpolation: str) -> None:
        _check_common(size, mean, std, interpolation)
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.mean).view(1, 3, 1, 1), torch.tensor(self.std).view(1, 3, 1, 1))


class TrainTransform(_Normalising):
    """Short-side jitter (size x U(scale)), a random size x size crop, optional mirror; one draw a clip."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        scale: tuple[float, float] = (1.0, 1.15),
        flip: bool = False,
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__(size, mean, std, interpolation)
        lo, hi = float(scale[0]), float(scale[1])
        if not 1.0 <= lo <= hi:
            raise DataError(f"short-side scale must satisfy 1 <= low <= high, got {scale}",
                            "the short side must not fall below the crop size")
        self.scale = (lo, hi)
        self.flip = bool(flip)

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        clip = _to_float_tchw(frames)
        short = max(self.size, round(self.size * rng.uniform(*self.scale)))
        clip = resize_short_side(clip, short, self.interpolation)
        height, width = clip.shape[-2:]
        if min(height, width) < self.size:
            raise ValueError(f"frames of {height}x{width} cannot give a {self.size} crop")
        top = int(rng.integers(0, height - self.size + 1))
        left = int(rng.integers(0, width - self.size + 1))
        clip = clip[..., top : top + self.size, left : left + self.size]
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        return _normalise(clip, *self._stats())


class TestTransform(_Normalising):
    """Short side to `size`, then 1 centre crop or 3 crops along the long side (start, centre, end)."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        spatial_views: int = 1,
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__(size, mean, std, interpolation)
        if spatial_views not in (1, 3):
            raise DataError(f"spatial views must be 1 or 3, got {spatial_views}",
                            "1 = centre crop, 3 = start/centre/end crops along the long side")
        self.spatial_views = int(spatial_views)

    def crop_offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of each crop in a frame already resized to short side `size`."""
        s = self.size
        centre = ((height - s) // 2, (width - s) // 2)
        if self.spatial_views == 1:
            return [centre]
        if width >= height:
            return [(centre[0], left) for left in (0, (width - s) // 2, width - s)]
        return [(top, centre[1]) for top in (0, (height - s) // 2, height - s)]

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        clip = resize_short_side(_to_float_tchw(frames), self.size, self.interpolation)
        mean, std = self._stats()
        s = self.size
        views = [
            _normalise(clip[..., top : top + s, left : left + s], mean, std)
            for top, left in self.crop_offsets(*clip.shape[-2:])
        ]
        return torch.stack(views)
