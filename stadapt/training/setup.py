"""From a recipe to the parts a run is made of: device, precision, model, data sets.

Shared by training and evaluation so that both read clips exactly the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stadapt.model.adapters.config import AdapterConfig
from stadapt.backbones.plugin import VariantInfo
from stadapt.errors import StadaptError
from stadapt.model.classifier import BuiltModel, ModelConfig, VideoClassifier, build_model
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
    """The architecture a recipe describes; the adapter section is read by AdapterConfig's own reader (the
    one a checkpoint's stadapt.json goes through), so the two cannot drift apart."""
    adapter = AdapterConfig.from_dict(recipe.adapter.model_dump()) if recipe.tuning == "st_adapter" else None
    return ModelConfig(
        backbone=recipe.backbone.name,
        num_classes=num_classes,
        num_frames=recipe.data.frames,
        adapter=adapter,
        dropout=recipe.model.dropout,
        backbone_options=dict(recipe.backbone.options),
        tuning=recipe.tuning,
    )


def build_from_recipe(recipe: Recipe, num_classes: int, device: torch.device | str | None = None) -> BuiltModel:
    """The model of `recipe` with its tuning mode and memory options (`train.backbone_storage`,
    `train.checkpointing`) applied, still on the CPU. `device` (default: the recipe's `train.device`)
    is where it will train, which decides `backbone_storage: auto`."""
    built = build_model(model_config(recipe, num_classes), weights=recipe.backbone.weights, seed=recipe.train.seed)
    device = resolve_device(recipe.train.device) if device is None else torch.device(device)
    apply_memory_options(
        built.model,
        storage=recipe.train.backbone_storage,
        checkpointing=recipe.train.checkpointing,
        precision=resolve_precision(recipe.train.precision, device),
        device=device,
    )
    return built


def backbone_storage_dtype(storage: str, model: VideoClassifier, precision: Precision, device: torch.device):
    """The dtype to keep the backbone in, or None for float32.

    `half`: the autocast dtype (bf16, or fp16 on GPUs without bf16), for a frozen backbone only;
    `auto`: the same where it is safe: on CUDA, with autocast on, the backbone frozen; `fp32`: never.
    """
    if storage == "fp32":
        return None
    if storage == "auto":
        safe = device.type == "cuda" and precision.dtype is not None and not model.backbone_trains
        return precision.dtype if safe else None
    if model.backbone_trains:
        raise StadaptError(
            f"train.backbone_storage=half keeps the backbone in 16 bits, but tuning={model.tuning} trains "
            "backbone parameters (they need float32)",
            "set train.backbone_storage=auto (or fp32), or use tuning=st_adapter or linear",
        )
    if precision.dtype is None:
        raise StadaptError(
            "train.backbone_storage=half needs autocast to run the 16-bit backbone, but this run uses "
            f"float32 (train.precision={precision.name} on {device})",
            "set train.precision=bf16 (or fp16 on CUDA), or train.backbone_storage=auto",
        )
    return precision.dtype


def apply_memory_options(
    model: VideoClassifier, *, storage: str, checkpointing: bool | str, precision: Precision, device: torch.device
) -> None:
    """`train.backbone_storage` and `train.checkpointing` (activation checkpointing of the blocks, or of
    their MLP branches only with "mlp")."""
    dtype = backbone_storage_dtype(storage, model, precision, device)
    if dtype is not None:
        model.store_backbone_as(dtype)
    model.checkpointing = checkpointing


def parse_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2 temporal, 3 spatial)."""
    try:
        temporal, spatial = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StadaptError(f"views '{text}' is not TxS", "write temporal x spatial views, e.g. --views 1x3") from None
    if temporal < 1 or spatial < 1:
        raise StadaptError(f"views '{text}': need T >= 1 and S >= 1", "e.g. --views 3x1 or 1x3")
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
    return VideoClipDataset(entries, sampler, transform, train=True, seed=recipe.train.seed, on_device=True,
                            decoder=d.decoder, decode_device=d.decode_device)


def eval_dataset(
    entries: Sequence[Any], variant: VariantInfo, *, frames: int, sampling: str, stride: int, views: tuple[int, int],
    decoder: str = "pyav", decode_device: str = "cpu",
):
    """Validation's dataset: `stadapt.data.views.test_dataset`, the one inference path, on these settings."""
    from stadapt.checkpoints.format import input_spec_from_data
    from stadapt.data.views import test_dataset

    spec = input_spec_from_data({"frames": frames, "sampling": sampling, "stride": stride,
                                 "views": f"{views[0]}x{views[1]}"}, variant)
    return test_dataset(entries, spec, decoder=decoder, decode_device=decode_device)
