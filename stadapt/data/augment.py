"""Clip-level training augmentation for Something-Something-v2, as in the ST-Adapter recipe.

Two transforms, both drawing ONE set of random parameters per clip and applying it to every frame:

* `ClipRandAugment`: timm's RandAugment (config strings such as ``rand-m7-n4-mstd0.5-inc1``) on a
  uint8 ``(T, 3, H, W)`` clip, implemented with `torchvision.transforms.v2.functional`, which treats
  the leading dimension as a batch, so one call moves every frame by the same angle, shear or shift.
* `RandomResizedCropClip` (and `random_resized_crop_box`): torchvision's RandomResizedCrop box,
  cut from every frame at the same place and resized to ``size x size``.

Why clip-level: the adapters learn from what changes between frames. Drawing a rotation, crop or
colour change per frame would add movement (or flicker) that is not in the video, and on SSv2,
where the label *is* the motion ("pushing something from left to right"), that invents evidence.
Mirroring is deliberately absent: a horizontal flip turns "left to right" into "right to left",
a different SSv2 class, so flipping would need a label map and is not part of this recipe.

All randomness comes from the `numpy.random.Generator` passed to ``__call__`` (the data set derives
it from seed, epoch and index), never from the torch, python or numpy global generators: the same
generator state gives the same output bit for bit, so runs are reproducible and resumable.

Reference order (ST-Adapter's ``video_dataset/dataset.py``, from SlowFast): RandAugment on the
decoded full-size frames first, then RandomResizedCrop to the model's input size, then normalise.
(The reference normalises to float before the crop; resizing is linear and normalisation a
per-channel affine map, so the two orders agree up to rounding. Its crop resize has no
antialiasing; this one has.) The image-statistics ops (AutoContrast, Equalize, Contrast) compute
their statistics per frame, exactly as timm does on each frame as an image: "the same op with the
same parameters on every frame".

The ops themselves, timm's level functions, and how they differ from timm (PIL): stadapt.data.randaugment_ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from stadapt.data.randaugment_config import EXAMPLE_CONFIG, parse_config
from stadapt.data.randaugment_ops import (
    AUGMENT_INTERPOLATIONS,
    DEFAULT_FILL,
    INTERPOLATION_MODES,
    LEVEL_DENOM,
    OP_NAMES,
    OPS,
    RAND_INCREASING_TRANSFORMS,
    RAND_TRANSFORMS,
    check_clip,
)
from stadapt.errors import DataError

__all__ = [
    "ClipRandAugment",
    "RandomResizedCropClip",
    "random_resized_crop_box",
]

CROP_INTERPOLATIONS = ("bilinear", "bicubic")


# ----------------------------------------------------------------------------------------------
# RandAugment


class ClipRandAugment:
    """timm RandAugment with one random draw per clip, applied to every frame of a uint8 clip.

    Per call: `num_layers` op names drawn uniformly WITH replacement; each op then runs with
    probability `prob` at a magnitude drawn around `magnitude` (gaussian with std `magnitude_std`,
    uniform on [0, magnitude] when that is inf), clipped to [0, magnitude_max or 10], turned into
    the op's argument by timm's level function (with timm's random sign where it has one).
    The draws happen in timm's order, from `rng` only.
    """

    def __init__(
        self,
        ops: Sequence[str] = RAND_TRANSFORMS,
        *,
        num_layers: int = 2,
        magnitude: float = 10,
        prob: float = 0.5,
        magnitude_std: float = 0.0,
        magnitude_max: float | None = None,
        fill: Sequence[int] = DEFAULT_FILL,
        interpolation: str = "bilinear",
        config: str | None = None,
    ) -> None:
        ops = tuple(ops)
        if not ops:
            raise DataError("RandAugment needs at least one op", f"e.g. {EXAMPLE_CONFIG!r}")
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise DataError(f"unknown RandAugment op(s): {', '.join(map(repr, unknown))}",
                            f"choose from: {', '.join(OP_NAMES)}")
        if int(num_layers) != num_layers or num_layers < 0:
            raise DataError(f"RandAugment n (ops per clip) must be an integer >= 0, got {num_layers}")
        if not magnitude >= 0:
            raise DataError(f"RandAugment magnitude must be >= 0, got {magnitude}")
        if not 0.0 <= prob <= 1.0:
            raise DataError(f"RandAugment p (probability of each op) must be in [0, 1], got {prob}")
        if not magnitude_std >= 0:
            raise DataError(f"RandAugment mstd must be >= 0, got {magnitude_std}")
        if magnitude_max is not None and not magnitude_max >= 0:
            raise DataError(f"RandAugment mmax must be >= 0, got {magnitude_max}")
        fill = tuple(fill)
        if len(fill) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in fill):
            raise DataError(f"RandAugment fill must be 3 integers in 0..255 (RGB), got {fill}")
        if interpolation not in AUGMENT_INTERPOLATIONS:
            raise DataError(f"unknown RandAugment interpolation {interpolation!r}",
                            f"choose one of: {', '.join(AUGMENT_INTERPOLATIONS)} (torchvision's "
                            f"tensor affine/rotate have no bicubic)")
        self.ops = ops
        self.num_layers = int(num_layers)
        self.magnitude = magnitude
        self.prob = float(prob)
        self.magnitude_std = float(magnitude_std)
        self.magnitude_max = magnitude_max
        self.fill = tuple(int(v) for v in fill)
        self.interpolation = interpolation
        self.config = config

    @classmethod
    def from_config(
        cls,
        config: str,
        *,
        fill: Sequence[int] = DEFAULT_FILL,
        interpolation: str = "bilinear",
    ) -> ClipRandAugment:
        """Build from a timm config string, e.g. ``rand-m7-n4-mstd0.5-inc1``; DataError if malformed."""
        parsed = parse_config(config)
        ops = RAND_INCREASING_TRANSFORMS if parsed["increasing"] else RAND_TRANSFORMS
        return cls(
            ops, num_layers=parsed["num_layers"], magnitude=parsed["magnitude"], prob=parsed["prob"],
            magnitude_std=parsed["magnitude_std"], magnitude_max=parsed["magnitude_max"],
            fill=fill, interpolation=interpolation, config=config.strip(),
        )

    def sample_magnitude(self, rng: np.random.Generator) -> float:
        """timm's AugmentOp magnitude: noise (if mstd > 0), then clip to [0, mmax or 10]."""
        magnitude = float(self.magnitude)
        if self.magnitude_std > 0:
            if math.isinf(self.magnitude_std):
                magnitude = float(rng.uniform(0.0, magnitude))
            else:
                magnitude = float(rng.normal(magnitude, self.magnitude_std))
        upper = self.magnitude_max or LEVEL_DENOM  # timm: `magnitude_max or _LEVEL_DENOM`
        return max(0.0, min(magnitude, float(upper)))

    def draw(self, rng: np.random.Generator) -> list[tuple[str, float | int | None]]:
        """The ops this clip gets, in order, with their arguments; skipped ops are left out."""
        picks = rng.integers(0, len(self.ops), size=self.num_layers)  # uniform, with replacement
        plan: list[tuple[str, float | int | None]] = []
        for index in picks:
            name = self.ops[int(index)]
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            magnitude = self.sample_magnitude(rng)  # timm draws it even for ops without a level
            level_fn = OPS[name][0]
            plan.append((name, None if level_fn is None else level_fn(magnitude, rng)))
        return plan

    def apply(self, clip: torch.Tensor, plan: Sequence[tuple[str, float | int | None]]) -> torch.Tensor:
        """Apply a plan from `draw` to every frame of a uint8 (T, 3, H, W) clip."""
        check_clip(clip)
        for name, arg in plan:
            clip = OPS[name][1](clip, arg, self.fill, self.interpolation)
        return clip

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """uint8 (T, 3, H, W) -> uint8 (T, 3, H, W), one draw from `rng` for the whole clip."""
        check_clip(clip)
        return self.apply(clip, self.draw(rng))

    def __repr__(self) -> str:
        if self.ops == RAND_INCREASING_TRANSFORMS:
            ops = "increasing (15 ops)"
        elif self.ops == RAND_TRANSFORMS:
            ops = "standard (15 ops)"
        else:
            ops = "[" + ", ".join(self.ops) + "]"
        parts = [f"n={self.num_layers}", f"m={self.magnitude}", f"mstd={self.magnitude_std}"]
        if self.magnitude_max is not None:
            parts.append(f"mmax={self.magnitude_max}")
        parts += [f"p={self.prob}", f"ops={ops}", f"fill={self.fill}",
                  f"interpolation={self.interpolation!r}"]
        head = f"{self.config!r}, " if self.config else ""
        return f"{type(self).__name__}({head}{', '.join(parts)})"


# ----------------------------------------------------------------------------------------------
# RandomResizedCrop


def _check_scale_ratio(scale: Sequence[float], ratio: Sequence[float]) -> tuple[tuple, tuple]:
    if len(scale) != 2 or len(ratio) != 2:
        raise DataError(f"RandomResizedCrop scale and ratio need 2 values each, got {tuple(scale)} "
                        f"and {tuple(ratio)}", "e.g. scale (0.08, 1.0), ratio (0.75, 1.3333)")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0.0 < lo <= hi <= 1.0:
        raise DataError(f"RandomResizedCrop scale must satisfy 0 < low <= high <= 1, got {tuple(scale)}",
                        "it is the crop's share of the frame area, e.g. (0.08, 1.0)")
    rlo, rhi = float(ratio[0]), float(ratio[1])
    if not 0.0 < rlo <= rhi or not math.isfinite(rhi):
        raise DataError(f"RandomResizedCrop ratio must satisfy 0 < low <= high, got {tuple(ratio)}",
                        "it is the crop's width / height, e.g. (3/4, 4/3)")
    return (lo, hi), (rlo, rhi)


def random_resized_crop_box(
    height: int,
    width: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    *,
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop: torchvision's RandomResizedCrop.get_params, drawing from `rng`.

    Ten tries of area ~ U(scale) x frame area and log(aspect) ~ U(log ratio); the first box that
    fits gets a uniform position. Otherwise the centre crop of the whole frame, narrowed to the
    nearest aspect ratio in range (its area may then fall outside `scale`, as in torchvision).
    """
    (lo, hi), (rlo, rhi) = _check_scale_ratio(scale, ratio)
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"cannot crop a {height}x{width} frame")
    area = height * width
    log_lo, log_hi = math.log(rlo), math.log(rhi)
    for _ in range(10):
        target_area = area * float(rng.uniform(lo, hi))
        aspect = math.exp(float(rng.uniform(log_lo, log_hi)))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < rlo:
        w = width
        h = max(1, int(round(w / rlo)))
    elif in_ratio > rhi:
        h = height
        w = max(1, int(round(h * rhi)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCropClip:
    """One RandomResizedCrop box for the whole clip, resized to size x size with antialiasing.

    Works on float or uint8 (T, 3, H, W) and keeps the dtype; uint8 results are rounded and clamped,
    float results are not clamped (bicubic can overshoot slightly, as in torchvision).
    """

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = "bilinear",
    ) -> None:
        if isinstance(size, bool) or int(size) != size or int(size) < 1:
            raise DataError(f"RandomResizedCrop size must be an integer >= 1, got {size!r}")
        (lo, hi), (rlo, rhi) = _check_scale_ratio(scale, ratio)
        if interpolation not in CROP_INTERPOLATIONS:
            raise DataError(f"unknown RandomResizedCrop interpolation {interpolation!r}",
                            f"choose one of: {', '.join(CROP_INTERPOLATIONS)}")
        self.size = int(size)
        self.scale = (lo, hi)
        self.ratio = (rlo, rhi)
        self.interpolation = interpolation

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(T, 3, H, W) float or uint8 -> (T, 3, size, size), same dtype, one box from `rng`."""
        if not isinstance(clip, torch.Tensor) or clip.ndim != 4 or clip.shape[1] != 3:
            shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
            raise ValueError(f"expected a (T, 3, H, W) clip, got {shape}")
        height, width = clip.shape[-2:]
        top, left, h, w = random_resized_crop_box(height, width, self.scale, self.ratio, rng=rng)
        return TF.resized_crop(clip, top, left, h, w, [self.size, self.size],
                               interpolation=INTERPOLATION_MODES[self.interpolation], antialias=True)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, "
                f"ratio=({self.ratio[0]:.4g}, {self.ratio[1]:.4g}), "
                f"interpolation={self.interpolation!r})")
