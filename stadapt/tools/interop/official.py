"""Import checkpoints of the reference ST-Adapter implementation (linziyi96/st-adapter).

The reference saves `{"model": {trainable tensors}, "optimizer": ..., "lr_sched": ..., ...}` with
torch.save, keys `transformer.resblocks.{i}.adapter_{pre_attn,pre_mlp}.{fc1,conv,fc2}.{weight,bias}`
and `fc.{weight,bias}`. The adapter layout (positions, bottleneck, kernel, blocks) and the number of
classes are read from the keys and shapes; nothing is assumed from the file name.

The reference is built on OpenAI's CLIP code, whose towers use QuickGELU, so the format itself says the
activation: where the backbone weights do not (a plain state-dict file of a curated CLIP variant), the
import uses QuickGELU and says so; a `quick_gelu` option, a `-quickgelu` open_clip name, an OpenAI archive
or a pretrained tag still decide.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stadapt.backbones.registry import parse_backbone
from stadapt.backbones.weights import torch_load_safely
from stadapt.checkpoints.format import load_trainable, model_meta, write_checkpoint
from stadapt.data.input_spec import SAMPLINGS, input_spec_from_data
from stadapt.errors import CheckpointError, preview
from stadapt.model.adapters import POSITIONS, AdapterConfig
from stadapt.model.classifier import BuiltModel, ModelConfig, build_model

_ADAPTER_KEY = re.compile(r"^transformer\.resblocks\.(\d+)\.adapter_(pre_attn|pre_mlp)\.(fc1|conv|fc2)\.(weight|bias)$")
_HEAD_KEY = re.compile(r"^fc\.(weight|bias)$")
# printed where the format, not the weights or the user, chose the activation
QUICK_GELU_NOTE = "QuickGELU: the official format is OpenAI CLIP's"


@dataclass(frozen=True)
class OfficialLayout:
    """What a reference checkpoint says about its own model."""

    adapter: AdapterConfig
    num_classes: int
    width: int


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The `model` tensors of a reference checkpoint, read without executing anything."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path")
    obj = torch_load_safely(path, "checkpoint", CheckpointError)
    model = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(model, dict) or not any(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"{path} is not a reference ST-Adapter checkpoint (no 'model' tensors)")
    tensors = {k[len("module."):] if k.startswith("module.") else k: v for k, v in model.items()
               if isinstance(v, torch.Tensor)}
    return tensors


def infer_layout(tensors: dict[str, torch.Tensor], source: str) -> OfficialLayout:
    """Adapter positions, bottleneck, kernel, adapted blocks and class count from keys and shapes."""
    blocks: dict[int, set[str]] = {}
    unknown = []
    for key in tensors:
        match = _ADAPTER_KEY.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(match.group(2))
        elif not _HEAD_KEY.match(key):
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source} has keys a reference ST-Adapter checkpoint does not have: {preview(sorted(unknown))}",
            "is it a full fine-tuning checkpoint or from another model?",
        )
    if "fc.weight" not in tensors or "fc.bias" not in tensors:
        raise CheckpointError(f"{source} has no classifier head (fc.weight, fc.bias)")
    positions = set().union(*blocks.values()) if blocks else set()
    uneven = [i for i, p in blocks.items() if p != positions]
    if uneven:
        raise CheckpointError(f"{source} places adapters differently in different blocks (block {uneven[0]})")
    first = next(iter(sorted(blocks))) if blocks else None
    if first is None:
        raise CheckpointError(f"{source} has no adapters", "for a linear probe use a stadapt checkpoint")
    sample = f"transformer.resblocks.{first}.adapter_{sorted(positions)[0]}"
    fc1 = tensors[f"{sample}.fc1.weight"]
    conv = tensors[f"{sample}.conv.weight"]
    if fc1.ndim != 2 or conv.ndim != 5:
        raise CheckpointError(f"{source}: {sample} tensors do not have adapter shapes")
    adapter = AdapterConfig(
        bottleneck=int(fc1.shape[0]),
        kernel=tuple(int(k) for k in conv.shape[2:]),  # type: ignore[arg-type]
        positions=tuple(p for p in POSITIONS if p in positions),
        blocks=tuple(sorted(blocks)),
    )
    return OfficialLayout(adapter=adapter, num_classes=int(tensors["fc.weight"].shape[0]), width=int(fc1.shape[1]))


def to_stadapt_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference names -> VideoClassifier names (adapters.{i}.{position}.*, head.fc.*)."""
    out = {}
    for key, value in tensors.items():
        match = _ADAPTER_KEY.match(key)
        if match:
            block, position, layer, kind = match.groups()
            out[f"adapters.{block}.{position}.{layer}.{kind}"] = value
        else:
            out[f"head.{key}"] = value
    return out


# the paper's test setting per data set: K400 every (128 / frames)-th frame, 3 temporal x 1 spatial views;
# SSv2 one frame per segment (segment centres), 1 temporal x 3 spatial views
PAPER_INPUT = {"k400": ("stride", (3, 1)), "ssv2": ("segment", (1, 3))}


def paper_input(dataset: str, frames: int, *, sampling: str | None = None, stride: int | None = None,
                views: tuple[int, int] | None = None) -> tuple[str, int, tuple[int, int]]:
    """(sampling, stride, views) a reference checkpoint of `dataset` is tested with in the paper; the
    keyword arguments, where given, replace the paper's values."""
    if dataset not in PAPER_INPUT:
        raise CheckpointError(f"unknown data set {dataset!r} for the input settings",
                              f"choose one of: {', '.join(PAPER_INPUT)}")
    if sampling is not None and sampling not in SAMPLINGS:
        raise CheckpointError(f"unknown frame sampling {sampling!r}", f"choose one of: {', '.join(SAMPLINGS)}")
    paper_sampling, paper_views = PAPER_INPUT[dataset]
    return (sampling or paper_sampling, stride or max(1, 128 // frames), views or paper_views)


def import_official(
    checkpoint: str | Path,
    *,
    backbone: str,
    backbone_weights: str | Path,
    out: str | Path,
    num_frames: int = 8,
    classes: Sequence[str] | None = None,
    overwrite: bool = False,
    dataset: str = "k400",
    sampling: str | None = None,
    stride: int | None = None,
    views: tuple[int, int] | None = None,
    backbone_options: Mapping[str, object] | None = None,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """Convert a reference checkpoint into a stadapt checkpoint directory that `load_model` reads.

    `backbone_options` are build options of the backbone (as backbone.options in a recipe); the
    activation, where neither they nor the weights decide it, is QuickGELU (`official_backbone_options`),
    and `notify` receives the line that says so once the checkpoint is written.

    Its InputSpec records how the model is fed: the paper's test setting for `dataset` (K400: stride
    sampling at 128 / num_frames, 3x1 views; SSv2: segment sampling, 1x3 views), with `sampling`,
    `stride` and `views` in place of the paper's where given; size and normalisation are the backbone's."""
    checkpoint = Path(checkpoint)
    if Path(out).exists() and not overwrite:
        raise CheckpointError(f"{out} already exists", "choose another --out or pass --overwrite to replace it")
    how, step, test_views = paper_input(dataset, num_frames, sampling=sampling, stride=stride, views=views)
    tensors = read_official(checkpoint)
    layout = infer_layout(tensors, str(checkpoint))
    if classes is not None and len(classes) != layout.num_classes:
        raise CheckpointError(
            f"the class list has {len(classes)} names but {checkpoint} classifies {layout.num_classes} classes"
        )
    options, note = official_backbone_options(backbone, backbone_weights, backbone_options or {})
    config = ModelConfig(backbone=backbone, num_classes=layout.num_classes, num_frames=num_frames,
                         adapter=layout.adapter, dropout=0.5, backbone_options=options)
    built = _build_checked(config, backbone_weights, layout, str(checkpoint))
    load_trainable(built.model, to_stadapt_keys(tensors), str(checkpoint))
    spec = input_spec_from_data({"frames": num_frames, "sampling": how, "stride": step,
                                 "views": f"{test_views[0]}x{test_views[1]}"}, built.variant)
    meta = model_meta(
        built,
        classes,
        input_spec=spec,
        imported_from={
            "format": "official",
            "path": str(checkpoint.resolve()),
            "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            "dataset": dataset,
        },
    )
    written = write_checkpoint(out, built.model.trainable_state_dict(), meta, overwrite=overwrite)
    if note and notify is not None:  # once it worked: a refusal stays one line
        notify(note)
    return written


def official_backbone_options(backbone: str, backbone_weights: str | Path,
                              options: Mapping[str, object]) -> tuple[dict[str, object], str | None]:
    """The backbone options a reference checkpoint is imported with, and the note to print when the format
    chose one. The reference trains OpenAI CLIP towers (QuickGELU): where the plugin would ask which
    activation the weights used (`options_for_weights` says None, as for a plain state-dict file of
    clip:ViT-B-16) and the options do not say it, the answer is QuickGELU. Whatever decides it otherwise
    (the options, the weights, the backbone's name) stands."""
    plugin, variant = parse_backbone(backbone)
    chosen = dict(options)
    implied = plugin.options_for_weights(variant.name, backbone_weights)
    if "quick_gelu" in implied and implied["quick_gelu"] is None and "quick_gelu" not in chosen:
        return {**chosen, "quick_gelu": True}, QUICK_GELU_NOTE
    return chosen, None


def _build_checked(config: ModelConfig, backbone_weights: str | Path, layout: OfficialLayout,
                   source: str) -> BuiltModel:
    """Build the model, first checking that the checkpoint's widths and blocks fit the backbone."""
    plugin, variant = parse_backbone(config.backbone)
    width, blocks = variant.width, variant.blocks
    if width is not None and width != layout.width:
        raise CheckpointError(
            f"{source} was trained on a backbone of width {layout.width}, but {plugin.name}:{variant.name} "
            f"has width {width}",
            "pass the matching --backbone (ViT-B: 768, ViT-L: 1024)",
        )
    if blocks is not None and max(layout.adapter.blocks or (0,)) >= blocks:
        raise CheckpointError(
            f"{source} has adapters in block {max(layout.adapter.blocks or (0,))}, but "
            f"{plugin.name}:{variant.name} has {blocks} blocks",
            "pass the matching --backbone",
        )
    return build_model(config, weights=backbone_weights)
