"""RandAugment's ops on a uint8 (T, 3, H, W) clip, with timm's level functions exactly.

Each op runs through `torchvision.transforms.v2.functional`, which treats the leading dimension as a
batch, so one call moves every frame by the same angle, shear or shift (the clip-level draw is
`ClipRandAugment`, stadapt.data.augment). The magnitude -> argument maps are timm's `*_level_to_arg`,
with timm's random sign drawn from the clip's `numpy.random.Generator`.

Differences from timm (PIL) that remain, measured on smooth 224 x 224 test images (see the tests):

* Geometry is matched exactly (PIL's continuous pixel coordinates, rotation about the image
  centre, shear about the top-left corner, the sign and size of every op); the resampling differs
  at the pixel level. Away from the edge of the filled area the two agree within 1 grey level
  (mean ~0.4, rounding inside the two bilinear kernels). Along that edge PIL
  has a hard border (a point sampled outside the image takes the fill colour, one just inside is
  clamped to the edge pixel) while torchvision's grid_sample blends the fill into a one-pixel
  band, so single pixels there differ by up to |content - fill| (~125 levels measured). Over the
  whole 224 x 224 image the mean absolute difference is 0.45-0.7 levels for Rotate (21 deg),
  ShearX/Y (0.21) and TranslateX/YRel (0.315).
* timm picks bilinear or bicubic at random per op unless an interpolation is given (SlowFast and
  ST-Adapter pass one: bicubic by default); torchvision's tensor `affine`/`rotate` only offer
  nearest and bilinear, so bicubic is not available here and the default is bilinear.
* Color and Contrast: PIL's grey image rounds ``(299 R + 587 G + 114 B) / 1000`` and Contrast rounds
  the mean to an integer; torchvision floors the grey values and keeps the mean as a float, so
  25-50 % of pixels differ by exactly 1 level. AutoContrast differs by at most 1 level (float
  order of operations); Brightness, Sharpness, Equalize, Invert, Posterize, Solarize and
  SolarizeAdd matched PIL bit for bit on the test images.
* Config strings: timm silently skips sections without a digit and lets a repeated key win; here a
  malformed, unknown or repeated section raises `DataError`. Transform-set sections (``t...``) are
  not supported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "DEFAULT_FILL",
    "OP_NAMES",
    "RAND_INCREASING_TRANSFORMS",
    "RAND_TRANSFORMS",
    "apply_op",
]

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitude M maps to the fraction M / 10 of each op's range
DEFAULT_FILL = (128, 128, 128)  # timm's _FILL, used by SlowFast/ST-Adapter (no img_mean passed)
TRANSLATE_PCT = 0.45  # timm's default translate_pct for TranslateXRel / TranslateYRel
SOLARIZE_ADD_THRESHOLD = 128  # timm's solarize_add default thresh

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, same names, same order.
RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)

AUGMENT_INTERPOLATIONS = ("bilinear", "nearest")  # what torchvision's tensor affine/rotate support
INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


# ----------------------------------------------------------------------------------------------
# Level functions: magnitude (0..magnitude_max) -> op argument, timm's *_level_to_arg exactly,
# with timm's `random.random() > 0.5` sign flip drawn from `rng` instead.


def _randomly_negate(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


def _rotate_level(level: float, rng: np.random.Generator) -> float:
    return _randomly_negate((level / LEVEL_DENOM) * 30.0, rng)  # degrees, range [-30, 30]


def _enhance_level(level: float, rng: np.random.Generator) -> float:
    return (level / LEVEL_DENOM) * 1.8 + 0.1  # factor, range [0.1, 1.9]


def _enhance_increasing_level(level: float, rng: np.random.Generator) -> float:
    return max(0.1, 1.0 + _randomly_negate((level / LEVEL_DENOM) * 0.9, rng))  # 1 -/+ up to 0.9


def _shear_level(level: float, rng: np.random.Generator) -> float:
    return _randomly_negate((level / LEVEL_DENOM) * 0.3, rng)  # PIL matrix factor, [-0.3, 0.3]


def _translate_rel_level(level: float, rng: np.random.Generator) -> float:
    return _randomly_negate((level / LEVEL_DENOM) * TRANSLATE_PCT, rng)  # fraction of the size


def _posterize_level(level: float, rng: np.random.Generator) -> int:
    return int((level / LEVEL_DENOM) * 4)  # bits kept, 0..4


def _posterize_increasing_level(level: float, rng: np.random.Generator) -> int:
    return 4 - _posterize_level(level, rng)  # bits kept, 4..0


def _solarize_level(level: float, rng: np.random.Generator) -> int:
    return min(256, int((level / LEVEL_DENOM) * 256))  # threshold, 0..256


def _solarize_increasing_level(level: float, rng: np.random.Generator) -> int:
    return 256 - _solarize_level(level, rng)  # threshold, 256..0


def _solarize_add_level(level: float, rng: np.random.Generator) -> int:
    return min(128, int((level / LEVEL_DENOM) * 110))  # added to pixels < 128, 0..110


# ----------------------------------------------------------------------------------------------
# Ops on uint8 (T, 3, H, W); `arg` is the level function's value (None for the no-argument ops).


def _affine(clip: torch.Tensor, *, shear=(0.0, 0.0), translate=(0.0, 0.0), fill, interpolation):
    # PIL's AFFINE data (a, b, c, d, e, f) maps an OUTPUT point to the INPUT point it samples, in
    # continuous coordinates with the origin at the image's top-left corner. torchvision builds the
    # forward map about `center`; center=(0, 0) is that same corner, and its shear matrix
    # [[1, -tan(sx)], [0, 1]] is the inverse of PIL's [[1, f], [0, 1]] when tan(sx) = f.
    return TF.affine(
        clip, angle=0.0, translate=[float(t) for t in translate], scale=1.0,
        shear=[float(s) for s in shear], interpolation=INTERPOLATION_MODES[interpolation],
        fill=[float(f) for f in fill], center=[0.0, 0.0],
    )


def _op_rotate(clip, degrees, fill, interpolation):
    # PIL's Image.rotate: counter-clockwise, about (w/2, h/2), same size; torchvision's rotate too.
    return TF.rotate(clip, float(degrees), interpolation=INTERPOLATION_MODES[interpolation], expand=False,
                     center=None, fill=[float(f) for f in fill])


def _op_shear_x(clip, factor, fill, interpolation):
    # PIL (1, f, 0, 0, 1, 0): out(x, y) = in(x + f * y, y).
    return _affine(clip, shear=(math.degrees(math.atan(factor)), 0.0), fill=fill,
                   interpolation=interpolation)


def _op_shear_y(clip, factor, fill, interpolation):
    # PIL (1, 0, 0, f, 1, 0): out(x, y) = in(x, y + f * x).
    return _affine(clip, shear=(0.0, math.degrees(math.atan(factor))), fill=fill,
                   interpolation=interpolation)


def _op_translate_x_rel(clip, pct, fill, interpolation):
    # PIL (1, 0, pixels, 0, 1, 0): out(x, y) = in(x + pixels, y), content moves LEFT by pixels.
    pixels = pct * clip.shape[-1]
    return _affine(clip, translate=(-pixels, 0.0), fill=fill, interpolation=interpolation)


def _op_translate_y_rel(clip, pct, fill, interpolation):
    pixels = pct * clip.shape[-2]
    return _affine(clip, translate=(0.0, -pixels), fill=fill, interpolation=interpolation)


def _op_posterize(clip, bits, fill, interpolation):
    if bits >= 8:
        return clip
    # PIL's mask ~(2 ** (8 - bits) - 1) zeroes everything for bits <= 0 (reachable with mmax > 10).
    return TF.posterize(clip, max(0, int(bits)))


def _op_solarize(clip, threshold, fill, interpolation):
    if threshold >= 256:  # PIL inverts pixels >= threshold: none; torchvision refuses > 255
        return clip
    return TF.solarize(clip, float(threshold))


def _op_solarize_add(clip, add, fill, interpolation):
    added = (clip.to(torch.int16) + int(add)).clamp_(0, 255).to(torch.uint8)
    return torch.where(clip < SOLARIZE_ADD_THRESHOLD, added, clip)


OPS = {
    # name: (level function or None, op)
    "AutoContrast": (None, lambda clip, arg, fill, interpolation: TF.autocontrast(clip)),
    "Equalize": (None, lambda clip, arg, fill, interpolation: TF.equalize(clip)),
    "Invert": (None, lambda clip, arg, fill, interpolation: TF.invert(clip)),
    "Rotate": (_rotate_level, _op_rotate),
    "Posterize": (_posterize_level, _op_posterize),
    "PosterizeIncreasing": (_posterize_increasing_level, _op_posterize),
    "Solarize": (_solarize_level, _op_solarize),
    "SolarizeIncreasing": (_solarize_increasing_level, _op_solarize),
    "SolarizeAdd": (_solarize_add_level, _op_solarize_add),
    "Color": (_enhance_level, lambda clip, f, fill, interpolation: TF.adjust_saturation(clip, f)),
    "ColorIncreasing": (_enhance_increasing_level,
                        lambda clip, f, fill, interpolation: TF.adjust_saturation(clip, f)),
    "Contrast": (_enhance_level, lambda clip, f, fill, interpolation: TF.adjust_contrast(clip, f)),
    "ContrastIncreasing": (_enhance_increasing_level,
                           lambda clip, f, fill, interpolation: TF.adjust_contrast(clip, f)),
    "Brightness": (_enhance_level,
                   lambda clip, f, fill, interpolation: TF.adjust_brightness(clip, f)),
    "BrightnessIncreasing": (_enhance_increasing_level,
                             lambda clip, f, fill, interpolation: TF.adjust_brightness(clip, f)),
    "Sharpness": (_enhance_level, lambda clip, f, fill, interpolation: TF.adjust_sharpness(clip, f)),
    "SharpnessIncreasing": (_enhance_increasing_level,
                            lambda clip, f, fill, interpolation: TF.adjust_sharpness(clip, f)),
    "ShearX": (_shear_level, _op_shear_x),
    "ShearY": (_shear_level, _op_shear_y),
    "TranslateXRel": (_translate_rel_level, _op_translate_x_rel),
    "TranslateYRel": (_translate_rel_level, _op_translate_y_rel),
}
OP_NAMES = tuple(OPS)


def check_clip(clip: torch.Tensor) -> None:
    if not isinstance(clip, torch.Tensor) or clip.dtype != torch.uint8:
        raise ValueError(f"RandAugment expects a uint8 tensor, got "
                         f"{clip.dtype if isinstance(clip, torch.Tensor) else type(clip).__name__}")
    if clip.ndim != 4 or clip.shape[1] != 3:
        raise ValueError(f"expected a (T, 3, H, W) clip, got shape {tuple(clip.shape)}")


def apply_op(
    clip: torch.Tensor,
    name: str,
    arg: float | int | None = None,
    *,
    fill: Sequence[int] = DEFAULT_FILL,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Apply one RandAugment op with its level-function argument to every frame of a uint8 clip.

    `arg` is what timm's level function returns: degrees for Rotate, PIL's matrix factor for
    ShearX/Y, a fraction of the width/height for TranslateX/YRel, bits kept for Posterize*, the
    threshold for Solarize*, the amount added for SolarizeAdd, the blend factor for the enhance ops
    (1.0 = unchanged), None for AutoContrast, Equalize and Invert.
    """
    if name not in OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(OP_NAMES)}")
    check_clip(clip)
    return OPS[name][1](clip, arg, tuple(fill), interpolation)
