"""The recipe's `data:` section: the prepared data set, clip sampling, test views, decoding, and the
clip-level training augmentation (`data.augment:`).

Values are checked here (a RandAugment policy is parsed without importing torch); the data folder and
its lists are checked by the loader (stadapt.recipe.files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stadapt.recipe.fields import Float, Int, Section, raise_rules
from stadapt.vocabulary import split_views


class AugmentSection(Section):
    """Clip-level training augmentation (one draw per clip, shared by all its frames): RandAugment, crop, flip."""

    crop: Literal["jitter", "resized"] = "jitter"
    """The training crop, to the backbone's input size S: `jitter` (K400, UCF, HMDB: the short side
    resized to S x U(`scale`), then a random S x S crop) or `resized` (SSv2: RandomResizedCrop with
    `area` and `ratio`)."""
    scale: tuple[Float, Float] = (1.0, 1.15)
    """`crop: jitter`: the short side is resized to the crop size x U(low, high), 1 <= low <= high (a
    short side below the crop size leaves nothing to crop). The paper's 224-256 px is [1.0, 1.143]; the
    default is the reference's."""
    area: tuple[Float, Float] = (0.08, 1.0)
    """`crop: resized`: [low, high] of the crop's area, as a fraction of the frame's."""
    ratio: tuple[Float, Float] = (0.75, 4 / 3)
    """`crop: resized`: [low, high] of the crop's aspect ratio (width / height), drawn log-uniformly."""
    flip: bool = False
    """Mirror the clip horizontally with p = 0.5; off by default because it swaps SSv2's left/right
    classes."""
    randaugment: str | None = None
    """A timm-style RandAugment policy such as `rand-m7-n4-mstd0.5-inc1` (SSv2), applied to the decoded
    frames before the crop, as the reference does; null = none."""

    @field_validator("scale")
    @classmethod
    def _at_least_the_crop(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 1 <= value[0] <= value[1]:
            raise PydanticCustomError(
                "scale_range", "expected [low, high] with 1 <= low <= high (the short side never below the crop), "
                "got {scale}", {"scale": list(value)}
            )
        return value

    @field_validator("ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise PydanticCustomError(
                "scale_range", "expected [low, high] with 0 < low <= high, got {scale}", {"scale": list(value)}
            )
        return value

    @field_validator("area")
    @classmethod
    def _fraction(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise PydanticCustomError(
                "area_range", "expected [low, high] with 0 < low <= high <= 1, got {area}", {"area": list(value)}
            )
        return value

    @field_validator("randaugment")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from stadapt.data.randaugment_config import parse_config
        from stadapt.errors import DataError

        try:
            parse_config(value)
        except DataError as exc:
            raise PydanticCustomError("randaugment", "{problem}", {"problem": exc.message}) from None
        return value


def _views_as_written(value: str) -> bool:
    """`TxS` as a recipe keeps it: read by the one views reader (`split_views`), T, S >= 1, and spelt the
    way it reads back (no sign, space or leading zero, a lowercase x)."""
    try:
        temporal, spatial = split_views(value)
    except ValueError:
        return False
    return temporal >= 1 and spatial >= 1 and value == f"{temporal}x{spatial}"


class DataSection(Section):
    """A data set made by `stadapt prepare-data`; list files are relative to `root`."""

    format: Literal["prepared"] = "prepared"
    """The data set's layout: `prepared` (a folder written by `stadapt prepare-data`) is the only one."""
    root: str
    """The prepared data folder (`classes.txt` and the lists); a relative path is taken from the working
    directory."""
    train_list: str = "train.txt"
    """The training list (`path label` lines), relative to `root`."""
    val_list: str = "val.txt"
    """The validation list, relative to `root`: validation during training, and `stadapt eval`'s default."""
    frames: Int = Field(8, gt=0)
    """Frames per clip (T): the paper's main setting is 8 (the `*_16f` and `*_32f` recipes: 16 and 32)."""
    sampling: Literal["stride", "segment"] = "stride"
    """How a clip's frames are chosen: `stride` (K400: `frames` frames `stride` apart, from a random start
    in training, evenly spaced starts at test) or `segment` (SSv2: the whole video cut into `frames` equal
    segments, a random frame of each in training, their centres at test)."""
    stride: Int = Field(16, gt=0)
    """`sampling: stride`: the gap between sampled frames, in frames of the video, so a clip spans
    (frames - 1) x stride + 1 frames (a shorter video repeats its last frame); not used by `segment`."""
    augment: AugmentSection = Field(default_factory=AugmentSection)
    """Training augmentation (validation and test clips are not augmented)."""
    views: str = "1x1"
    """Test views, `TxS`: T clips evenly spaced in time x S crops (S = 1: the centre crop; more: spread
    along the long side), their softmax averaged. Used by validation and recorded in checkpoints as the
    default of eval and predict (`--views` overrides it)."""
    num_workers: Int = Field(2, ge=0)
    """DataLoader worker processes that decode clips, per training process, in training and validation;
    also `stadapt eval`'s default (`--workers`). 0 = decode in the main process."""
    decoder: Literal["pyav", "torchcodec"] = "pyav"
    """The video decoder: `pyav` (PyAV) or `torchcodec` (the `stadapt[torchcodec]` extra)."""
    decode_device: Literal["cpu", "cuda"] = "cpu"
    """Where frames are decoded: `cpu`, or `cuda` (the GPU's NVDEC; needs `decoder: torchcodec` and
    `num_workers: 0`)."""

    @model_validator(mode="after")
    def _decoding(self) -> DataSection:
        problems = []
        if self.decode_device == "cuda" and self.decoder != "torchcodec":
            problems.append(("decode_device", "cuda needs decoder: torchcodec (PyAV decodes on the CPU only)"))
        if self.decode_device == "cuda" and self.num_workers:
            problems.append(("decode_device", f"cuda decodes in the main process (CUDA does not start in forked "
                                              f"DataLoader workers); set num_workers: 0, got {self.num_workers}"))
        raise_rules(problems)
        return self

    @field_validator("views")
    @classmethod
    def _views(cls, value: str) -> str:
        if not _views_as_written(value):
            raise PydanticCustomError(
                "views",
                "expected TxS test views like '1x1', '3x1' or '1x3' (T, S >= 1), got {value}",
                {"value": repr(value)},
            )
        return value

    @property
    def train_path(self) -> Path:
        """The training list as an absolute path (an absolute `train_list` is kept)."""
        return Path(self.root) / self.train_list
