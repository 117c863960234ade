"""stadapt checkpoints: the trainable tensors as safetensors, beside JSON metadata.

    DIR/trainable.safetensors  the trainable tensors only (adapters and head; the backbone tensors that
                               train under full or partial fine-tuning); `adapters.safetensors` before
    DIR/stadapt.json           the contract (format_version 2): model config (plugin, variant, options,
                               adapter layout, tuning), classes, the `input` an InputSpec describes
                               (frames, sampling, stride, test views, size, mean, std, interpolation,
                               crop), backbone-weights source and fingerprint; provenance (recipe, step,
                               stadapt version, what it was imported from); `file_xxh3_128`: the
                               checksum of every other file written with it (the tensors, a run's
                               trainer state)

Every reader goes through `read_checkpoint`, which brings older metadata up to the current format in
one converter (`upgrade_meta`), and takes the input settings from the typed `Contract`, never from
defaults of its own.

The backbone is not copied: it is rebuilt from its plugin and its weights file, whose fingerprint
must match. The files beside stadapt.json are checked against their recorded checksum as they are read
(`load_tensors_verified`: the mapped file is hashed, then loaded), so a damaged tensor file is refused,
never turned into a model that predicts noise; checkpoints written before the digests were recorded
load unchecked. A checkpoint directory is written atomically (temp directory + rename) and never
replaces an existing one unless asked to.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from stadapt.errors import CheckpointError, preview
from stadapt.fileio import disk_full_as_error, fsync_dir, make_temp_dir, write_durable
from stadapt.model.classifier import ModelConfig

TENSORS_FILE = "trainable.safetensors"
OLD_TENSORS_FILES = ("adapters.safetensors",)  # what checkpoints before format 2 called it: still read
META_FILE = "stadapt.json"
# stadapt.json's key: {file name: XXH3-128 hex} of every other file of the checkpoint. A checksum against
# damage (disk, copy, transfer), not a signature: XXH3 hashes at memory speed (1 ms for the 30 MB of ViT-B
# adapters, where sha256 takes 17 ms, 4x the read), so checking costs little next to reading the file.
DIGESTS = "file_xxh3_128"
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
# (stadapt.training.state), and what eval and export put next to a checkpoint that is not inside a run
CHECKPOINT_FILES = frozenset({TENSORS_FILE, *OLD_TENSORS_FILES, META_FILE, "trainer_state.safetensors",
                              "trainer_state.json", "eval.json", "eval.predictions.csv", "eval.confusion.png",
                              "model.onnx", "model.onnx.data"})


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


def tensors_path(path: str | Path) -> Path:
    """The trainable-tensors file of checkpoint directory `path`: `trainable.safetensors`, or the name a
    checkpoint written before format 2 gave it (`adapters.safetensors`, also under full fine-tuning)."""
    path = Path(path)
    for name in (TENSORS_FILE, *OLD_TENSORS_FILES):
        if (path / name).exists():
            return path / name
    return path / TENSORS_FILE


def checksum(data: bytes | mmap.mmap) -> str:
    """The XXH3-128 hex digest `DIGESTS` records for a checkpoint file."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


def _verify(path: Path, data: bytes | mmap.mmap, meta: Mapping[str, Any]) -> None:
    """Refuse `data`, the content of checkpoint file `path`, unless its checksum is the one its
    checkpoint's stadapt.json (`meta`) records; a file with no recorded checksum (a checkpoint written
    before stadapt recorded them) passes unchecked."""
    recorded = (meta.get(DIGESTS) or {}).get(path.name) if isinstance(meta.get(DIGESTS), Mapping) else None
    if recorded is not None and checksum(data) != recorded:
        raise CheckpointError(
            f"{path} is damaged: its checksum is not the one recorded in {path.parent / META_FILE}, so it is not "
            "the file that was saved",
            "restore it from a copy, or re-run the training (or use another checkpoint)")


def read_verified(path: Path, meta: Mapping[str, Any]) -> bytes:
    """The bytes of (small) checkpoint file `path`, checked against the checksum `meta` records."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"could not read {path}: {exc.strerror or exc}", "the checkpoint is damaged") from exc
    _verify(path, data, meta)
    return data


def load_tensors_verified(path: Path, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of safetensors file `path`, checked against the checksum `meta` records. The check
    hashes the mapped file (no copy: 1.6 ms of a 3 ms load for 30 MB of ViT-B adapters) and the tensors
    come from safetensors' own memory-mapped `load_file`; reading the file into bytes first and loading
    those costs ten times as much."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            _verify(path, mapped, meta)
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:  # ValueError: mmap of an empty file
        raise CheckpointError(f"could not read {path}: {exc}", "the checkpoint is damaged") from exc


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
            "pass a stadapt checkpoint directory (it holds stadapt.json)"
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
        **extra,
    }


def checkpoint_variant(meta: Mapping[str, Any]) -> Any:
    """The VariantInfo (input size, mean, std, interpolation) of a checkpoint's backbone as it was built,
    its recorded build options included (e.g. timm's img_size)."""
    from stadapt.backbones.registry import parse_backbone

    model = meta["model"]
    return parse_backbone(model["backbone"], model.get("backbone_options") or {})[1]


SAMPLINGS = ("stride", "segment")
TEST_CROPS = ("short_side",)


@dataclass(frozen=True)
class InputSpec:
    """How a model's input is made from a video file: everything inference needs besides the weights.

    `frames` per clip, sampled by `sampling` ("stride": every `stride`-th frame from a start; "segment":
    one frame per equal segment, `stride` unused); `views` = (temporal, spatial) test views; each frame's
    short side resized to `image_size` with `interpolation`, then (`crop` "short_side") 1 centre crop or
    S crops along the long side; RGB in 0..1 normalised with `mean` and `std`.
    """

    frames: int
    sampling: str
    stride: int
    views: tuple[int, int]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop: str = "short_side"

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 1, got {value}" for name, value in (
            ("frames", self.frames), ("stride", self.stride), ("image_size", self.image_size),
            ("temporal views", self.views[0]), ("spatial views", self.views[1])) if int(value) < 1]
        if self.sampling not in SAMPLINGS:
            problems.append(f"unknown sampling {self.sampling!r} (one of: {', '.join(SAMPLINGS)})")
        if self.crop not in TEST_CROPS:
            problems.append(f"unknown test crop {self.crop!r} (one of: {', '.join(TEST_CROPS)})")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            problems.append(f"mean and std need 3 values each, std > 0 (got {self.mean}, {self.std})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def views_text(self) -> str:
        """The views as recipes and `--views` write them: "TxS"."""
        return f"{self.views[0]}x{self.views[1]}"

    def with_views(self, views: tuple[int, int] | None) -> InputSpec:
        """The same input with other test views (None: these)."""
        return self if views is None else replace(self, views=(int(views[0]), int(views[1])))

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "sampling": self.sampling, "stride": self.stride,
                "temporal_views": self.views[0], "spatial_views": self.views[1], "image_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "crop": self.crop}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """The InputSpec `to_dict` wrote; unknown or missing keys are errors (ValueError/KeyError/TypeError)."""
        unknown = set(data) - {"frames", "sampling", "stride", "temporal_views", "spatial_views", "image_size",
                               "mean", "std", "interpolation", "crop"}
        if unknown:
            raise ValueError(f"unknown input settings {sorted(unknown)}")
        return cls(frames=int(data["frames"]), sampling=str(data["sampling"]), stride=int(data["stride"]),
                   views=(int(data["temporal_views"]), int(data["spatial_views"])),
                   image_size=int(data["image_size"]), mean=_three(data["mean"]), std=_three(data["std"]),
                   interpolation=str(data["interpolation"]), crop=str(data.get("crop", "short_side")))


def _three(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def input_spec_from_data(data: Mapping[str, Any], variant: Any) -> InputSpec:
    """The InputSpec of a recipe's `data` section (a dict) on a backbone `variant` (VariantInfo): frames,
    sampling, stride and views from the recipe (where a key is absent: sampling "stride", stride 16,
    views 1x1, as the readers of format-1 checkpoints assumed), size and normalisation from the backbone."""
    temporal, spatial = (int(v) for v in str(data.get("views", "1x1")).lower().split("x"))
    return InputSpec(frames=int(data["frames"]), sampling=str(data.get("sampling", "stride")),
                     stride=int(data.get("stride", 16)), views=(temporal, spatial),
                     image_size=int(variant.image_size), mean=_three(variant.mean), std=_three(variant.std),
                     interpolation=str(variant.interpolation))


@dataclass(frozen=True)
class Contract:
    """The typed reading of a checkpoint's stadapt.json (current format): what a reader needs to rebuild
    the model and feed it. `meta` keeps the whole file for provenance (recipe, step, version, import)."""

    model: ModelConfig
    input: InputSpec
    classes: list[str]
    backbone_weights: dict[str, Any]
    meta: dict[str, Any] = field(repr=False)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], path: str | Path) -> Contract:
        """Parse metadata `read_checkpoint` returned; anything malformed is a CheckpointError naming the file."""
        try:
            config = ModelConfig.from_dict(meta["model"])
            spec = InputSpec.from_dict(meta["input"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: the model description in stadapt.json is invalid ({exc})",
                                  "the checkpoint is damaged") from exc
        classes = list(meta.get("classes") or default_classes(config.num_classes))
        return cls(model=config, input=spec, classes=classes, backbone_weights=dict(meta.get("backbone_weights") or {}),
                   meta=dict(meta))

    @property
    def recipe(self) -> dict[str, Any] | None:
        """The training recipe (resolved), or None for an imported checkpoint."""
        return self.meta.get("recipe") or None
