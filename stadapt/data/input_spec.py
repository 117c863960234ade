"""The input contract: `InputSpec`, how a model's input is made from a video file.

It lives in the data layer because it describes data (frames, sampling, views, size, normalisation) and
the readers of video (`stadapt.data.views`, evaluation's dataset) need it; a checkpoint records it in its
stadapt.json (`stadapt.checkpoints.format`), which reads it from here. This module imports nothing of
stadapt but the base's `TxS` views reader: a backbone's `VariantInfo` is read by its attributes only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from stadapt.vocabulary import split_views

SAMPLINGS = ("stride", "segment")
TEST_CROPS = ("short_side",)

# What a reader assumes for a setting an old record lacks (a format-1 checkpoint's recipe, an ONNX graph
# exported before the InputSpec was recorded): the defaults those readers applied, defined once so an old
# file gives the same input everywhere. `interpolation` counts only where no backbone says it (an old graph).
LEGACY_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"sampling": "stride", "stride": 16, "views": "1x1", "interpolation": "bicubic"})


@dataclass(frozen=True)
class InputSpec:
    """How a model's input is made from a video file: everything inference needs besides the weights.

    `frames` per clip, sampled by `sampling` ("stride": every `stride`-th frame from a start; "segment":
    one frame per equal segment, `stride` unused); `views` = (temporal, spatial) test views; each frame's
    short side resized to `image_size` with `interpolation`, then (`crop` "short_side") 1 centre crop or
    S crops along the long side; RGB in 0..1 normalised with `mean` and `std`.
    """

    frames: int
    sampling: str
    stride: int
    views: tuple[int, int]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop: str = "short_side"

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 1, got {value}" for name, value in (
            ("frames", self.frames), ("stride", self.stride), ("image_size", self.image_size),
            ("temporal views", self.views[0]), ("spatial views", self.views[1])) if int(value) < 1]
        if self.sampling not in SAMPLINGS:
            problems.append(f"unknown sampling {self.sampling!r} (one of: {', '.join(SAMPLINGS)})")
        if self.crop not in TEST_CROPS:
            problems.append(f"unknown test crop {self.crop!r} (one of: {', '.join(TEST_CROPS)})")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            problems.append(f"mean and std need 3 values each, std > 0 (got {self.mean}, {self.std})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def views_text(self) -> str:
        """The views as recipes and `--views` write them: "TxS"."""
        return f"{self.views[0]}x{self.views[1]}"

    def with_views(self, views: tuple[int, int] | None) -> InputSpec:
        """The same input with other test views (None: these)."""
        return self if views is None else replace(self, views=(int(views[0]), int(views[1])))

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "sampling": self.sampling, "stride": self.stride,
                "temporal_views": self.views[0], "spatial_views": self.views[1], "image_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "crop": self.crop}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """The InputSpec `to_dict` wrote; unknown or missing keys are errors (ValueError/KeyError/TypeError)."""
        unknown = set(data) - {"frames", "sampling", "stride", "temporal_views", "spatial_views", "image_size",
                               "mean", "std", "interpolation", "crop"}
        if unknown:
            raise ValueError(f"unknown input settings {sorted(unknown)}")
        return cls(frames=int(data["frames"]), sampling=str(data["sampling"]), stride=int(data["stride"]),
                   views=(int(data["temporal_views"]), int(data["spatial_views"])),
                   image_size=int(data["image_size"]), mean=_three(data["mean"]), std=_three(data["std"]),
                   interpolation=str(data["interpolation"]), crop=str(data.get("crop", "short_side")))


def _three(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def input_spec_from_record(record: Mapping[str, Any]) -> InputSpec:
    """The InputSpec of settings recorded one by one: `frames`, `image_size`, `mean` and `std` (required),
    `sampling`, `stride`, `views` ("TxS") and `interpolation`, each LEGACY_DEFAULTS' where absent."""
    value = {**LEGACY_DEFAULTS, **record}
    temporal, spatial = split_views(str(value["views"]))
    return InputSpec(frames=int(value["frames"]), sampling=str(value["sampling"]), stride=int(value["stride"]),
                     views=(temporal, spatial), image_size=int(value["image_size"]), mean=_three(value["mean"]),
                     std=_three(value["std"]), interpolation=str(value["interpolation"]))


def input_spec_from_data(data: Mapping[str, Any], variant: Any) -> InputSpec:
    """The InputSpec of a recipe's `data` section (a dict) on a backbone `variant` (VariantInfo): frames,
    sampling, stride and views from the recipe (where a key is absent: LEGACY_DEFAULTS, as the readers of
    format-1 checkpoints assumed), size, normalisation and interpolation from the backbone."""
    recorded = {key: data[key] for key in ("frames", "sampling", "stride", "views") if key in data}
    return input_spec_from_record({**recorded, "image_size": variant.image_size, "mean": variant.mean,
                                   "std": variant.std, "interpolation": variant.interpolation})
