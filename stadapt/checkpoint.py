"""stadapt checkpoints: adapters + head as safetensors, beside JSON metadata.

    DIR/adapters.safetensors   the trainable tensors only (adapters, head)
    DIR/stadapt.json           stadapt version, model config (plugin, variant, options, adapter layout),
                               classes, backbone-weights source and fingerprint, provenance

The backbone is not copied: it is rebuilt from its plugin and its weights file, whose fingerprint
must match. A checkpoint directory is written atomically (temp directory + rename) and never
replaces an existing one unless asked to.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from stadapt.errors import CheckpointError, preview
from stadapt.fileio import disk_full_as_error, fsync_dir, make_temp_dir, write_durable

TENSORS_FILE = "adapters.safetensors"
META_FILE = "stadapt.json"
FORMAT = "stadapt-checkpoint"
FORMAT_VERSION = 1


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
    full_meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "stadapt_version": __version__, **meta}
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    files = {TENSORS_FILE: save(contiguous, metadata={"format": FORMAT}),
             META_FILE: (json.dumps(full_meta, indent=2, sort_keys=False) + "\n").encode(), **(extra_files or {})}
    intact = f"the previous checkpoint {out} is intact" if out.exists() else "no earlier checkpoint was touched"
    staging: Path | None = None
    try:
        with disk_full_as_error(out, intact):
            staging = make_temp_dir(out.parent, out.name)
            for name, data in files.items():
                write_durable(staging / name, data)
            fsync_dir(staging)
            _swap_in(staging, out, keep_replaced_as)
    finally:
        if staging is not None and staging.exists():  # a failed write leaves no staging behind
            shutil.rmtree(staging, ignore_errors=True)
    return out


# every file stadapt writes in a checkpoint directory: the checkpoint itself, the trainer state beside it
# (stadapt.engine.state), and what eval and export put next to a checkpoint that is not inside a run
CHECKPOINT_FILES = frozenset({TENSORS_FILE, META_FILE, "trainer_state.safetensors", "trainer_state.json",
                              "eval.json", "eval.predictions.csv", "eval.confusion.png", "model.onnx",
                              "model.onnx.data"})


def foreign_files(path: Path) -> list[str]:
    """The entries of checkpoint directory `path` that stadapt did not write (`NAME/` for a folder), sorted."""
    from stadapt.fileio import temp_target

    return sorted(f"{p.name}/" if p.is_dir() else p.name for p in Path(path).iterdir()
                  if p.is_dir() or (p.name not in CHECKPOINT_FILES and temp_target(p.name) not in CHECKPOINT_FILES))


def refuse_unless_replaceable(out: Path) -> None:
    """Replacing a checkpoint directory removes it: only a missing or empty one, or a stadapt checkpoint that
    holds nothing but stadapt's files, may go. A user's file is never deleted; the refusal names it."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise CheckpointError(f"{out} exists and is not a directory", "choose another --out")
    present = sorted(f"{p.name}/" if p.is_dir() else p.name for p in out.iterdir())
    if not present:
        return
    if not (out / META_FILE).is_file():
        raise CheckpointError(f"{out} is not a stadapt checkpoint (it holds {preview(present)}), so it is not "
                              "replaced", "choose a new or empty --out directory")
    foreign = foreign_files(out)
    if foreign:
        raise CheckpointError(f"{out} holds files stadapt did not write ({preview(foreign)}), so it is not replaced",
                              "move them out of the directory first, or write the checkpoint elsewhere")


def _swap_in(staging: Path, out: Path, keep_replaced_as: Path | None) -> None:
    """Rename the complete `staging` to `out`, the directory it replaces aside first (to
    `keep_replaced_as`, or `.NAME.old` which is deleted afterwards). A crash between the renames
    leaves both complete directories: the newest is put back in place on the next start."""
    if not out.exists():
        os.replace(staging, out)
        fsync_dir(out.parent)
        return
    aside = keep_replaced_as or out.with_name(f".{out.name}.old")
    if aside.exists():  # left by an earlier crash, and older than `out`
        shutil.rmtree(aside)
    os.replace(out, aside)
    fsync_dir(out.parent)
    os.replace(staging, out)
    fsync_dir(out.parent)
    if keep_replaced_as is None:
        shutil.rmtree(aside, ignore_errors=True)


def safetensors_intact(path: Path) -> bool:
    """Whether `path` is a whole safetensors file: its header parses and the file is exactly as long
    as the header says (a file cut short by a crash or a full disk is not)."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size <= 0 or size > 100_000_000:
                return False
            header = json.loads(handle.read(size))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return path.stat().st_size == 8 + size + max(ends, default=0)
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint directory (or an `hf-hub:ORG/NAME` id, from the hub cache), with
    clear errors for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from stadapt.hub import checkpoint_dir

    path = checkpoint_dir(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        hint = "import reference checkpoints first: stadapt import-checkpoint --help" if path.is_file() else \
            "pass a stadapt checkpoint directory (it holds stadapt.json)"
        raise CheckpointError(f"{path} is not a stadapt checkpoint directory", hint)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})", "the checkpoint is damaged") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not stadapt checkpoint metadata")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by stadapt {meta.get('stadapt_version')} in a newer format "
            f"(v{meta['format_version']})",
            "upgrade stadapt",
        )
    try:
        tensors = load_file(str(path / TENSORS_FILE), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"could not read {path / TENSORS_FILE}: {exc}", "the checkpoint is damaged") from exc
    check_classes_fit_head(meta, tensors, path)
    return meta, tensors


HEAD_WEIGHT = "head.fc.weight"  # (num_classes, width): the classifier's rows, one per class


def check_classes_fit_head(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """The class names, the recorded class count and the head's outputs must agree: every reader (eval,
    predict, export metadata) names logits through `classes`, so a mismatch would mislabel or crash."""
    classes = meta.get("classes")
    model = meta["model"] if isinstance(meta.get("model"), Mapping) else {}
    head = tensors.get(HEAD_WEIGHT)
    outputs = int(head.shape[0]) if head is not None and head.dim() == 2 else None
    fix = f"{path / META_FILE} was edited or damaged: restore it (one name in `classes` per head output)"
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path / META_FILE}: `classes` is not a list of class names", fix)
    if classes is not None and outputs is not None and len(classes) != outputs:
        raise CheckpointError(
            f"{path / META_FILE} lists {_count(len(classes), 'class name')} but the head in {TENSORS_FILE} has "
            f"{_count(outputs, 'output')}",
            fix,
        )
    recorded = model.get("num_classes")
    if isinstance(recorded, int) and outputs is not None and recorded != outputs:
        raise CheckpointError(
            f"{path / META_FILE} records num_classes {recorded} but the head in {TENSORS_FILE} has "
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


def model_meta(built: Any, classes: Sequence[str] | None, **extra: Any) -> dict[str, Any]:
    """The metadata block for a BuiltModel: config, plugin distribution, backbone weights, classes."""
    from stadapt.backbones.registry import plugin_distribution

    config = built.config
    return {
        "model": config.to_dict(),
        "backbone_plugin": {"name": built.plugin.name, "distribution": plugin_distribution(built.plugin.name)},
        "backbone_weights": built.weights,
        "classes": list(classes) if classes is not None else default_classes(config.num_classes),
        "parameters": built.model.parameter_counts(),
        **extra,
    }


def checkpoint_variant(meta: Mapping[str, Any]) -> Any:
    """The VariantInfo (input size, mean, std, interpolation) of a checkpoint's backbone as it was built,
    its recorded build options included (e.g. timm's img_size)."""
    from stadapt.backbones.registry import parse_backbone

    model = meta["model"]
    return parse_backbone(model["backbone"], model.get("backbone_options") or {})[1]
