"""VideoClassifier: a frozen image backbone + the modules of a tuning method + temporal pooling + a linear head.

`tuning` names the method (a plugin of the `stadapt.tuners` group: `stadapt methods` lists them); the model
asks it what to attach, what runs at the block loop's hook points and which parameters train, and never
tests a method's name. The built-ins are the paper's method and its baselines (plugins/stadapt_tuners).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.backbones.registry import parse_backbone
from stadapt.backbones.weights import LoadReport, fingerprint, load_into, read_state_dict
from stadapt.errors import WeightsError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.blocks import NO_HOOKS, BlockHooks, embed, run_blocks
from stadapt.model.text_head import HeadConfig, TextHeadError, build_text_head, text_tower_for
from stadapt.tuners import POOLINGS, ModelConfigError, Tuner, load_tuner, require_hooks
from stadapt.tuners.registry import methods_without_needs
from stadapt.vocabulary import weights_is_path

__all__ = ["BuiltModel", "ClassifierHead", "ModelConfig", "ModelConfigError", "VideoClassifier", "build_model"]

# What a checkpoint from before `tuning` was recorded trained: adapters + head, or the head alone.
LEGACY_TUNING = {True: "st_adapter", False: "linear"}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (not its weights). `adapter` holds the tuning
    method's settings (an AdapterConfig for st_adapter; None for a method without settings), recorded
    under the key `adapter` of a checkpoint's model config as formats 1 and 2 did."""

    backbone: str
    num_classes: int
    num_frames: int = 8
    adapter: Any = field(default_factory=AdapterConfig)  # the tuning method's settings; None: it has none
    dropout: float = 0.5
    backbone_options: Mapping[str, Any] = field(default_factory=dict)
    tuning: str = "st_adapter"  # what trains: an installed tuning method
    head: HeadConfig = field(default_factory=HeadConfig)  # linear, or the text tower's class embeddings

    def __post_init__(self) -> None:
        _check_tuning(self.tuning, has_settings=self.adapter is not None)

    @property
    def tuner(self) -> Tuner:
        return load_tuner(self.tuning)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's `model` block; `head` only for a text head (a linear one reads as before)."""
        out = {
            "backbone": self.backbone,
            "backbone_options": dict(self.backbone_options),
            "num_classes": self.num_classes,
            "num_frames": self.num_frames,
            "adapter": self.tuner.settings_dict(self.adapter),
            "dropout": self.dropout,
            "tuning": self.tuning,
        }
        return out if not self.head.text else {**out, "head": self.head.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        settings = data.get("adapter")
        tuning = str(data.get("tuning") or LEGACY_TUNING[settings is not None])
        return cls(
            backbone=str(data["backbone"]),
            backbone_options=dict(data.get("backbone_options") or {}),
            num_classes=int(data["num_classes"]),
            num_frames=int(data.get("num_frames", 8)),
            adapter=None if settings is None else load_tuner(tuning).read_settings(settings),
            dropout=float(data.get("dropout", 0.5)),
            tuning=tuning,
            head=HeadConfig.from_dict(data.get("head")),
        )


def _check_tuning(tuning: str, *, has_settings: bool) -> Tuner:
    tuner = load_tuner(tuning)
    if has_settings and tuner.settings is None:
        raise ValueError(f"tuning={tuning} takes no settings (it trains no adapters): build the model without "
                         "adapters (adapter=None)")
    return tuner


class ClassifierHead(nn.Module):
    """Dropout then Linear, initialised as the reference: weight ~ N(0, 0.02), bias 0."""

    def __init__(self, width: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


class VideoClassifier(nn.Module):
    """(B, 3, T, H, W) normalised video -> (B, num_classes) logits.

    Frames run through the backbone as a batch of B*T images (frames of one clip contiguous); the tuning
    method's modules (`adapters`) run at the block loop's hook points; per-frame features are averaged over
    T, then the backbone's final norm and the head are applied. The method `tuning` (its `Tuner`) decides
    which parameters train. `checkpointing` trades time for memory by recomputing activations
    in the backward pass instead of keeping them, in growing steps:

    - "adapters" (the default): each adapter keeps only its input (instead of a copy of its patch tokens and
      two bottleneck-wide tensors); the extra time is the adapters' forward, about 1% of a step on the CPU;
    - "mlp": also the MLP branches (each recomputed together with its pre_mlp adapter, so that only
      the input of the pair is kept), whose 4x-wide hidden activations are the largest part of what a
      block keeps (extra time: the MLP's forward, about two thirds of a ViT block's);
    - True: whole blocks (about one more forward pass of time).
    """

    def __init__(
        self,
        backbone: FrameBackbone,
        num_classes: int,
        num_frames: int,
        adapter: Any = None,
        dropout: float = 0.5,
        tuning: str = "st_adapter",
        *,
        backbone_name: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_frames = num_frames
        self.num_blocks = len(backbone.block_layouts())
        self.backbone_name = backbone_name or type(backbone).__name__
        tuner = _check_tuning(tuning, has_settings=adapter is not None)
        require_hooks(tuner, backbone, self.backbone_name, methods_without_needs)
        modules = tuner.attach(backbone, num_frames, adapter)
        self.adapters: nn.Module = modules if modules is not None else nn.ModuleDict()  # the method's modules
        self.head: nn.Module = ClassifierHead(backbone.feature_width, num_classes, dropout)  # or a TextHead
        self.checkpointing: bool | str = "adapters"  # False, "adapters", "mlp" or True (whole blocks)
        self.backbone_dtype = torch.float32  # see store_backbone_as
        self.set_tuning(tuning)

    def parts(self) -> dict[str, nn.Module]:
        """The model's parts as a tuner and the optimizer see them: backbone, adapters (the method's
        modules) and head."""
        return {"backbone": self.backbone, "adapters": self.adapters, "head": self.head}

    def set_tuning(self, mode: str) -> None:
        """Make exactly the parameters of the method `mode` trainable (the head always trains).

        Only a method with `backbone_train_mode` (full fine-tuning) runs the backbone in train mode;
        otherwise it keeps its inference behaviour (dropout, drop-path off) even while part of it trains.
        """
        tuner = _check_tuning(mode, has_settings=any(True for _ in self.adapters.children()))
        require_hooks(tuner, self.backbone, self.backbone_name, methods_without_needs)
        self.requires_grad_(False)
        self.head.requires_grad_(True)
        for module in tuner.trainable(self.parts()):
            module.requires_grad_(True)
        self.tuner = tuner
        self.tuning = mode
        self.backbone_frozen = not tuner.backbone_train_mode
        self.train(self.training)

    @property
    def backbone_trains(self) -> bool:
        """Whether any backbone parameter trains (full or partial fine-tuning)."""
        return any(p.requires_grad for p in self.backbone.parameters())

    def store_backbone_as(self, dtype: torch.dtype) -> None:
        """Keep the frozen backbone's parameters and buffers in `dtype` (e.g. bf16: half the memory);
        adapters and head stay float32. The forward pass then needs autocast to that dtype."""
        if dtype != torch.float32 and self.backbone_trains:
            raise ValueError(f"tuning={self.tuning} trains backbone parameters: they must stay float32, not {dtype}")
        self.backbone.to(dtype)
        self.backbone_dtype = dtype

    def block_hooks(self, adapted: bool = True) -> BlockHooks:
        """What the tuning method runs at the block loop's hook points (nothing with `adapted=False`: the
        plain image model). In training, the levels of `checkpointing` that name its modules keep only
        their inputs."""
        if not adapted:
            return NO_HOOKS
        level = self.checkpointing if self.training and torch.is_grad_enabled() else False
        return self.tuner.hooks(self.adapters, level, backbone=self.backbone)

    def _recompute(self) -> str | None:
        """What the block loop recomputes in the backward pass (see `checkpointing`)."""
        if not (self.training and torch.is_grad_enabled()):
            return None
        return {True: "block", "mlp": "mlp"}.get(self.checkpointing)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, feature_width) video features after the final norm."""
        return self.pool(self.frame_features(video))

    def pool(self, frame_features: torch.Tensor) -> torch.Tensor:
        """(B, T, feature_width) per-frame features -> (B, feature_width) video features: the mean over
        time, then the backbone's final norm (what `forward_features` applies, for callers that keep both);
        or, for a method whose `pooling` is `norm_then_mean` (AIM), the final norm per frame, then the mean."""
        pooling = self.tuner.pooling
        if pooling == "norm_then_mean":
            return self.backbone.video_norm(frame_features).mean(dim=1)
        if pooling != "mean_then_norm":
            raise ValueError(f"tuning={self.tuning} pools with {pooling!r}, not one of {POOLINGS}")
        return self.backbone.video_norm(frame_features.mean(dim=1))

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, T, feature_width) per-frame features (after the adapted blocks, before the
        mean over time and the final norm that `forward_features` applies)."""
        batch, channels, frames, height, width = video.shape
        if frames != self.num_frames:
            raise ValueError(f"this model takes clips of {self.num_frames} frames, got {frames}")
        if self.backbone_dtype != torch.float32 and not torch.is_autocast_enabled(video.device.type):
            raise RuntimeError(f"the backbone is stored in {self.backbone_dtype} (train.backbone_storage): run the "
                               f"model under torch.autocast({video.device.type!r}, dtype={self.backbone_dtype})")
        x = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
        hooks = self.block_hooks()
        x = run_blocks(self.backbone, embed(self.backbone, x, hooks), hooks, recompute=self._recompute())
        return self.backbone.frame_features(x).reshape(batch, frames, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(video))

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # a frozen backbone keeps its inference behaviour (dropout, drop-path off)
            for module in self.tuner.train_mode_modules(self.parts()):  # but for a method's injected layers
                module.train(mode)
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that training changes (those of `tuning`): what a checkpoint stores."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters in all, and those that train under this model's `tuning`."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}


@dataclass
class BuiltModel:
    """A model with the resolved config and where its backbone weights came from."""

    model: VideoClassifier
    config: ModelConfig
    variant: VariantInfo
    plugin: BackbonePlugin
    weights: dict[str, Any] | None
    load_report: LoadReport | None
    text_tower: dict[str, Any] | None = None  # a text head's tower: weights source, fingerprint, templates


def build_model(config: ModelConfig, weights: str | Path | None = None, *, seed: int | None = None,
                classes: Sequence[str] | None = None, class_embeddings: torch.Tensor | None = None) -> BuiltModel:
    """Build the model of `config`; load backbone weights from a local file or a hub tag, if given.

    Options implied by the weights (e.g. QuickGELU for OpenAI CLIP) are resolved here and recorded in
    the returned config, so a checkpoint rebuilds exactly the same architecture. Without weights,
    `seed` (if given) seeds torch before the backbone is built and is recorded with the backbone's
    fingerprint in `BuiltModel.weights`, so a checkpoint can rebuild the same random backbone. A text head
    embeds `classes`, or takes `class_embeddings` where a checkpoint kept them.
    """
    plugin, variant = parse_backbone(config.backbone)
    implied = plugin.options_for_weights(variant.name, weights) if weights is not None else {}
    # None: the weights do not decide that option and the user must; their own value then stands
    implied = {k: v for k, v in implied.items() if v is not None or k not in config.backbone_options}
    clashes = [k for k in implied if k in config.backbone_options and config.backbone_options[k] != implied[k]]
    if clashes:
        raise WeightsError(
            f"the weights {weights} require {', '.join(f'{k}={implied[k]}' for k in clashes)} but the backbone "
            f"options say {', '.join(f'{k}={config.backbone_options[k]}' for k in clashes)}",
            "remove those backbone options",
        )
    options = {**config.backbone_options, **implied}
    variant = plugin.configure(variant, options)
    config = replace(config, backbone=f"{plugin.name}:{variant.name}", backbone_options=options)
    tower = text_tower_for(plugin, variant.name, weights, options) if config.head.text else None  # refuses first
    if weights is None and seed is not None:
        torch.manual_seed(seed)
    backbone = plugin.build(variant.name, **options)
    report = None
    weights_info = None
    if weights is not None:
        tag = not weights_is_path(weights)
        path = Path(plugin.resolve_pretrained(variant.name, str(weights))) if tag else Path(weights)
        report = load_backbone_weights(backbone, plugin, variant.name, path)
        weights_info = {
            "source": str(weights) if tag else str(path.resolve()),
            "fingerprint": fingerprint(backbone),
        }
    elif seed is not None:
        weights_info = random_init_record(backbone, seed)
    config.tuner.check_fits(config.adapter, backbone, config.backbone)
    model = VideoClassifier(backbone, config.num_classes, config.num_frames, config.adapter, config.dropout,
                            tuning=config.tuning, backbone_name=config.backbone)
    text = None
    if tower is not None:
        names = list(classes) if classes is not None else [f"class_{i}" for i in range(config.num_classes)]
        if len(names) != config.num_classes:
            raise ValueError(f"a text head of {config.num_classes} classes given {len(names)} class names")
        model.head = build_text_head(tower, config.head, names, config.dropout, class_embeddings)
        model.set_tuning(config.tuning)  # the new head's parameters as the method wants them
        if not any(p.requires_grad for p in model.parameters()):
            raise TextHeadError(f"tuning={config.tuning} with a frozen text head trains nothing",
                                "pick a method that trains (e.g. st_adapter), or set model.head.train: true")
        text = {"source": weights_info["source"] if weights_info else str(weights), "fingerprint": fingerprint(tower),
                "templates": list(config.head.templates)}
    return BuiltModel(model, config, variant, plugin, weights_info, report, text)


def random_init_record(backbone: FrameBackbone, seed: int) -> dict[str, Any]:
    """What a checkpoint records of a backbone without pretrained weights: enough to rebuild and verify it."""
    return {"source": None, "random_init": True, "seed": int(seed), "fingerprint": fingerprint(backbone)}


def load_backbone_weights(backbone: FrameBackbone, plugin: BackbonePlugin, variant: str, path: Path) -> LoadReport:
    """Read `path`, convert its keys with the plugin and load it; mismatches are errors naming keys."""
    raw = plugin.read_weights(path, variant)
    state_dict = plugin.convert_state_dict(read_state_dict(path) if raw is None else raw, variant)
    state_dict = backbone.fit_state_dict(state_dict)
    report = load_into(backbone, state_dict, ignored=plugin.ignored_keys(variant), what=f"weights file {path}")
    if report.unexpected:
        warnings.warn(f"{path}: {report.summary()}", stacklevel=2)
    return report


def check_weights_fingerprint(built: BuiltModel, expected: str | None, source: str) -> None:
    """Fail when the backbone weights differ from those a checkpoint was trained on. The fingerprint is the
    one `build_model` took of the loaded backbone before the method was attached: a method that injects its
    layers into the backbone (PEFT's LoRA) changes its state dict's keys, never the weights loaded."""
    if expected is None:
        return
    found = built.weights["fingerprint"] if built.weights else fingerprint(built.model.backbone)
    if found != expected:
        raise WeightsError(
            f"backbone weights from {source} differ from those the checkpoint was trained with "
            f"(fingerprint {found[:19]}... != {expected[:19]}...)",
            "pass the original weights file",
        )
