"""The public Python API, shaped as users of timm, open_clip and transformers know it: `load_model` (a
saved model: the `nn.Module` itself, carrying its input contract, classes and metadata), `create_model`
(a fresh model of a backbone) and `list_backbones` (what the installed plugins offer).

The work is done in the layers below (stadapt.checkpoints.load, stadapt.inference.loading,
stadapt.runs, stadapt.model.classifier, stadapt.backbones.registry); this module only takes what every
command takes and hands it down.
"""

from __future__ import annotations

import fnmatch
import warnings
from pathlib import Path
from typing import Any

import torch

from stadapt.checkpoints.load import LoadedFrom, LoadedModel
from stadapt.model.classifier import VideoClassifier

__all__ = ["LoadedFrom", "LoadedModel", "create_model", "list_backbones", "load_model"]


def load_model(
    path: str | Path,
    *,
    which: str | None = None,
    backbone_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> LoadedModel:
    """The model saved at `path`, in eval mode: a LoadedModel, which is the VideoClassifier (an
    `nn.Module`) carrying `input_spec`, `classes`, `config`, `meta` and `loaded_from`.

    `path` is what every command's --checkpoint takes: a checkpoint directory, a run directory
    (`runs/NAME`: its `which` checkpoint, "best" or "last"; None = best when the run keeps one, else last),
    or `hf-hub:ORG/NAME[@REVISION]` (from the Hugging Face cache, downloaded where a network is).

    The backbone weights come from where the checkpoint recorded them, or from `backbone_weights`;
    either way their fingerprint must match the one recorded (a run trained from a random backbone is
    rebuilt from its recorded seed). `precision` "bf16" or "fp16" runs the model under autocast and, on
    CUDA and with the backbone frozen, keeps the backbone in that dtype, as training does; "auto" is the
    run's precision on `device` (stadapt.runtime.precision.inference_precision).
    """
    from stadapt.inference.loading import load_for_inference

    checkpoint = _checkpoint_of(path, which)
    return load_for_inference(checkpoint, backbone_weights=backbone_weights, device=device, precision=precision)


def _checkpoint_of(target: str | Path, which: str | None) -> str | Path:
    """The checkpoint `target` names: of a run directory, the one the commands pick (stadapt.runs);
    anything else as given, for the checkpoint reader to load or say what is wrong with it."""
    from stadapt.checkpoints.files import META_FILE
    from stadapt.checkpoints.hub import is_hub_id
    from stadapt.errors import StadaptError
    from stadapt.runs.layout import RunDir
    from stadapt.runs.lookup import pick_checkpoint

    run = None if is_hub_id(target) else RunDir(target)
    if run is None or not any((c / META_FILE).is_file() for c in (run.last, run.best)):
        if which is not None:
            raise StadaptError(f"which={which!r} picks a checkpoint of a run, and {target} is not a run directory",
                               "pass the run directory (runs/NAME), or leave `which` out")
        return target
    checkpoint, _ = pick_checkpoint(run, which)
    return checkpoint


def create_model(
    backbone: str,
    num_classes: int,
    *,
    tuning: str = "st_adapter",
    num_frames: int = 8,
    weights: str | Path | None = None,
    adapter: Any = None,
    dropout: float = 0.5,
    **backbone_options: Any,
) -> VideoClassifier:
    """A fresh VideoClassifier (in train mode, as timm's `create_model` gives): `backbone` as
    `list_backbones` names it ("clip:ViT-B-16"), a head of `num_classes` outputs, clips of `num_frames`.

    `tuning` names the tuning method, any installed one (`stadapt methods`: st_adapter, linear,
    full_finetune, partial_finetune, ...); `adapter` holds its settings (default: the method's own, e.g.
    for st_adapter `AdapterConfig()`, one 384-wide adapter before each MLP).
    `weights`: the backbone's pretrained weights, a local file or a tag the plugin knows (None: random).
    Other keywords are the backbone's build options (e.g. timm's `img_size`). The same as
    `build_model(ModelConfig(...), weights).model`.
    """
    from stadapt.model.classifier import ModelConfig, build_model
    from stadapt.tuners import load_tuner

    if adapter is None:
        adapter = load_tuner(tuning).read_settings(None)
    config = ModelConfig(backbone=backbone, num_classes=num_classes, num_frames=num_frames, adapter=adapter,
                         dropout=dropout, backbone_options=backbone_options, tuning=tuning)
    return build_model(config, weights=weights).model


def list_backbones(pattern: str | None = None) -> list[str]:
    """The backbones the installed plugins offer, as `PLUGIN:VARIANT` names (what `create_model` and a
    recipe's `model.backbone` take), sorted by plugin: each plugin's listed variants.

    With a shell-style `pattern` (case-insensitive; a plain word matches anywhere), the names matching it,
    open-ended plugins adding the models their library builds (as `stadapt backbones --search`);
    `PLUGIN:PATTERN` looks in the plugins whose name matches PLUGIN. A plugin that fails to load is left
    out with a warning naming the problem.
    """
    from stadapt.backbones.registry import installed_plugins, load_plugin
    from stadapt.errors import StadaptError

    plugins, _, names = (pattern or "").rpartition(":")
    if not any(ch in names for ch in "*?["):
        names = f"*{names}*"  # a plain word matches anywhere; nothing after the colon matches all
    found: list[str] = []
    for entry in installed_plugins():
        if plugins and not fnmatch.fnmatch(entry.name.lower(), plugins.lower()):
            continue
        try:
            plugin = load_plugin(entry.name)
            variants = plugin.search(names) if pattern is not None else list(plugin.variants())
        except StadaptError as exc:
            warnings.warn(f"backbone plugin {entry.name} left out: {exc}", stacklevel=2)
            continue
        found += [f"{entry.name}:{name}" for name in variants]
    return found
