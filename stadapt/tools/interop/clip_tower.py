"""What the imports of mmaction-trained methods share (AIM's, ZeroI2V's): their checkpoints hold the whole OpenAI
CLIP vision tower (`backbone.*`, without `proj`) and an I3D head (`cls_head.fc_cls.*`), and keep in the config text
of their metadata the settings no tensor holds.

Here: recognising the tower from its shapes (KNOWN_TOWERS), reading a setting from the config text or the user
(never a guess), and writing the stadapt checkpoint folder with the tower beside it as `backbone.safetensors`,
built through the loader's own path so that what is checked here is what loads later.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from stadapt.backbones.registry import parse_backbone
from stadapt.checkpoints.files import BACKBONE_FILE
from stadapt.checkpoints.format import load_trainable, model_meta, write_checkpoint
from stadapt.data.input_spec import input_spec_from_data
from stadapt.errors import CheckpointError
from stadapt.fileio import make_temp_dir
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.tools.interop.official import official_backbone_options

HEAD = "cls_head.fc_cls."
# the OpenAI CLIP towers AIM and ZeroI2V were released on: (input size, patch, width, layers) -> clip plugin variant
KNOWN_TOWERS = {(224, 16, 768, 12): "clip:ViT-B-16", (224, 14, 1024, 24): "clip:ViT-L-14",
                (336, 14, 1024, 24): "clip:ViT-L-14-336"}
_BLOCK = re.compile(r"backbone\.transformer\.resblocks\.(\d+)\.")
T = TypeVar("T")


@dataclass(frozen=True)
class Tower:
    """A CLIP vision tower's input size, patch, width and depth, from its tensors' shapes."""

    image_size: int
    patch_size: int
    width: int
    layers: int

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.image_size, self.patch_size, self.width, self.layers)


def read_tower(tensors: Mapping[str, torch.Tensor], source: str) -> Tower:
    """The `backbone.*` tower's shapes (conv1, positional_embedding, the numbered blocks)."""
    conv = tensors["backbone.conv1.weight"]
    tokens = int(tensors["backbone.positional_embedding"].shape[0])
    grid = round((tokens - 1) ** 0.5)
    blocks = {int(m.group(1)) for k in tensors if (m := _BLOCK.match(k))}
    if conv.ndim != 4 or grid * grid != tokens - 1 or not blocks:
        raise CheckpointError(f"{source}: backbone.conv1 / positional_embedding / transformer.resblocks do not "
                              "have a ViT's shapes")
    return Tower(grid * int(conv.shape[-1]), int(conv.shape[-1]), int(conv.shape[0]), max(blocks) + 1)


def detect_backbone(tower: tuple[int, int, int, int], source: str, method: str) -> str:
    """The clip plugin variant of a released tower (OpenAI CLIP ViT-B/16, L/14 or L/14@336), by its shapes."""
    name = KNOWN_TOWERS.get(tower)
    if name is None:
        size, patch, width, layers = tower
        raise CheckpointError(f"{source} holds a {size} px, patch {patch}, width {width}, {layers}-block tower, "
                              f"not one of {method}'s OpenAI CLIP towers (ViT-B/16, ViT-L/14)",
                              "pass the matching --backbone")
    return name


def check_backbone(backbone: str, width: int, layers: int, source: str) -> None:
    """A named backbone of known width and depth must be the tower's."""
    plugin, variant = parse_backbone(backbone)
    if (variant.width is not None and variant.width != width) or \
            (variant.blocks is not None and variant.blocks != layers):
        raise CheckpointError(f"{source} holds a width {width}, {layers}-block tower, but "
                              f"{plugin.name}:{variant.name} has width {variant.width} and {variant.blocks} blocks",
                              "leave --backbone out to take the checkpoint's, or pass the matching one")


def config_values(config: str | None, key: str) -> list[str]:
    """The distinct values `key` is given in a config text, as `key=VALUE` (a `dict(...)`) or `'key': VALUE`
    (a printed dict); a longer name ending in `key` (long_shift_div for shift_div) is not it."""
    found = re.findall(rf"(?<![\w'\"])['\"]?{re.escape(key)}['\"]?\s*[=:]\s*([^,\s)}}]+)", config or "")
    return sorted(set(found))


def config_setting(config: str | None, key: str, given: object, parse: Callable[[str], T], source: str,
                   hint: str, default: T | None = None) -> T:
    """A setting no tensor holds: the config text's, else the user's (`given`), else `default`, else refused in
    one line. Several values in the config, or an option that disagrees with it, are refused too."""
    try:
        found = sorted({parse(v) for v in config_values(config, key)}, key=repr)
        chosen = parse(str(given)) if given is not None else None
    except ValueError as exc:
        raise CheckpointError(f"{key}: {exc}", hint) from None
    if len(found) > 1:
        raise CheckpointError(f"the config in {source} sets {key} to {found}", hint)
    if found and chosen is not None and chosen != found[0]:
        raise CheckpointError(f"--option {key}={given} disagrees with the config in {source} ({key}={found[0]})",
                              "leave the option out: the config is what it trained with")
    if found:
        return found[0]
    if chosen is not None:
        return chosen
    if default is not None:
        return default
    raise CheckpointError(f"{source} does not say its {key} (no {key}= in its config)", hint)


def write_imported(checkpoint: Path, out: Path, tower: dict[str, torch.Tensor], trainable: dict[str, torch.Tensor],
                   *, backbone: str, tuning: str, settings: Any, num_frames: int, num_classes: int,
                   classes: Sequence[str] | None, overwrite: bool, rest: dict[str, object],
                   input_settings: tuple[str, tuple[str, int, tuple[int, int]]], fmt: str, towers_of: str,
                   notify: Callable[[str], None] | None) -> Path:
    """Build the model from the tower written as a weights file (the loader's own path, so what is checked
    here is what loads later), load the trainable tensors and write the folder in one atomic step with the
    tower beside it, recorded by its name relative to the folder. `trainable`'s `backbone.*` entries are kept
    where the method trains them (they are in the tower too); the others must fit exactly."""
    from safetensors.torch import save

    tower_bytes = save({k: v.detach().contiguous() for k, v in tower.items()}, metadata={"format": "pt"})
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out.parent, out.name)
    try:
        weights = staging / BACKBONE_FILE
        weights.write_bytes(tower_bytes)
        chosen, note = official_backbone_options(backbone, weights, rest)
        config = ModelConfig(backbone=backbone, num_classes=num_classes, num_frames=num_frames,
                             adapter=settings, dropout=0.5, backbone_options=chosen, tuning=tuning)
        built = build_model(config, weights=weights)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    trained = {k for k, p in built.model.named_parameters() if p.requires_grad}
    load_trainable(built.model, {k: v for k, v in trainable.items() if not k.startswith("backbone.") or k in trained},
                   str(checkpoint))
    dataset, (how, step, test_views) = input_settings
    spec = input_spec_from_data({"frames": num_frames, "sampling": how, "stride": step,
                                 "views": f"{test_views[0]}x{test_views[1]}"}, built.variant)
    meta = model_meta(built, classes, input_spec=spec,
                      imported_from={"format": fmt, "path": str(checkpoint.resolve()),
                                     "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
                                     "dataset": dataset})
    meta["backbone_weights"] = {**(built.weights or {}), "source": BACKBONE_FILE}
    written = write_checkpoint(out, built.model.trainable_state_dict(), meta, overwrite=overwrite,
                               extra_files={BACKBONE_FILE: tower_bytes})
    if note and notify is not None:
        notify(note.replace("the official format is", f"{towers_of} towers are"))
    return written
