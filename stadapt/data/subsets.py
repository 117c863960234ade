"""Subsets of a prepared list: K videos per class (few-shot), a class subset (base / novel), or the exact
videos of a published split file (ViFi-CLIP's `datasets_splits/`), so the open-vocabulary protocols run from
any prepared data set.

A subset written into the prepared folder keeps that folder's labels, so it is one more list of the same data
set. A class subset written as a new prepared folder (`--out DIR`) gets a classes.txt of the kept classes, in
the original order, and labels re-indexed into it, so training and evaluation see only those classes (the
base-to-novel protocol scores novel videos over the novel classes alone). Only the standard library is used.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from stadapt.data.prepared import (
    CLASSES_FILE,
    MANIFEST_FILE,
    PreparedData,
    file_sha256,
    read_classes,
    read_list,
    write_list,
    write_prepared,
)
from stadapt.data.textfile import read_lines
from stadapt.errors import DataError, preview
from stadapt.fileio import atomic_write_text


@dataclass(frozen=True)
class Row:
    """One line of a prepared list: the path as written there and its label (an index into classes.txt)."""

    path: str
    label: int


def list_rows(prepared: PreparedData, list_file: str | Path) -> list[Row]:
    """The lines of a prepared list with their paths as written (checked as training would read them)."""
    path = prepared.list_path(list_file)
    read_list(path, prepared.root, prepared.num_classes)  # every line checked, one error for all bad ones
    rows = []
    for line in read_lines(path, "list file"):
        if line.strip():
            video, label = line.strip().rsplit(None, 1)
            rows.append(Row(video, int(label)))
    return rows


def read_class_names(path: Path, known: Sequence[str]) -> list[str]:
    """Class names to keep: one a line, or ViFi-CLIP's `labels/*.csv` (`id,name` header, then `N,name`);
    every name must be one of `known` (classes.txt), else one error naming the unknown ones."""
    lines = [line.strip() for line in read_lines(Path(path), "class file") if line.strip()]
    if lines and lines[0].replace(" ", "").lower() == "id,name":
        lines = [line.split(",", 1)[1].strip() if "," in line else line for line in lines[1:]]
    if not lines:
        raise DataError(f"class file {path} names no classes", "write one class name a line")
    unknown = [name for name in lines if name not in set(known)]
    if unknown:
        raise DataError(f"class file {path} names {len(unknown)} class(es) not in {CLASSES_FILE}: {preview(unknown)}",
                        f"use the names of {CLASSES_FILE} exactly (e.g. {known[0]!r})")
    return lines


def video_name(path: str) -> str:
    """A video's file name, whatever separators its list used."""
    return PureWindowsPath(PurePosixPath(path).name).name


def video_key(path: str) -> str:
    """What split files and lists are matched by: the file name without its container suffix, so a split
    file's `x.mp4` finds the `x.mkv` or `x.webm` a download script left (prepare-data k400 finds videos by
    stem too)."""
    return PurePosixPath(video_name(path)).stem


def read_split_file(path: Path) -> list[str]:
    """The video file names of a published split file: ViFi-CLIP's `datasets_splits/**.txt` are `video label`
    lines, a bare file name (`v_ApplyEyeMakeup_g24_c04.avi`, K400's `{id}_{start}_{end}.mp4`) and an
    integer label that indexes that split's own label CSV; the names alone are read here."""
    names = [video_name(line.strip().rsplit(None, 1)[0]) for line in read_lines(Path(path), "split file")
             if line.strip()]
    if not names:
        raise DataError(f"split file {path} names no videos", "pass one of ViFi-CLIP's datasets_splits/ files")
    return names


def select(rows: list[Row], classes: list[str], *, keep: Sequence[str] | None = None,
           videos: Sequence[str] | None = None, shots: int | None = None, seed: int = 0,
           split_file: Path | None = None) -> list[Row]:
    """The rows of the kept classes (`keep`: names), of the named videos (`videos`: file names from a split
    file), then `shots` per class drawn with `seed` (the same seed, the same lines), in the list's order."""
    if keep is not None:
        wanted = {classes.index(name) for name in keep}
        rows = [row for row in rows if row.label in wanted]
    if videos is not None:
        by_key = {video_key(row.path): row for row in rows}
        missing = [name for name in dict.fromkeys(videos) if video_key(name) not in by_key]
        if missing:
            raise DataError(f"{len(missing)} video(s) of split file {split_file} are not in the list: "
                            f"{preview(missing)}", "pass the list those videos belong to (train.txt for a "
                                                   "*_train.txt split file, val.txt for a *_val.txt one)")
        named = {video_key(name) for name in videos}
        rows = [row for row in rows if video_key(row.path) in named]
    if shots is not None:
        rows = few_shot(rows, classes, shots, seed)
    if not rows:
        raise DataError("the subset holds no videos", "check --classes, --split-file and --list")
    return rows


def few_shot(rows: list[Row], classes: list[str], shots: int, seed: int) -> list[Row]:
    """`shots` rows of every class present, drawn by a Random(seed) in class-index order; a class with fewer
    is an error naming it (a K-shot protocol must not silently train on fewer)."""
    by_class: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_class.setdefault(row.label, []).append(i)
    short = [f"{classes[c]!r} ({len(found)})" for c, found in sorted(by_class.items()) if len(found) < shots]
    if short:
        raise DataError(f"{len(short)} class(es) have fewer than {shots} videos in the list: {preview(short)}",
                        "lower --shots, or leave those classes out with --classes")
    rng = random.Random(seed)
    chosen = sorted(i for c in sorted(by_class) for i in rng.sample(by_class[c], shots))
    return [rows[i] for i in chosen]


def write_subset_list(prepared: PreparedData, rows: list[Row], out: Path) -> Path:
    """Write the rows as a list of the prepared folder (`out` relative to it); never over an existing file."""
    target = out if out.is_absolute() else prepared.root / out
    if target.suffix != ".txt" or target.name in (CLASSES_FILE, "quarantine.txt"):
        raise DataError(f"--out {out}: a list is a NAME.txt file, not {target.name}", "name it e.g. train_16shot.txt")
    if target.exists() or target.is_symlink():
        raise DataError(f"{target} exists", "choose another --out name (a list is never replaced)")
    if not target.parent.is_dir():
        raise DataError(f"--out {out}: folder {target.parent} does not exist", "create it, or name a list in --root")
    if target.parent != prepared.root:
        rows = [Row(_absolute(prepared.root, row.path), row.label) for row in rows]  # paths stay valid
    write_list(target, [(row.path, row.label) for row in rows])
    return target


def write_subset_root(prepared: PreparedData, rows: list[Row], out_root: Path, list_name: str) -> Path:
    """Write the rows as `list_name` of a prepared folder at `out_root` holding only their classes, labels
    re-indexed; a folder this wrote before with the same classes gains the list (e.g. val.txt after train.txt)."""
    kept = sorted({row.label for row in rows})
    names = [prepared.classes[c] for c in kept]
    index = {c: i for i, c in enumerate(kept)}
    moved = [(_absolute(prepared.root, row.path), index[row.label]) for row in rows]
    split = Path(list_name).stem
    source = f"subset of {prepared.root}"
    if out_root.exists() and not out_root.is_dir():
        raise DataError(f"--out {out_root} is a file", "name a new directory, or NAME.txt for a list in --root")
    if not (out_root / CLASSES_FILE).is_file():
        if out_root.exists() and any(out_root.iterdir()):
            raise DataError(f"{out_root} is not empty and holds no prepared classes", "choose a new --out directory")
        write_prepared(out_root, names, {split: moved}, source=source)
        return out_root / f"{split}.txt"
    if read_classes(out_root / CLASSES_FILE) != names:
        raise DataError(f"{out_root} holds other classes than this subset's {len(names)}",
                        "choose a new --out directory, or a split file of the same classes (base_val after base_train)")
    target = out_root / f"{split}.txt"
    if target.exists() or target.is_symlink():
        raise DataError(f"{target} exists", "choose a new --out directory (a list is never replaced)")
    write_list(target, moved)
    _add_to_manifest(out_root, split, target)
    return target


def _absolute(root: Path, path: str) -> str:
    return path if Path(path).is_absolute() else str(root / path)


def _add_to_manifest(out_root: Path, split: str, target: Path) -> None:
    """Record a list added to a prepared folder in its manifest (count and sha256), rewritten atomically."""
    try:
        manifest = json.loads((out_root / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a hand-written folder without a manifest: the list alone is enough to read it
    count = sum(1 for line in read_lines(target, "list file") if line.strip())
    manifest.setdefault("splits", {})[split] = {"file": target.name, "count": count, "sha256": file_sha256(target)}
    atomic_write_text(out_root / MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
