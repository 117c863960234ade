"""The metadata of a stadapt checkpoint (stadapt.json): its format and versions, writing and reading a
checkpoint, and the typed `Contract` every reader takes the model and its input from.

    DIR/stadapt.json  the contract (format_version 2): model config (plugin, variant, options, adapter
                      layout, tuning), classes, the `input` an InputSpec (stadapt.data.input_spec) describes
                      (frames, sampling, stride, test views, size, mean, std, interpolation, crop),
                      backbone-weights source and fingerprint; a text head's tower (`text_tower`: its
                      weights source, fingerprint and prompt templates, never a copy); provenance (recipe,
                      step, stadapt version, what it was imported from); `file_xxh3_128`: the checksum of
                      every other file written with it (the tensors, a run's trainer state)

The file names, checksums and the atomic write are `stadapt.checkpoints.files`. Every reader goes through
`read_checkpoint`, which brings older metadata up to the current format in one converter (`upgrade_meta`),
and takes the input settings from the typed `Contract`, never from defaults of its own.

The backbone is not copied: it is rebuilt from its plugin and its weights file, whose fingerprint
must match. A checkpoint directory never replaces an existing one unless asked to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stadapt.checkpoints.files import (
    DIGESTS,
    META_FILE,
    TENSORS_FILE,
    TEXT_HEAD_FILE,
    checksum,
    load_tensors_verified,
    refuse_unless_replaceable,
    tensors_path,
    write_dir_atomically,
)
from stadapt.data.input_spec import InputSpec, input_spec_from_data
from stadapt.errors import CheckpointError, preview
from stadapt.model.classifier import ModelConfig

FORMAT = "stadapt-checkpoint"
FORMAT_VERSION = 2


def write_checkpoint(
    out: str | Path,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
    keep_replaced_as: Path | None = None,
) -> Path:
    """Write a checkpoint directory atomically; an existing directory is replaced only with `overwrite`.

    `extra_files` (name -> bytes) land in the same directory in the same atomic step, e.g. the
    trainer state that lets a run resume. `keep_replaced_as` renames the directory being replaced
    there instead of deleting it (how a run keeps its last N checkpoints without copying). Every
    file is on disk (fsync) before the directory is renamed into place, and at every instant a
    complete checkpoint exists under a name that `RunDir.recover_checkpoints` knows.
    """
    from safetensors.torch import save

    from stadapt import __version__

    out = Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists", "choose another --out or pass --overwrite to replace it")
    refuse_unless_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    files = {TENSORS_FILE: save(contiguous, metadata={"format": FORMAT}), **(extra_files or {})}
    digests = {name: checksum(data) for name, data in files.items()}
    full_meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "stadapt_version": __version__, **meta,
                 DIGESTS: digests}
    files[META_FILE] = (json.dumps(full_meta, indent=2, sort_keys=False) + "\n").encode()
    write_dir_atomically(out, files, keep_replaced_as)
    return out


def read_meta_file(path: Path) -> dict[str, Any]:
    """stadapt.json of checkpoint directory `path`, as written (no format upgrade): for readers of the
    other checkpoint files (the trainer state) that need its digests."""
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"could not read {meta_path} ({exc})", "the checkpoint is damaged") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not stadapt checkpoint metadata")
    return meta


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata in the current format, tensors) of a checkpoint directory (or an `hf-hub:ORG/NAME` id, from
    the hub cache), with clear errors for anything else. Metadata of an older format is converted by
    `upgrade_meta` (the file is not touched)."""
    from stadapt.checkpoints.hub import checkpoint_dir

    path = checkpoint_dir(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        hint = "import reference checkpoints first: stadapt import-checkpoint --help" if path.is_file() else \
            f"pass a stadapt checkpoint directory (it holds {META_FILE})"
        raise CheckpointError(f"{path} is not a stadapt checkpoint directory", hint)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})", "the checkpoint is damaged") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not stadapt checkpoint metadata")
    meta = upgrade_meta(meta, path)
    tensors = load_tensors_verified(tensors_path(path), meta)
    check_classes_fit_head(meta, tensors, path)
    return meta, tensors


def upgrade_meta(meta: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The one converter from older stadapt.json formats to the current one, so that no reader keeps
    fallbacks of its own. Format 1 had no `input`: it is made the way every reader then made it (the
    recipe's data settings where recorded, else sampling "stride", stride 16, views 1x1; the backbone's
    size, mean, std and interpolation), so an old checkpoint evaluates with the same numbers as before."""
    version = int(meta.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by stadapt {meta.get('stadapt_version')} in a newer format (v{version})",
            "upgrade stadapt",
        )
    out = dict(meta)
    if version < 2:
        try:
            data = dict((out.get("recipe") or {}).get("data") or {})
            data.setdefault("frames", out["model"]["num_frames"])
            out["input"] = input_spec_from_data(data, checkpoint_variant(out)).to_dict()
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{Path(path) / META_FILE}: the model description is invalid ({exc})",
                                  "the checkpoint is damaged") from exc
        out.update(format_version=FORMAT_VERSION, upgraded_from=version)
    return out


HEAD_WEIGHT = "head.fc.weight"  # (num_classes, width): the classifier's rows, one per class


def check_classes_fit_head(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """The class names, the recorded class count and the head's outputs must agree: every reader (eval,
    predict, export metadata) names logits through `classes`, so a mismatch would mislabel or crash."""
    classes = meta.get("classes")
    model = meta["model"] if isinstance(meta.get("model"), Mapping) else {}
    head = tensors.get(HEAD_WEIGHT)
    outputs = int(head.shape[0]) if head is not None and head.dim() == 2 else None
    fix = f"{path / META_FILE} was edited or damaged: restore it (one name in `classes` per head output)"
    tensor_file = tensors_path(path).name
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path / META_FILE}: `classes` is not a list of class names", fix)
    if classes is not None and outputs is not None and len(classes) != outputs:
        raise CheckpointError(
            f"{path / META_FILE} lists {_count(len(classes), 'class name')} but the head in {tensor_file} has "
            f"{_count(outputs, 'output')}",
            fix,
        )
    recorded = model.get("num_classes")
    if isinstance(recorded, int) and outputs is not None and recorded != outputs:
        raise CheckpointError(
            f"{path / META_FILE} records num_classes {recorded} but the head in {tensor_file} has "
            f"{_count(outputs, 'output')}",
            fix,
        )
    if isinstance(recorded, int) and classes is not None and recorded != len(classes):
        raise CheckpointError(
            f"{path / META_FILE} records num_classes {recorded} but lists {_count(len(classes), 'class name')}", fix
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def load_trainable(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load adapters + head strictly: every trainable tensor present, every shape equal."""
    own = dict(model.named_parameters())
    trainable = {k for k, p in own.items() if p.requires_grad}
    problems = [f"{k} missing" for k in sorted(trainable - set(tensors))]
    problems += [f"{k} is not a trainable tensor of this model" for k in sorted(set(tensors) - trainable)]
    problems += [
        f"{k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if problems:
        raise CheckpointError(f"{source} does not fit the model: {preview(problems, 3, '; ')}")
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v)


def default_classes(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def model_meta(built: Any, classes: Sequence[str] | None, *, input_spec: InputSpec | None = None,
               **extra: Any) -> dict[str, Any]:
    """The metadata block for a BuiltModel: config, plugin distribution, backbone weights, classes and the
    InputSpec. Without `input_spec` it comes from the `recipe` in `extra` (what training writes, and
    finetune-transfer through it): the recipe's data settings and the backbone's size and normalisation."""
    from stadapt.backbones.registry import plugin_distribution

    config = built.config
    if input_spec is None:
        recipe = extra.get("recipe")
        if not isinstance(recipe, Mapping):
            raise ValueError("model_meta needs input_spec, or a recipe to take it from")
        input_spec = input_spec_from_data(recipe["data"], built.variant)
    return {
        "model": config.to_dict(),
        "backbone_plugin": {"name": built.plugin.name, "distribution": plugin_distribution(built.plugin.name)},
        "backbone_weights": built.weights,
        "classes": list(classes) if classes is not None else default_classes(config.num_classes),
        "input": input_spec.to_dict(),
        "parameters": built.model.parameter_counts(),
        **({"text_tower": built.text_tower} if getattr(built, "text_tower", None) else {}),
        **extra,
    }


def text_head_files(model: torch.nn.Module) -> dict[str, bytes]:
    """The checkpoint file of a frozen text head's class embeddings ({TEXT_HEAD_FILE: bytes}), for
    `write_checkpoint(extra_files=...)`; none for any other head (a trained one keeps its classes in its layer)."""
    from safetensors.torch import save

    from stadapt.model.text_head import TextHead

    head = getattr(model, "head", None)
    if not isinstance(head, TextHead) or head.trains:
        return {}
    embeddings = head.class_embeddings.detach().float().cpu().contiguous()
    return {TEXT_HEAD_FILE: save({"class_embeddings": embeddings}, metadata={"format": FORMAT})}


def stored_class_embeddings(path: Path, meta: Mapping[str, Any]) -> torch.Tensor | None:
    """The class embeddings a checkpoint kept for its frozen text head (checked against the recorded
    checksum), or None where it has none (an older checkpoint, another head): then they are computed."""
    file = Path(path) / TEXT_HEAD_FILE
    if not file.is_file():
        return None
    return load_tensors_verified(file, meta).get("class_embeddings")


def checkpoint_variant(meta: Mapping[str, Any]) -> Any:
    """The VariantInfo (input size, mean, std, interpolation) of a checkpoint's backbone as it was built,
    its recorded build options included (e.g. timm's img_size)."""
    from stadapt.backbones.registry import parse_backbone

    model = meta["model"]
    return parse_backbone(model["backbone"], model.get("backbone_options") or {})[1]


@dataclass(frozen=True)
class Contract:
    """The typed reading of a checkpoint's stadapt.json (current format): what a reader needs to rebuild
    the model and feed it. `meta` keeps the whole file for provenance (recipe, step, version, import)."""

    model: ModelConfig
    input: InputSpec
    classes: list[str]
    backbone_weights: dict[str, Any]
    meta: dict[str, Any] = field(repr=False)
    text_tower: dict[str, Any] = field(default_factory=dict)  # a text head's: weights source, fingerprint, templates

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], path: str | Path) -> Contract:
        """Parse metadata `read_checkpoint` returned; anything malformed is a CheckpointError naming the file."""
        try:
            config = ModelConfig.from_dict(meta["model"])
            spec = InputSpec.from_dict(meta["input"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: the model description in {META_FILE} is invalid ({exc})",
                                  "the checkpoint is damaged") from exc
        classes = list(meta.get("classes") or default_classes(config.num_classes))
        return cls(model=config, input=spec, classes=classes, backbone_weights=dict(meta.get("backbone_weights") or {}),
                   meta=dict(meta), text_tower=dict(meta.get("text_tower") or {}))

    @property
    def recipe(self) -> dict[str, Any] | None:
        """The training recipe (resolved), or None for an imported checkpoint."""
        return self.meta.get("recipe") or None
