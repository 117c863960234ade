"""Import ZeroI2V's own checkpoints (leexinhao/ZeroI2V, `stadapt import-checkpoint --format zeroi2v`), in both
the forms it writes:

- a training checkpoint (`epoch_*.pth`, `best_*.pth`), as mmengine's Runner saves it: `{"meta": {"cfg": the
  config's text, ...}, "state_dict": {...}, "message_hub", "optimizer", "param_schedulers"}` with `state_dict` keys
  `backbone.*` (the whole OpenAI CLIP vision tower without `proj`, `temporal_embedding`, and per block the linear
  adapters `T_Adapter_in`, `S_Adapter`, `MLP_Adapter`, plus `MLP_Adapter_out` when num_tadapter == 2) and
  `cls_head.fc_cls.*`. It becomes tuning `zeroi2v` with its adapters;
- the re-parameterised weights of tools/weight_reparam.py (`*_eval.pth`): a flat state dict of the adapter-free
  ViT_Zero_CLIP_eval, every adapter folded into the projection beside it. It becomes tuning `zeroi2v` merged: the
  folded tower is the backbone, the temporal embedding, final norm and head are what the method keeps.

mmengine pickles its own objects beside the weights (message_hub's HistoryBuffers), which a weights-only load
refuses: the file is read with every global outside torch's allow-list made an inert placeholder, so nothing in
it is imported or run. As for AIM, the tower is written beside the checkpoint as `backbone.safetensors`.

What is read from where: the backbone (OpenAI CLIP ViT-B/16 or L/14, hence QuickGELU), the frames, num_tadapter,
the adapters' width and the classes from the tensors; adapter_scale and the STDHA shift (shift_div, long_shift_div,
long_shift_right) from the config text in `meta["cfg"]` (where it is silent on a shift setting, the model's own
default), else from the user (`--option`), else the import is refused: its K400 configs use adapter_scale 0.5 and
no long shift, its SSv2 config 1.0 and a long shift both ways, and a guess would be wrong for one of them. The flat
merged form has no config and no adapter_scale to ask for: its shift is the K400 config's unless given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stadapt.backbones.weights import torch_load_inert
from stadapt.errors import CheckpointError, first_line
from stadapt.tools.interop import clip_tower
from stadapt.tools.interop.clip_tower import HEAD, Tower, check_backbone, config_setting, config_values, read_tower
from stadapt.tools.interop.official import paper_input
from stadapt.tuners import load_tuner

# ZeroI2V's adapter module names -> the zeroi2v tuner's (plugins/stadapt_tuners/zeroi2v.py)
ADAPTERS = {"T_Adapter_in": "t_adapter_in", "S_Adapter": "s_adapter", "MLP_Adapter": "mlp_adapter",
            "MLP_Adapter_out": "mlp_adapter_out"}
_ADAPTER_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(\w+)\.D_(fc[12])\.(weight|bias)")
SCALE_HINT = ("pass it with --option adapter_scale=VALUE (ZeroI2V's K400, UCF101 and HMDB51 configs use 0.5, its "
              "SSv2 config 1; see the config the model was trained with)")
SHIFT_HINT = ("pass --option long_shift_div=-1 (ZeroI2V's K400, UCF101 and HMDB51 configs) or --option "
              "long_shift_div=12 --option long_shift_right=true (its SSv2 config)")
# the merged form's STDHA when not given: the K400 config's (vit_zero_base_clip_k400_16x8x1.py)
K400_SHIFT = {"shift_div": 12, "long_shift_div": -1, "long_shift_right": False}
TOWER_FREE = ("backbone.temporal_embedding",)  # backbone.* tensors that are the method's, not the tower's


@dataclass(frozen=True)
class ZeroI2VLayout:
    """What a ZeroI2V state dict says about its own model, from keys and shapes alone; `merged` is the
    re-parameterised form, without adapters (num_tadapter and mlp_ratio are then unknown: None)."""

    tower: Tower
    num_frames: int
    num_classes: int
    merged: bool
    num_tadapter: int | None
    mlp_ratio: float | None


def read_zeroi2v(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state dict, the config text of meta["cfg"] or None) of a ZeroI2V checkpoint, training or flat merged
    form, read without importing or running anything of the file's; anything else is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path")
    obj = torch_load_inert(path, "checkpoint", CheckpointError)
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    state = state if isinstance(state, dict) else obj  # the merged form is the flat state dict itself
    tensors = {str(k).removeprefix("module."): v for k, v in state.items()
               if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    needed = ("backbone.conv1.weight", "backbone.positional_embedding", "backbone.temporal_embedding",
              f"{HEAD}weight", f"{HEAD}bias")
    if not all(k in tensors for k in needed):
        raise CheckpointError(f"{path} is not a ZeroI2V checkpoint (no backbone.* CLIP tensors with a "
                              "temporal_embedding and cls_head.fc_cls.*)",
                              "pass the epoch_*.pth / best_*.pth file its training wrote, or weight_reparam.py's")
    if any(".T_Adapter." in k for k in tensors):
        raise CheckpointError(f"{path} is an AIM checkpoint (it has T_Adapter tensors)", "use --format aim")
    meta = obj.get("meta") if isinstance(obj, dict) else None
    config = meta.get("cfg") if isinstance(meta, dict) else None
    return tensors, config if isinstance(config, str) else None


def infer_zeroi2v_layout(tensors: Mapping[str, torch.Tensor], source: str) -> ZeroI2VLayout:
    """The tower, frames (the temporal embedding), classes, and whether the adapters are there (every block's
    T_Adapter_in, S_Adapter and MLP_Adapter, MLP_Adapter_out in every block or none) or folded (no adapter)."""
    tower = read_tower(tensors, source)
    embedding = tensors["backbone.temporal_embedding"]
    if embedding.ndim != 3 or embedding.shape[0] != 1 or embedding.shape[2] != tower.width:
        raise CheckpointError(f"{source}: backbone.temporal_embedding has shape {tuple(embedding.shape)}, not "
                              f"(1, frames, {tower.width})")
    found: dict[str, set[int]] = {}
    for key in tensors:
        if (m := _ADAPTER_KEY.fullmatch(key.removeprefix("backbone."))) is not None:
            found.setdefault(m.group(2), set()).add(int(m.group(1)))
    unknown = sorted(set(found) - set(ADAPTERS))
    if unknown:
        raise CheckpointError(f"{source} has adapters ZeroI2V does not ({', '.join(unknown)})",
                              "is it another method's checkpoint?")
    every = set(range(tower.layers))
    if found and any(found.get(name) != every for name in ("T_Adapter_in", "S_Adapter", "MLP_Adapter")) or \
            found.get("MLP_Adapter_out", every) != every:
        raise CheckpointError(f"{source} has ZeroI2V adapters in some blocks only "
                              f"({', '.join(f'{k}: {len(v)} of {tower.layers}' for k, v in sorted(found.items()))})",
                              "the file is incomplete: pass the one its training wrote")
    fc1 = tensors.get("backbone.transformer.resblocks.0.S_Adapter.D_fc1.weight")
    return ZeroI2VLayout(
        tower=tower, num_frames=int(embedding.shape[1]), num_classes=int(tensors[f"{HEAD}weight"].shape[0]),
        merged=not found, num_tadapter=(2 if "MLP_Adapter_out" in found else 1) if found else None,
        mlp_ratio=int(fc1.shape[0]) / tower.width if fc1 is not None else None,
    )


def zeroi2v_to_stadapt(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                         dict[str, torch.Tensor]]:
    """A ZeroI2V state dict (either form) as (the CLIP tower in the CLIP plugin's native `visual.*` names, the
    method's tensors in stadapt's keys: `adapters.*`, `head.fc.*` and the tower's `backbone.visual.ln_post.*`,
    which ZeroI2V trains). A pure renaming: no tensor is changed."""
    tower: dict[str, torch.Tensor] = {}
    trainable: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(HEAD):
            trainable["head.fc." + key.removeprefix(HEAD)] = value
            continue
        name = key.removeprefix("backbone.")
        found = _ADAPTER_KEY.fullmatch(name)
        if found and found.group(2) in ADAPTERS:
            index, adapter, layer, kind = found.groups()
            trainable[f"adapters.blocks.{index}.{ADAPTERS[adapter]}.{layer}.{kind}"] = value
        elif key in TOWER_FREE:
            trainable["adapters.temporal_embedding"] = value
        elif key.startswith("backbone."):
            tower[f"visual.{name}"] = value
            if name.startswith("ln_post."):
                trainable[f"backbone.visual.{name}"] = value
    return tower, trainable


def _parse_bool(text: str) -> bool:
    lowered = text.strip().strip("'\"").lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"{text!r} is not true or false")
    return lowered == "true"


def zeroi2v_settings(layout: ZeroI2VLayout, config: str | None, options: dict[str, object],
                     source: str) -> dict[str, Any]:
    """The zeroi2v tuner's settings; the ones read here are popped from `options` (the rest are the backbone's).
    The shapes say the adapters' layout; the config (or the user) what no tensor holds."""
    given = {k: options.pop(k) for k in ("adapter_scale", *K400_SHIFT, "adapter_dropout") if k in options}
    if config is not None:
        _refuse_unsupported(config, source)
    evaluation = config is not None and "ViT_Zero_CLIP_eval" in config  # its blocks read shift_div only
    if layout.merged and config is None:
        settings: dict[str, Any] = {**K400_SHIFT, **{k: v for k, v in given.items() if k in K400_SHIFT}}
        if "adapter_scale" in given:
            settings["adapter_scale"] = float(given["adapter_scale"])  # type: ignore[arg-type]
        return {**settings, "merged": True}
    read = re.sub(r"long_shift_\w+", "ignored", config) if evaluation and config is not None else config
    # a config's silence is the model's default (vit_zero_clip.py: 12, -1, off; vit_zero_clip_eval.py: 4);
    # without a config, the long shift must be said: K400's and SSv2's differ
    settings = {
        "shift_div": config_setting(read, "shift_div", given.get("shift_div"), int, source, SHIFT_HINT,
                                    default=4 if evaluation else 12),
        "long_shift_div": config_setting(read, "long_shift_div", given.get("long_shift_div"), int, source,
                                         SHIFT_HINT, default=-1 if config is not None else None),
        "long_shift_right": config_setting(read, "long_shift_right", given.get("long_shift_right"), _parse_bool,
                                           source, SHIFT_HINT, default=False),
    }
    if layout.merged:
        return {**settings, "merged": True}
    settings["adapter_scale"] = config_setting(config, "adapter_scale", given.get("adapter_scale"), float, source,
                                               SCALE_HINT)
    settings["adapter_dropout"] = config_setting(config, "dropout_rate", given.get("adapter_dropout"), float,
                                                 source, SCALE_HINT, default=0.1)
    return {**settings, "mlp_ratio": layout.mlp_ratio, "num_tadapter": layout.num_tadapter,
            "temporal_embedding": True, "merged": False}


def _refuse_unsupported(config: str, source: str) -> None:
    """STDHA as every released config runs it: the whole width shifted by one frame, keys and values."""
    for key, fine in (("divide_head", "False"), ("shift_stride", "1"), ("shift_pattern", "'kv'"),
                      ("adapter_type", "'linear'")):
        values = [v for v in config_values(config, key) if v.strip("'\"") != fine.strip("'")]
        if values:
            raise CheckpointError(f"the config in {source} sets {key}={values[0]}, which stadapt's zeroi2v does not "
                                  f"have (it runs {key}={fine}, as every released ZeroI2V config)")


def import_zeroi2v(
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
    """Convert a ZeroI2V checkpoint (training or re-parameterised) into a stadapt checkpoint folder that
    `load_model` reads with nothing else.

    `options` are the ZeroI2V settings the tensors do not hold (adapter_scale, shift_div, long_shift_div,
    long_shift_right, adapter_dropout) and backbone build options (e.g. quick_gelu); the input settings follow
    `paper_input` as for the official format."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists", "choose another --out or pass --overwrite to replace it")
    tensors, config_text = read_zeroi2v(checkpoint)
    source = str(checkpoint)
    layout = infer_zeroi2v_layout(tensors, source)
    if num_frames is not None and num_frames != layout.num_frames:
        raise CheckpointError(f"{source} was trained on {layout.num_frames} frames (its temporal embedding), "
                              f"not {num_frames}", "leave --num-frames out")
    if classes is not None and len(classes) != layout.num_classes:
        raise CheckpointError(f"the class list has {len(classes)} names but {source} classifies "
                              f"{layout.num_classes} classes")
    rest = dict(options or {})
    wanted = zeroi2v_settings(layout, config_text, rest, source)
    if backbone is None:
        backbone = clip_tower.detect_backbone(layout.tower.key, source, "ZeroI2V")
    check_backbone(backbone, layout.tower.width, layout.tower.layers, source)
    try:
        settings = load_tuner("zeroi2v").read_settings(wanted)
    except Exception as exc:  # pydantic's ValidationError: an option of the wrong type or range
        raise CheckpointError(f"the zeroi2v settings {wanted} do not validate ({first_line(exc)})",
                              "check the --option values") from None
    tower, trainable = zeroi2v_to_stadapt(tensors)
    return clip_tower.write_imported(
        checkpoint, out, tower, trainable, backbone=backbone, tuning="zeroi2v", settings=settings,
        num_frames=layout.num_frames, num_classes=layout.num_classes, classes=classes, overwrite=overwrite,
        rest=rest, input_settings=(dataset, paper_input(dataset, layout.num_frames, sampling=sampling, stride=stride,
                                                        views=views)),
        fmt="zeroi2v", towers_of="ZeroI2V's", notify=notify)
