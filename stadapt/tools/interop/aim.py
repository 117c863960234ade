"""Import AIM's own checkpoints (taoyang1122/adapt-image-models, `stadapt import-checkpoint --format aim`).

AIM's mmcv training writes `{"meta": {..., "config": the config's text}, "state_dict": {...}, "optimizer", "amp"}`
with `state_dict` keys `backbone.*` (the whole OpenAI CLIP vision tower without `proj`, `temporal_embedding`, and
per block `S_Adapter`, `T_Adapter`, `MLP_Adapter`, plus `T_Adapter_in` when num_tadapter == 2) and
`cls_head.fc_cls.*`. Everything the model needs is in the file, so no separate backbone weights are asked for:
the CLIP tower is written beside the stadapt checkpoint (`backbone.safetensors`) and recorded as its backbone
weights, by a name relative to the checkpoint folder, so the folder loads alone and can move.

What is read from where: the backbone (OpenAI CLIP ViT-B/16 or L/14, hence QuickGELU), the frame count, the
number of temporal adapters, the adapters' width and the number of classes from the tensors' shapes; the adapter
scale, which no tensor holds, from `adapter_scale=` in `meta["config"]`, else from the user, else the import is
refused (AIM's K400 configs use 0.5, its SSv2 configs 1.0: a guess would be wrong for half of them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stadapt.backbones.weights import torch_load_safely
from stadapt.errors import CheckpointError
from stadapt.tools.interop import clip_tower
from stadapt.tools.interop.clip_tower import HEAD as _HEAD
from stadapt.tools.interop.clip_tower import KNOWN_TOWERS, check_backbone, config_setting, read_tower, write_imported
from stadapt.tools.interop.official import paper_input
from stadapt.tuners import load_tuner

__all__ = ["ADAPTERS", "KNOWN_TOWERS", "SCALE_HINT", "AimLayout", "adapter_scale", "aim_to_stadapt", "detect_backbone",
           "import_aim", "infer_aim_layout", "read_aim"]

# AIM's adapter module names -> the AIM tuner's (plugins/stadapt_tuners/aim.py)
ADAPTERS = {"T_Adapter_in": "t_adapter_in", "T_Adapter": "t_adapter", "S_Adapter": "s_adapter",
            "MLP_Adapter": "mlp_adapter"}
_ADAPTER_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(\w+)\.D_(fc[12])\.(weight|bias)")
SCALE_HINT = ("pass it with --option adapter_scale=VALUE (AIM's K400 configs use 0.5, its SSv2 configs 1.0; "
              "see the config the model was trained with)")


@dataclass(frozen=True)
class AimLayout:
    """What an AIM state dict says about its own model, from keys and shapes alone."""

    image_size: int
    patch_size: int
    width: int
    layers: int
    num_frames: int
    num_tadapter: int
    mlp_ratio: float
    num_classes: int

    @property
    def tower(self) -> tuple[int, int, int, int]:
        return (self.image_size, self.patch_size, self.width, self.layers)


def aim_to_stadapt(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An AIM state dict as (the CLIP tower in the CLIP plugin's native `visual.*` names, the trainable tensors in
    stadapt's keys: `adapters.*`, `head.fc.*` and the tower's `backbone.visual.ln_post.*`, which AIM trains).
    A pure renaming: no tensor is changed. ln_post is in both, as the frozen weights file holds the whole tower."""
    backbone: dict[str, torch.Tensor] = {}
    trainable: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_HEAD):
            trainable["head.fc." + key.removeprefix(_HEAD)] = value
            continue
        name = key.removeprefix("backbone.")
        found = _ADAPTER_KEY.fullmatch(name)
        if found and found.group(2) in ADAPTERS:
            index, adapter, layer, kind = found.groups()
            trainable[f"adapters.blocks.{index}.{ADAPTERS[adapter]}.{layer}.{kind}"] = value
        elif name == "temporal_embedding":
            trainable["adapters.temporal_embedding"] = value
        else:
            backbone[f"visual.{name}"] = value
            if name.startswith("ln_post."):
                trainable[f"backbone.visual.{name}"] = value
    return backbone, trainable


def read_aim(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state_dict, the config text of meta["config"] or None) of an AIM checkpoint, read without executing
    anything; anything else is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path")
    obj = torch_load_safely(path, "checkpoint", CheckpointError)
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    tensors = {k.removeprefix("module."): v for k, v in state.items()
               if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    needed = ("backbone.conv1.weight", "backbone.positional_embedding", f"{_HEAD}weight", f"{_HEAD}bias")
    if not all(k in tensors for k in needed):
        raise CheckpointError(f"{path} is not an AIM checkpoint (no 'state_dict' with backbone.* CLIP tensors and "
                              "cls_head.fc_cls.*)", "pass the epoch_*.pth or best_*.pth file AIM's training wrote")
    meta = obj.get("meta") if isinstance(obj, dict) else None
    config = meta.get("config") if isinstance(meta, dict) else None
    return tensors, config if isinstance(config, str) else None


def infer_aim_layout(tensors: Mapping[str, torch.Tensor], source: str) -> AimLayout:
    """The tower's input size, patch, width and depth, the frames, temporal adapters, adapter width and classes."""
    tower = read_tower(tensors, source)
    embedding = tensors.get("backbone.temporal_embedding")
    fc1 = tensors.get("backbone.transformer.resblocks.0.S_Adapter.D_fc1.weight")
    if embedding is None or embedding.ndim != 3 or fc1 is None:
        raise CheckpointError(f"{source} has no AIM adapters or temporal embedding (S_Adapter, temporal_embedding)",
                              "is it a plain CLIP or another model's checkpoint?")
    return AimLayout(
        image_size=tower.image_size, patch_size=tower.patch_size, width=tower.width, layers=tower.layers,
        num_frames=int(embedding.shape[1]),
        num_tadapter=2 if any(".T_Adapter_in." in k for k in tensors) else 1,
        mlp_ratio=int(fc1.shape[0]) / tower.width, num_classes=int(tensors[f"{_HEAD}weight"].shape[0]),
    )


def detect_backbone(layout: AimLayout, source: str) -> str:
    """The clip plugin variant of an AIM tower (OpenAI CLIP ViT-B/16, L/14 or L/14@336), by its shapes."""
    return clip_tower.detect_backbone(layout.tower, source, "AIM")


def adapter_scale(config: str | None, given: object, source: str) -> float:
    """AIM's adapter_scale: the config text's, else the user's, else refused (no tensor holds it)."""
    return config_setting(config, "adapter_scale", given, float, source, SCALE_HINT)


def import_aim(
    checkpoint: str | Path,
    *,
    out: str | Path,
    backbone: str | None = None,
    num_frames: int | None = None,
    classes: Sequence[str] | None = None,
    overwrite: bool = False,
    dataset: str = "k400",
    sampling: str | None = None,
    stride: int | None = None,
    views: tuple[int, int] | None = None,
    options: Mapping[str, object] | None = None,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """Convert an AIM checkpoint into a stadapt checkpoint folder that `load_model` reads with nothing else.

    `options` are the AIM settings the tensors do not hold (`adapter_scale`) and backbone build options
    (e.g. quick_gelu); the input settings follow `paper_input` as for the official format."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists", "choose another --out or pass --overwrite to replace it")
    tensors, config_text = read_aim(checkpoint)
    source = str(checkpoint)
    layout = infer_aim_layout(tensors, source)
    if num_frames is not None and num_frames != layout.num_frames:
        raise CheckpointError(f"{source} was trained on {layout.num_frames} frames (its temporal embedding), "
                              f"not {num_frames}", "leave --num-frames out")
    if classes is not None and len(classes) != layout.num_classes:
        raise CheckpointError(f"the class list has {len(classes)} names but {source} classifies "
                              f"{layout.num_classes} classes")
    rest = dict(options or {})
    scale = adapter_scale(config_text, rest.pop("adapter_scale", None), source)
    if backbone is None:
        backbone = detect_backbone(layout, source)
    check_backbone(backbone, layout.width, layout.layers, source)
    settings = load_tuner("aim").read_settings({"mlp_ratio": layout.mlp_ratio, "adapter_scale": scale,
                                                 "num_tadapter": layout.num_tadapter})
    tower, trainable = aim_to_stadapt(tensors)
    return write_imported(checkpoint, out, tower, trainable, backbone=backbone, tuning="aim", settings=settings,
                          num_frames=layout.num_frames, num_classes=layout.num_classes, classes=classes,
                          overwrite=overwrite, rest=rest,
                          input_settings=(dataset, paper_input(dataset, layout.num_frames, sampling=sampling,
                                                               stride=stride, views=views)),
                          fmt="aim", towers_of="AIM's", notify=notify)
