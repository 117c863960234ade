"""From a recipe to a model and data sets, the same for training and inference: the architecture a
recipe describes, the model built with its memory options, and the training and validation data sets,
so that training, validation and the benchmarks read clips exactly the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from stadapt.backbones.plugin import VariantInfo
from stadapt.model.classifier import BuiltModel, ModelConfig, build_model
from stadapt.model.text_head import HeadConfig
from stadapt.recipe import Recipe
from stadapt.runtime.device import resolve_device
from stadapt.runtime.precision import apply_memory_options, resolve_precision
from stadapt.tuners import load_tuner


def model_config(recipe: Recipe, num_classes: int) -> ModelConfig:
    """The architecture a recipe describes; the tuning method reads its settings from its recipe section
    with its own reader (the one a checkpoint's stadapt.json goes through), so the two cannot drift apart."""
    tuner = load_tuner(recipe.tuning)
    adapter = None if tuner.settings is None else tuner.read_settings(recipe.tuner_section())
    return ModelConfig(
        backbone=recipe.backbone.name,
        num_classes=num_classes,
        num_frames=recipe.data.frames,
        adapter=adapter,
        dropout=recipe.model.dropout,
        backbone_options=dict(recipe.backbone.options),
        tuning=recipe.tuning,
        head=HeadConfig(type=recipe.model.head.type, templates=tuple(recipe.model.head.templates),
                        train=recipe.model.head.train),
    )


def build_from_recipe(recipe: Recipe, num_classes: int, device: torch.device | str | None = None, *,
                      classes: Sequence[str] | None = None) -> BuiltModel:
    """The model of `recipe` with its tuning mode and memory options (`train.backbone_storage`,
    `train.checkpointing`) applied, still on the CPU. `device` (default: the recipe's `train.device`)
    is where it will train, which decides `backbone_storage: auto`. A text head embeds `classes`."""
    built = build_model(model_config(recipe, num_classes), weights=recipe.backbone.weights, seed=recipe.train.seed,
                        classes=classes)
    device = resolve_device(recipe.train.device) if device is None else torch.device(device)
    apply_memory_options(
        built.model,
        storage=recipe.train.backbone_storage,
        checkpointing=recipe.train.checkpointing,
        precision=resolve_precision(recipe.train.precision, device),
        device=device,
    )
    return built


def train_dataset(recipe: Recipe, entries: Sequence[Any], variant: VariantInfo):
    """The training clips of `entries` as the recipe samples and augments them (the transform's worker half
    runs in the DataLoader workers, the rest where the model runs: `stadapt.data.on_device`)."""
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
    from stadapt.data.input_spec import input_spec_from_data
    from stadapt.data.views import test_dataset

    spec = input_spec_from_data({"frames": frames, "sampling": sampling, "stride": stride,
                                 "views": f"{views[0]}x{views[1]}"}, variant)
    return test_dataset(entries, spec, decoder=decoder, decode_device=decode_device)
