"""VideoClassifier: a frozen image backbone + ST-Adapters + temporal pooling + a linear head."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stadapt.adapters import AdapterConfig, STAdapter
from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.backbones.layout import TokenLayout
from stadapt.backbones.registry import parse_backbone
from stadapt.backbones.weights import LoadReport, fingerprint, load_into, read_state_dict
from stadapt.errors import WeightsError


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (not its weights)."""

    backbone: str
    num_classes: int
    num_frames: int = 8
    adapter: AdapterConfig | None = field(default_factory=AdapterConfig)  # None: linear probe
    dropout: float = 0.5
    backbone_options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "backbone_options": dict(self.backbone_options),
            "num_classes": self.num_classes,
            "num_frames": self.num_frames,
            "adapter": None if self.adapter is None else self.adapter.to_dict(),
            "dropout": self.dropout,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        adapter = data.get("adapter")
        return cls(
            backbone=str(data["backbone"]),
            backbone_options=dict(data.get("backbone_options") or {}),
            num_classes=int(data["num_classes"]),
            num_frames=int(data.get("num_frames", 8)),
            adapter=None if adapter is None else AdapterConfig.from_dict(adapter),
            dropout=float(data.get("dropout", 0.5)),
        )


class BlockAdapters(nn.Module):
    """The adapters of one block, at the positions the config names."""

    def __init__(self, layout: TokenLayout, num_frames: int, config: AdapterConfig) -> None:
        super().__init__()
        for position in ("pre_attn", "pre_mlp"):
            adapter = (
                STAdapter(layout, num_frames, config.bottleneck, config.kernel) if position in config.positions else None
            )
            setattr(self, position, adapter)


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

    Frames run through the frozen backbone as a batch of B*T images (frames of one clip contiguous);
    adapters mix information across time inside the blocks; per-frame features are averaged over T,
    then the backbone's final norm and the head are applied.
    """

    def __init__(
        self,
        backbone: FrameBackbone,
        num_classes: int,
        num_frames: int,
        adapter: AdapterConfig | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_frames = num_frames
        self.classes: list[str] = []  # names of the outputs, filled in from a checkpoint
        layouts = backbone.block_layouts()
        self.num_blocks = len(layouts)
        self.adapters = nn.ModuleDict()
        if adapter is not None:
            for index in adapter.block_indices(self.num_blocks):
                self.adapters[str(index)] = BlockAdapters(layouts[index], num_frames, adapter)
        self.head = ClassifierHead(backbone.feature_width, num_classes, dropout)
        self.backbone_frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def _block_adapters(self, index: int) -> tuple[nn.Module | None, nn.Module | None]:
        slot = self.adapters[str(index)] if str(index) in self.adapters else None
        return (slot.pre_attn, slot.pre_mlp) if slot is not None else (None, None)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, feature_width) video features after the final norm."""
        batch, channels, frames, height, width = video.shape
        if frames != self.num_frames:
            raise ValueError(f"this model takes clips of {self.num_frames} frames, got {frames}")
        x = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
        x = self.backbone.embed(x)
        for index in range(self.num_blocks):
            x = self.backbone.transition(index, x)
            pre_attn, pre_mlp = self._block_adapters(index)
            if pre_attn is not None:
                x = pre_attn(x)
            x = x + self.backbone.attn_branch(index, x)
            if pre_mlp is not None:
                x = pre_mlp(x)
            x = x + self.backbone.mlp_branch(index, x)
        features = self.backbone.frame_features(x)
        features = features.reshape(batch, frames, -1).mean(dim=1)
        return self.backbone.video_norm(features)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(video))

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # a frozen backbone keeps its inference behaviour (dropout, drop-path off)
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that training changes (adapters and head): what a checkpoint stores."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def parameter_counts(self) -> dict[str, int]:
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


def _is_tag(source: str | Path) -> bool:
    text = str(source)
    return not Path(text).exists() and "/" not in text and "\\" not in text and "." not in text


def build_model(config: ModelConfig, weights: str | Path | None = None) -> BuiltModel:
    """Build the model of `config`; load backbone weights from a local file or a hub tag, if given.

    Options implied by the weights (e.g. QuickGELU for OpenAI CLIP) are resolved here and recorded in
    the returned config, so a checkpoint rebuilds exactly the same architecture.
    """
    plugin, variant = parse_backbone(config.backbone)
    implied = plugin.options_for_weights(variant.name, weights) if weights is not None else {}
    clashes = [k for k in implied if k in config.backbone_options and config.backbone_options[k] != implied[k]]
    if clashes:
        raise WeightsError(
            f"the weights {weights} require {', '.join(f'{k}={implied[k]}' for k in clashes)} but the backbone "
            f"options say {', '.join(f'{k}={config.backbone_options[k]}' for k in clashes)}",
            "remove those backbone options",
        )
    options = {**config.backbone_options, **implied}
    config = replace(config, backbone=f"{plugin.name}:{variant.name}", backbone_options=options)
    backbone = plugin.build(variant.name, **options)
    report = None
    weights_info = None
    if weights is not None:
        tag = _is_tag(weights)
        path = Path(plugin.resolve_pretrained(variant.name, str(weights))) if tag else Path(weights)
        report = load_backbone_weights(backbone, plugin, variant.name, path)
        weights_info = {
            "source": str(weights) if tag else str(path.resolve()),
            "fingerprint": fingerprint(backbone),
        }
    model = VideoClassifier(backbone, config.num_classes, config.num_frames, config.adapter, config.dropout)
    return BuiltModel(model, config, variant, plugin, weights_info, report)


def load_backbone_weights(backbone: FrameBackbone, plugin: BackbonePlugin, variant: str, path: Path) -> LoadReport:
    """Read `path`, convert its keys with the plugin and load it; mismatches are errors naming keys."""
    state_dict = plugin.convert_state_dict(read_state_dict(path), variant)
    report = load_into(backbone, state_dict, ignored=plugin.ignored_keys(variant), what=f"weights file {path}")
    if report.unexpected:
        warnings.warn(f"{path}: {report.summary()}", stacklevel=2)
    return report


def check_weights_fingerprint(model: VideoClassifier, expected: str | None, source: str) -> None:
    """Fail when the backbone weights differ from those a checkpoint was trained on."""
    if expected is None:
        return
    found = fingerprint(model.backbone)
    if found != expected:
        raise WeightsError(
            f"backbone weights from {source} differ from those the checkpoint was trained with "
            f"(fingerprint {found[:19]}... != {expected[:19]}...)",
            "pass the original weights file",
        )
