"""Per-clip spatial transforms, parameterised by the backbone's own input size and normalisation.

Every frame of a clip gets the same resize, crop and flip: the adapters model motion between frames,
and per-frame jitter would invent some. Input is (T, H, W, 3) uint8 as decoded; output is float32,
channels first (3, T, S, S), normalised. The paper's two training pipelines (Table 1) are both
`TrainTransform`: K400 = short-side jitter + crop + mirror; SSv2 = RandAugment + RandomResizedCrop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stadapt.errors import DataError

INTERPOLATIONS = ("bicubic", "bilinear")
CROPS = ("jitter", "resized")


def _check_common(size: int, mean: Sequence[float], std: Sequence[float], interpolation: str) -> None:
    if int(size) < 1:
        raise DataError(f"crop size must be >= 1, got {size}")
    if len(mean) != 3 or len(std) != 3:
        raise DataError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise DataError(f"std values must be > 0, got {tuple(std)}")
    if interpolation not in INTERPOLATIONS:
        raise DataError(f"unknown interpolation {interpolation!r}", f"choose one of: {', '.join(INTERPOLATIONS)}")


def _to_uint8_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) uint8, contiguous (what the RandAugment ops take)."""
    clip = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {tuple(clip.shape)}")
    return clip.permute(0, 3, 1, 2).contiguous()


def _to_float_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in 0..255."""
    return _to_uint8_tchw(frames).to(torch.float32)


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
    """One random draw per clip, shared by all its frames, in the reference's order:
    RandAugment on the decoded frames (optional), then the crop (`jitter`: short side = size x
    U(scale) and a random size x size crop; `resized`: RandomResizedCrop with `area` and `ratio`),
    then an optional mirror, then normalisation."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        crop: str = "jitter",
        scale: tuple[float, float] = (1.0, 1.15),
        area: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = False,
        randaugment: str | None = None,
        interpolation: str = "bicubic",
    ) -> None:
        from stadapt.data.augment import ClipRandAugment, random_resized_crop_box

        super().__init__(size, mean, std, interpolation)
        if crop not in CROPS:
            raise DataError(f"unknown crop {crop!r}", f"choose one of: {', '.join(CROPS)}")
        lo, hi = float(scale[0]), float(scale[1])
        if not 1.0 <= lo <= hi:
            raise DataError(f"short-side scale must satisfy 1 <= low <= high, got {scale}",
                            "the short side must not fall below the crop size")
        random_resized_crop_box(8, 8, area, ratio, rng=np.random.default_rng(0))  # validates area and ratio
        self.crop = crop
        self.scale = (lo, hi)
        self.area = (float(area[0]), float(area[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip = bool(flip)
        self.randaugment = ClipRandAugment.from_config(randaugment) if randaugment else None

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        clip = _to_uint8_tchw(frames)
        if self.randaugment is not None:
            clip = self.randaugment(clip, rng)
        clip = clip.to(torch.float32)
        clip = self._jitter_crop(clip, rng) if self.crop == "jitter" else self._resized_crop(clip, rng)
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        return _normalise(clip, *self._stats())

    def _jitter_crop(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        short = max(self.size, round(self.size * rng.uniform(*self.scale)))
        clip = resize_short_side(clip, short, self.interpolation)
        height, width = clip.shape[-2:]
        if min(height, width) < self.size:
            raise ValueError(f"frames of {height}x{width} cannot give a {self.size} crop")
        top = int(rng.integers(0, height - self.size + 1))
        left = int(rng.integers(0, width - self.size + 1))
        return clip[..., top : top + self.size, left : left + self.size]

    def _resized_crop(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        from stadapt.data.augment import random_resized_crop_box

        top, left, h, w = random_resized_crop_box(*clip.shape[-2:], self.area, self.ratio, rng=rng)
        box = clip[..., top : top + h, left : left + w]
        out = F.interpolate(box, size=(self.size, self.size), mode=self.interpolation, antialias=True,
                            align_corners=False)
        return out.clamp_(0.0, 255.0)


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
        if int(spatial_views) < 1:
            raise DataError(f"spatial views must be >= 1, got {spatial_views}",
                            "1 = centre crop, 3 = start/centre/end crops along the long side")
        self.spatial_views = int(spatial_views)

    def crop_offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of each crop in a frame already resized to short side `size`: 1 view = the centre
        crop; S views = S crops evenly spaced along the long side, first and last at its ends (3 =
        start, centre, end: the paper's 3 spatial views)."""
        s = self.size
        centre = ((height - s) // 2, (width - s) // 2)
        if self.spatial_views == 1:
            return [centre]
        n = self.spatial_views
        if width >= height:
            return [(centre[0], (k * (width - s)) // (n - 1) if k < n - 1 else width - s) for k in range(n)]
        return [((k * (height - s)) // (n - 1) if k < n - 1 else height - s, centre[1]) for k in range(n)]

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        clip = resize_short_side(_to_float_tchw(frames), self.size, self.interpolation)
        mean, std = self._stats()
        s = self.size
        views = [
            _normalise(clip[..., top : top + s, left : left + s], mean, std)
            for top, left in self.crop_offsets(*clip.shape[-2:])
        ]
        return torch.stack(views)
