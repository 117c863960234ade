"""Per-clip spatial transforms, parameterised by the backbone's own input size and normalisation.

Every frame of a clip gets the same resize, crop and flip: the adapters model motion between frames,
and per-frame jitter would invent some. Input is (T, H, W, 3) uint8 as decoded; output is float32,
channels first (3, T, S, S), normalised. The paper's two training pipelines (Table 1) are both
`TrainTransform`: K400 = short-side jitter + crop + mirror; SSv2 = RandAugment + RandomResizedCrop.

Each transform comes in two halves so that a DataLoader worker does only per-clip integer work and the
float work runs where the model runs (see stadapt/data/on_device.py):

* `worker(frames, rng)`: in the worker, uint8 in, uint8 out: draws every random parameter of the clip
  from `rng` (in the order the whole transform always drew them) and does what must stay per clip and
  is cheap in uint8 (RandAugment, an integer crop box). Returns a (3, T, h, w) uint8 clip and a small
  int64 row of parameters, `(h, w, ...)`, that travels with the batch.
* `on_device(video, params)`: on the training device, a uint8 batch padded to one size (B, 3, T, H, W)
  -> float32 (B, 3, T, S, S) normalised: the resize, crop, flip and normalisation, with the same float
  operations in the same order as `__call__` (which is the two halves run back to back on the CPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stadapt.errors import DataError

INTERPOLATIONS = ("bicubic", "bilinear")
CROPS = ("jitter", "resized")
# How much larger than the largest size the transform resizes to a decoded frame's short side may stay:
# the decoder scales a larger frame down to it (stadapt.data.pyav_reader, AREA), and torch's antialiased
# resize still makes the final step, so ordinary videos (320x240 ... 640x360 for a 224 crop) decode
# exactly as without a bound while a 4000x3000 one never reaches memory at full size.
DECODE_MARGIN = 2


def decode_short_side(transform: Any) -> int | None:
    """The bound on the decoded frames' short side that `transform` needs (None: any size; also for a
    transform that does not say)."""
    bound = getattr(transform, "decode_short_side", None)
    return int(bound) if bound is not None else None


def _check_common(size: int, mean: Sequence[float], std: Sequence[float], interpolation: str) -> None:
    if int(size) < 1:
        raise DataError(f"crop size must be >= 1, got {size}")
    if len(mean) != 3 or len(std) != 3:
        raise DataError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise DataError(f"std values must be > 0, got {tuple(std)}")
    if interpolation not in INTERPOLATIONS:
        raise DataError(f"unknown interpolation {interpolation!r}", f"choose one of: {', '.join(INTERPOLATIONS)}")


def _uint8_cthw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> a (3, T, H, W) view of it, no copy: the batch's collation copies it once, as
    it lies in memory (`stack_padded`), and the device half makes it contiguous where the model runs."""
    clip = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {tuple(clip.shape)}")
    return clip.permute(3, 0, 1, 2)


def short_side_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to `short`, aspect kept (the worker needs it to
    draw a crop position without resizing anything)."""
    if min(height, width) == short:
        return height, width
    if height <= width:
        return short, max(short, round(width * short / height))
    return max(short, round(height * short / width)), short


def resize_short_side(clip: torch.Tensor, short: int, interpolation: str) -> torch.Tensor:
    """Resize (T, 3, H, W) so its short side is `short`, aspect kept; a no-op when already there."""
    height, width = clip.shape[-2:]
    if min(height, width) == short:
        return clip
    new_h, new_w = short_side_shape(height, width, short)
    out = F.interpolate(clip, size=(new_h, new_w), mode=interpolation, antialias=True, align_corners=False)
    return out.clamp_(0.0, 255.0)


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

    def _normalise_batch(self, clips: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """(T, 3, S, S) float clips in 0..255 -> (B, 3, T, S, S) normalised, (x / 255 - mean) / std
        (element-wise, so the same numbers whether one clip or a batch goes through)."""
        if not clips:
            return torch.zeros(0, 3, 0, self.size, self.size, device=device)
        mean, std = (stat.view(1, 1, 3, 1, 1).to(device) for stat in self._stats())
        batch = (torch.stack(clips) / 255.0 - mean) / std
        return batch.permute(0, 2, 1, 3, 4).contiguous()


def _float_tchw(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The unpadded (3, T, height, width) part of a padded uint8 clip -> (T, 3, height, width) float32."""
    return clip[..., :height, :width].transpose(0, 1).contiguous().to(torch.float32)


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

    PARAMS = ("height", "width", "short", "top", "left", "flip")  # what `worker` hands on, per clip

    @property
    def decode_short_side(self) -> int:
        """The largest short side worth decoding, `DECODE_MARGIN` x what the crop resizes to at most.

        `jitter` resizes the short side to at most size x scale_high. `resized` cuts a box of the whole
        frame (area >= area_low of it, aspect within `ratio`) and resizes it to size x size: the box's
        shorter side is at least short x sqrt(area_low) x min(sqrt(ratio_low), 1 / sqrt(ratio_high)) (a
        square frame is the worst case), so a short side of `DECODE_MARGIN` x size divided by that factor
        keeps even the smallest box at twice the resolution it is resized to (1829 for 224, area 0.08).
        """
        if self.crop == "jitter":
            return math.ceil(DECODE_MARGIN * self.size * self.scale[1])
        low, (rlo, rhi) = self.area[0], self.ratio
        shrink = math.sqrt(low) * min(math.sqrt(rlo), 1.0 / math.sqrt(rhi), 1.0)
        return math.ceil(DECODE_MARGIN * self.size / shrink)

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The whole transform on the CPU: (T, H, W, 3) uint8 -> (3, T, S, S) float32, normalised."""
        clip, params = self.worker(frames, rng)
        return self.on_device(clip.unsqueeze(0), params.unsqueeze(0))[0]

    def worker(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, H, W, 3) uint8 -> ((3, T, h, w) uint8, int64 row `PARAMS`), all draws from `rng`.

        `jitter` keeps the whole frame (resizing it exactly needs all of it) and draws the short side
        and the crop position; `resized` cuts its integer box here, so only the box travels."""
        clip = _uint8_cthw(frames)
        if self.randaugment is not None:  # its ops take contiguous (T, 3, H, W)
            clip = self.randaugment(clip.transpose(0, 1).contiguous(), rng).transpose(0, 1)
        height, width = clip.shape[-2:]
        short = top = left = 0
        if self.crop == "jitter":
            short = max(self.size, round(self.size * rng.uniform(*self.scale)))
            new_h, new_w = short_side_shape(height, width, short)
            if min(new_h, new_w) < self.size:
                raise ValueError(f"frames of {new_h}x{new_w} cannot give a {self.size} crop")
            top = int(rng.integers(0, new_h - self.size + 1))
            left = int(rng.integers(0, new_w - self.size + 1))
        else:
            from stadapt.data.augment import random_resized_crop_box

            box_top, box_left, height, width = random_resized_crop_box(height, width, self.area, self.ratio, rng=rng)
            clip = clip[..., box_top : box_top + height, box_left : box_left + width]
        flip = int(self.flip and rng.random() < 0.5)
        return clip, torch.tensor([height, width, short, top, left, flip], dtype=torch.long)

    def on_device(self, video: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, T, H, W) on the device (padded; `params` on the CPU) -> float32 (B, 3, T, S, S)."""
        s = self.size
        clips = []
        for clip, (height, width, short, top, left, flip) in zip(video, params.tolist(), strict=True):
            x = _float_tchw(clip, height, width)
            if self.crop == "jitter":
                x = resize_short_side(x, short, self.interpolation)[..., top : top + s, left : left + s]
            else:
                x = F.interpolate(x, size=(s, s), mode=self.interpolation, antialias=True,
                                  align_corners=False).clamp_(0.0, 255.0)
            clips.append(x.flip(-1) if flip else x)
        return self._normalise_batch(clips, video.device)


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

    @property
    def decode_short_side(self) -> int:
        """The largest short side worth decoding: `DECODE_MARGIN` x the short side the views resize to."""
        return DECODE_MARGIN * self.size

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
        """The whole transform on the CPU: (T, H, W, 3) uint8 -> (spatial_views, 3, T, S, S) float32."""
        clip, params = self.worker(frames)
        return self.on_device(clip[None, None], params.unsqueeze(0))[0]

    def worker(self, frames: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, H, W, 3) uint8 -> ((3, T, H, W) uint8, int64 row (H, W)): nothing to draw, nothing to cut."""
        clip = _uint8_cthw(frames)
        return clip, torch.tensor(clip.shape[-2:], dtype=torch.long)

    def on_device(self, video: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """uint8 (B, V, 3, T, H, W) on the device (V temporal views, padded) -> float32
        (B, V * spatial_views, 3, T, S, S), temporal-major."""
        s = self.size
        out = []
        for views, (height, width) in zip(video, params.tolist(), strict=True):
            crops = []
            for view in views:
                clip = resize_short_side(_float_tchw(view, height, width), s, self.interpolation)
                crops += [clip[..., top : top + s, left : left + s]
                          for top, left in self.crop_offsets(*clip.shape[-2:])]
            out.append(self._normalise_batch(crops, video.device))
        if not out:
            return torch.zeros(0, 0, 3, 0, s, s, device=video.device)
        return torch.stack(out)
