"""From a recipe to the parts a run is made of: device, precision, model, data sets.

Shared by training and evaluation so that both read clips exactly the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stadapt.adapters.config import AdapterConfig
from stadapt.backbones.plugin import VariantInfo
from stadapt.errors import StadaptError
from stadapt.model import BuiltModel, ModelConfig, build_model
from stadapt.recipe import Recipe


def resolve_device(name: str) -> torch.device:
    """`auto` = the first CUDA device if there is one, else the CPU; an unavailable device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StadaptError(f"train.device={name} but CUDA is not available here", "set train.device=cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise StadaptError(f"train.device={name} but MPS is not available here", "set train.device=cpu (or auto)")
    return device


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and whether fp16 loss scaling is needed."""

    dtype: torch.dtype | None
    scale_loss: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto`: bf16 on GPUs that have it, fp16 with loss scaling on older GPUs, float32 on the CPU
    (CPU autocast is slower than float32 on most CPUs without bf16 units)."""
    if name == "auto":
        if device.type != "cuda":
            return Precision(None, False)
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp32":
        return Precision(None, False)
    if name == "bf16":
        return Precision(torch.bfloat16, False)
    if device.type != "cuda":
        raise StadaptError(f"train.precision=fp16 needs a CUDA device, this run uses {device}", "use bf16 or fp32")
    return Precision(torch.float16, True)


def model_config(recipe: Recipe, num_classes: int) -> ModelConfig:
    a = recipe.adapter
    adapter = None
    if recipe.tuning == "st_adapter":
        adapter = AdapterConfig(
            bottleneck=a.bottleneck,
            kernel=tuple(a.kernel),
            positions=tuple(a.positions),
            blocks=tuple(a.blocks) if a.blocks is not None else None,
        )
    return ModelConfig(
        backbone=recipe.backbone.name,
        num_classes=num_classes,
        num_frames=recipe.data.frames,
        adapter=adapter,
        dropout=recipe.model.dropout,
        backbone_options=dict(recipe.backbone.options),
    )


def build_from_recipe(recipe: Recipe, num_classes: int) -> BuiltModel:
    return build_model(model_config(recipe, num_classes), weights=recipe.backbone.weights)


def parse_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2 temporal, 3 spatial)."""
    try:
        temporal, spatial = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StadaptError(f"views '{text}' is not TxS", "write temporal x spatial views, e.g. --views 1x3") from None
    if temporal < 1 or spatial not in (1, 3):
        raise StadaptError(f"views '{text}': need T >= 1 and S = 1 or 3", "e.g. --views 3x1 or 1x3")
    return temporal, spatial


def train_dataset(recipe: Recipe, entries: Sequence[Any], variant: VariantInfo):
    from stadapt.data import TrainTransform, VideoClipDataset, make_sampler

    d = recipe.data
    a = d.augment
    transform = TrainTransform(
        variant.image_size, variant.mean, variant.std, crop=a.crop, scale=tuple(a.scale), area=tuple(a.area),
        ratio=tuple(a.ratio), flip=a.flip, randaugment=a.randaugment, interpolation=variant.interpolation,
    )
    sampler = make_sampler(d.sampling, d.frames, d.stride)
    return VideoClipDataset(entries, sampler, transform, train=True, seed=recipe.train.seed)


def eval_dataset(
    entries: Sequence[Any], variant: VariantInfo, *, frames: int, sampling: str, stride: int, views: tuple[int, int]
):
    from stadapt.data import TestTransform, VideoClipDataset, make_sampler

    temporal, spatial = views
    transform = TestTransform(
        variant.image_size, variant.mean, variant.std, spatial_views=spatial, interpolation=variant.interpolation
    )
    return VideoClipDataset(
        entries, make_sampler(sampling, frames, stride), transform, train=False, temporal_views=temporal
    )
