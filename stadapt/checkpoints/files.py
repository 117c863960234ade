"""The files of a stadapt checkpoint directory: their names (defined once, here), the checksums that
guard them, reads that check them, and writing a whole directory atomically.

    DIR/trainable.safetensors  the trainable tensors (`adapters.safetensors` before format 2)
    DIR/stadapt.json           the metadata (stadapt.checkpoints.format), with `file_xxh3_128`: the
                               checksum of every other file written with it

The files beside stadapt.json are checked against their recorded checksum as they are read
(`load_tensors_verified`: the mapped file is hashed, then loaded), so a damaged tensor file is refused,
never turned into a model that predicts noise; checkpoints written before the digests were recorded
load unchecked. A directory is written atomically (temp directory + rename) and only ever replaces an
empty one or a stadapt checkpoint that holds nothing but stadapt's files. Nothing here imports torch
(safetensors loads it when tensors are read), so the names are free to use in a recipe check.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stadapt.errors import CheckpointError, preview
from stadapt.fileio import disk_full_as_error, fsync_dir, make_temp_dir, write_durable

if TYPE_CHECKING:
    import torch

TENSORS_FILE = "trainable.safetensors"
# the frozen backbone's weights, where a checkpoint carries them (an imported AIM checkpoint holds its CLIP tower):
# recorded by this name, relative to the checkpoint directory, so the directory loads alone wherever it is
BACKBONE_FILE = "backbone.safetensors"
# a frozen text head's class embeddings (the text tower's of the trained class names): read on load instead of
# running the text tower over every class name again (18 s for 400 names with ViT-B/16's on 2 CPU cores)
TEXT_HEAD_FILE = "text_head.safetensors"
OLD_TENSORS_FILES = ("adapters.safetensors",)  # what checkpoints before format 2 called it: still read
META_FILE = "stadapt.json"
# the files a checkpoint reader needs: what an `hf-hub:` id downloads (stadapt.checkpoints.hub); BACKBONE_FILE
# only where the checkpoint carries its backbone
READER_FILES = (META_FILE, TENSORS_FILE, *OLD_TENSORS_FILES, BACKBONE_FILE, TEXT_HEAD_FILE)
# stadapt.json's key: {file name: XXH3-128 hex} of every other file of the checkpoint. A checksum against
# damage (disk, copy, transfer), not a signature: XXH3 hashes at memory speed (1 ms for the 30 MB of ViT-B
# adapters, where sha256 takes 17 ms, 4x the read), so checking costs little next to reading the file.
DIGESTS = "file_xxh3_128"
# every file stadapt writes in a checkpoint directory: the checkpoint itself, the trainer state beside it
# (stadapt.training.state), and what eval and export put next to a checkpoint that is not inside a run
STATE_TENSORS = "trainer_state.safetensors"  # a training checkpoint's optimizer tensors and RNG states
STATE_META = "trainer_state.json"  # its step, counters, optimizer param groups and scaler state
CHECKPOINT_FILES = frozenset({TENSORS_FILE, *OLD_TENSORS_FILES, META_FILE, BACKBONE_FILE, TEXT_HEAD_FILE,
                              STATE_TENSORS, STATE_META,
                              "eval.json", "eval.predictions.csv", "eval.confusion.png", "model.onnx",
                              "model.onnx.data"})


def write_dir_atomically(out: Path, files: Mapping[str, bytes], keep_replaced_as: Path | None) -> None:
    """Write `files` (name -> bytes) as directory `out` in one step (the caller has checked that `out` may
    be replaced: `refuse_unless_replaceable`). Every file is on disk (fsync) before the directory is renamed
    into place, and at every instant a complete checkpoint exists under a name that
    `RunDir.recover_checkpoints` knows; a failed write leaves no staging directory behind."""
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
