"""VideoClassifier: a frozen image backbone + ST-Adapters + temporal pooling + a linear head.

`tuning` says what trains (the paper's method and its baselines):

    st_adapter        adapters + head; the backbone is frozen (the method)
    linear            head only (a linear probe of the frozen backbone's features)
    full_finetune     every backbone parameter + head; the backbone runs in train mode
    partial_finetune  the backbone's last block + head (its final norm stays frozen)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from stadapt.backbones.base import FrameBackbone
from stadapt.backbones.layout import TokenLayout
from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.backbones.registry import parse_backbone
from stadapt.backbones.weights import LoadReport, fingerprint, load_into, read_state_dict
from stadapt.errors import PluginError, StadaptError, WeightsError
from stadapt.model.adapters import AdapterConfig, STAdapter
from stadapt.model.blocks import NO_HOOKS, BlockHooks, Hook, run_blocks
from stadapt.vocabulary import TUNING_MODES, weights_is_path


class ModelConfigError(StadaptError, ValueError):
    """A model description that does not fit its backbone (e.g. an adapter block the backbone lacks); a
    ValueError too, as the library raised before it became a user-facing error."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (not its weights)."""

    backbone: str
    num_classes: int
    num_frames: int = 8
    adapter: AdapterConfig | None = field(default_factory=AdapterConfig)  # None: linear probe
    dropout: float = 0.5
    backbone_options: Mapping[str, Any] = field(default_factory=dict)
    tuning: str = "st_adapter"  # what trains: one of TUNING_MODES

    def __post_init__(self) -> None:
        _check_tuning(self.tuning, has_adapters=self.adapter is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "backbone_options": dict(self.backbone_options),
            "num_classes": self.num_classes,
            "num_frames": self.num_frames,
            "adapter": None if self.adapter is None else self.adapter.to_dict(),
            "dropout": self.dropout,
            "tuning": self.tuning,
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
            # checkpoints from before `tuning` was recorded trained adapters + head, or the head alone
            tuning=str(data.get("tuning") or ("linear" if adapter is None else "st_adapter")),
        )


def _check_tuning(tuning: str, *, has_adapters: bool) -> None:
    if tuning not in TUNING_MODES:
        raise ValueError(f"tuning must be one of {', '.join(TUNING_MODES)}, got {tuning!r}")
    if has_adapters and tuning != "st_adapter":
        raise ValueError(f"tuning={tuning} trains no adapters: build the model without adapters (adapter=None)")


class BlockAdapters(nn.Module):
    """The adapters of one block, at the positions the config names."""

    pre_attn: STAdapter | None
    pre_mlp: STAdapter | None

    def __init__(self, layout: TokenLayout, num_frames: int, config: AdapterConfig) -> None:
        super().__init__()
        for position in ("pre_attn", "pre_mlp"):
            adapter = (
                STAdapter(layout, num_frames, config.bottleneck_for(layout.width), config.kernel)
                if position in config.positions
                else None
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

    Frames run through the backbone as a batch of B*T images (frames of one clip contiguous);
    adapters mix information across time inside the blocks; per-frame features are averaged over T,
    then the backbone's final norm and the head are applied. `tuning` (see the module docstring)
    decides which parameters train. `checkpointing` trades time for memory by recomputing activations
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
        adapter: AdapterConfig | None = None,
        dropout: float = 0.5,
        tuning: str = "st_adapter",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_frames = num_frames
        layouts = backbone.block_layouts()
        self.num_blocks = len(layouts)
        self.adapters = nn.ModuleDict()
        if adapter is not None:
            for index in adapter.block_indices(self.num_blocks):
                self.adapters[str(index)] = BlockAdapters(layouts[index], num_frames, adapter)
        self.head = ClassifierHead(backbone.feature_width, num_classes, dropout)
        self.checkpointing: bool | str = "adapters"  # False, "adapters", "mlp" or True (whole blocks)
        self.backbone_dtype = torch.float32  # see store_backbone_as
        self.set_tuning(tuning)

    def set_tuning(self, mode: str) -> None:
        """Make exactly the parameters of `mode` trainable (see the module docstring).

        Only full fine-tuning runs the backbone in train mode; otherwise it keeps its inference
        behaviour (dropout, drop-path off) even while its last block trains (partial fine-tuning).
        """
        _check_tuning(mode, has_adapters=len(self.adapters) > 0)
        self.requires_grad_(False)
        self.head.requires_grad_(True)
        if mode == "st_adapter":
            self.adapters.requires_grad_(True)
        elif mode == "full_finetune":
            self.backbone.requires_grad_(True)
        elif mode == "partial_finetune":
            for module in self._last_block_modules():
                module.requires_grad_(True)
        self.tuning = mode
        self.backbone_frozen = mode != "full_finetune"
        self.train(self.training)

    def _last_block_modules(self) -> list[nn.Module]:
        try:
            return self.backbone.block_modules(self.num_blocks - 1)
        except NotImplementedError as exc:
            raise PluginError(
                f"tuning=partial_finetune needs the backbone to name the modules of its blocks ({exc})",
                "use tuning=st_adapter, linear or full_finetune with this backbone",
            ) from exc

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

    def _block_adapters(self, index: int) -> tuple[STAdapter | None, STAdapter | None]:
        slot = cast("BlockAdapters | None", self.adapters[str(index)] if str(index) in self.adapters else None)
        return (slot.pre_attn, slot.pre_mlp) if slot is not None else (None, None)

    def block_hooks(self, adapted: bool = True) -> BlockHooks:
        """The adapters at the block loop's hook points (none with `adapted=False`: the plain image model).
        In training, the levels of `checkpointing` that name them keep only each adapter's input."""
        if not adapted or not len(self.adapters):
            return NO_HOOKS
        level = self.checkpointing if self.training and torch.is_grad_enabled() else False

        def hook(position: int, recompute: bool) -> Hook:
            def run(index: int, x: torch.Tensor) -> torch.Tensor:
                adapter = self._block_adapters(index)[position]
                if adapter is None:
                    return x
                return checkpoint(adapter, x, use_reentrant=False) if recompute else adapter(x)
            return run

        return BlockHooks(pre_attn=hook(0, level in ("adapters", "mlp")), pre_mlp=hook(1, level == "adapters"))

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
        time, then the backbone's final norm (what `forward_features` applies, for callers that keep both)."""
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
        x = run_blocks(self.backbone, self.backbone.embed(x), self.block_hooks(), recompute=self._recompute())
        return self.backbone.frame_features(x).reshape(batch, frames, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(video))

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # a frozen backbone keeps its inference behaviour (dropout, drop-path off)
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


def build_model(config: ModelConfig, weights: str | Path | None = None, *, seed: int | None = None) -> BuiltModel:
    """Build the model of `config`; load backbone weights from a local file or a hub tag, if given.

    Options implied by the weights (e.g. QuickGELU for OpenAI CLIP) are resolved here and recorded in
    the returned config, so a checkpoint rebuilds exactly the same architecture. Without weights,
    `seed` (if given) seeds torch before the backbone is built and is recorded with the backbone's
    fingerprint in `BuiltModel.weights`, so a checkpoint can rebuild the same random backbone.
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
    check_adapter_blocks(config, len(backbone.block_layouts()))
    model = VideoClassifier(
        backbone, config.num_classes, config.num_frames, config.adapter, config.dropout, tuning=config.tuning
    )
    return BuiltModel(model, config, variant, plugin, weights_info, report)


def random_init_record(backbone: FrameBackbone, seed: int) -> dict[str, Any]:
    """What a checkpoint records of a backbone without pretrained weights: enough to rebuild and verify it."""
    return {"source": None, "random_init": True, "seed": int(seed), "fingerprint": fingerprint(backbone)}


def check_adapter_blocks(config: ModelConfig, num_blocks: int) -> None:
    """Every index in adapter.blocks must name one of the backbone's blocks (only the plugin knows how many)."""
    if config.adapter is None or config.adapter.blocks is None:
        return
    outside = [b for b in config.adapter.blocks if not -num_blocks <= b < num_blocks]
    if outside:
        which = f"block {outside[0]} does" if len(outside) == 1 else f"blocks {', '.join(map(str, outside))} do"
        raise ModelConfigError(
            f"adapter.blocks: {which} not exist: {config.backbone} has {num_blocks} blocks, "
            f"valid indices are 0 to {num_blocks - 1} (or -{num_blocks} to -1, counting from the end)",
            "list blocks in that range, or leave adapter.blocks unset to adapt every block",
        )


def load_backbone_weights(backbone: FrameBackbone, plugin: BackbonePlugin, variant: str, path: Path) -> LoadReport:
    """Read `path`, convert its keys with the plugin and load it; mismatches are errors naming keys."""
    raw = plugin.read_weights(path, variant)
    state_dict = plugin.convert_state_dict(read_state_dict(path) if raw is None else raw, variant)
    state_dict = backbone.fit_state_dict(state_dict)
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
