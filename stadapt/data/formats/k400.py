"""Kinetics-400 from its official annotation CSVs, or from the reference implementation's lists.

Videos are found by file stem (`{youtube_id}_{start:06d}_{end:06d}`) over one walk of the root,
because download scripts disagree on class folder names (spaces, underscores, parentheses) and on
containers (.mp4, .mkv, .webm); the stem is the only stable name.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from stadapt.data.formats.base import Listing
from stadapt.data.formats.listfile import Pair, is_integer, read_pairs
from stadapt.data.formats.videos import (
    explicit_dir,
    explicit_path,
    has_video,
    index_videos,
    make_listing,
    numbered_classes,
    pick,
    read_class_names,
    require_dir,
    row_ref,
    under_root,
)
from stadapt.data.textfile import read_text
from stadapt.errors import DataError, preview

SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "validate", "validation"), "test": ("test", "testing")}
_ALIASES = {alias: split for split, aliases in SPLIT_DIRS.items() for alias in aliases}
_CSV_NAME = re.compile(r"^(?:k(?:inetics)?[-_]?(?:400)?[-_])?(" + "|".join(_ALIASES) + r")$", re.IGNORECASE)
_NEEDED = ("youtube_id", "time_start", "time_end")
HINT = ("pass --annotations DIR (the folder with the official train.csv / val.csv) or --train-list FILE / "
        "--val-list FILE (`path label` lists)")


@dataclass(frozen=True)
class _Clip:
    """One labelled CSV row: its class name and the video stem it names."""

    ref: str
    label: str
    stem: str


# ----------------------------------------------------------------------------------------- CSVs


def _csv_split(path: Path) -> tuple[str, int] | None:
    """(split, preference) for a file named like a Kinetics split CSV, else None."""
    match = _CSV_NAME.match(path.stem)
    if path.suffix.lower() != ".csv" or not match:
        return None
    alias = match.group(1).lower()
    split = _ALIASES[alias]
    return split, SPLIT_DIRS[split].index(alias)


def find_csvs(folder: Path) -> dict[str, Path]:
    """split -> CSV in one folder (`val.csv` over `validate.csv`, shorter names first)."""
    found: dict[str, tuple[int, int, str, Path]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        hit = _csv_split(path)
        if hit:
            rank = (hit[1], len(path.name), path.name, path)
            found[hit[0]] = min(found.get(hit[0], rank), rank)
    return {split: found[split][3] for split in SPLIT_DIRS if split in found}


def _discover_csvs(root: Path, annotations: Path | None) -> tuple[dict[str, Path], list[Path]]:
    """(CSVs found, folders looked in): the given folder, else root/annotations then root."""
    folders = [annotations] if annotations else [root / "annotations", root]
    for folder in folders:
        if folder.is_dir():
            csvs = find_csvs(folder)
            if csvs:
                return csvs, folders
    return {}, folders


def _whole(text: str) -> int | None:
    """A CSV time stamp (`14` or `14.0`) as whole seconds, or None when it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def _clip(ref: str, cells: dict[str, str]) -> tuple[_Clip | None, str]:
    """A labelled row as a clip, or (None, why it cannot be one)."""
    label, youtube_id = cells["label"].strip(), cells["youtube_id"].strip()
    if not label:
        return None, "empty label"
    if not youtube_id:
        return None, "empty youtube_id"
    times = [_whole(cells[key].strip()) for key in ("time_start", "time_end")]
    for key, value in zip(("time_start", "time_end"), times, strict=True):
        if value is None:
            return None, f"{key} {cells[key].strip()!r} is not a whole number of seconds"
    return _Clip(ref, label, f"{youtube_id}_{times[0]:06d}_{times[1]:06d}"), ""


def read_csv(path: Path) -> tuple[list[_Clip] | None, list[tuple[str, str]]]:
    """(clips, rejected rows) of one annotation CSV; clips is None for a CSV without labels (no
    label column, or one that is empty on every row)."""
    reader = csv.reader(io.StringIO(read_text(path, "Kinetics annotation CSV", HINT), newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [key for key in _NEEDED if key not in header]
    if missing:
        raise DataError(f"{path} is not a Kinetics annotation CSV: its header lacks {', '.join(missing)}",
                        f"expected `label,youtube_id,time_start,time_end,split`; {HINT}")
    if "label" not in header:
        return None, []
    clips: list[_Clip] = []
    rejected: list[tuple[str, str]] = []
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        ref = row_ref(path, reader.line_num, ",".join(row))
        if len(row) != len(header):
            rejected.append((ref, f"has {len(row)} fields, the header has {len(header)}"))
            continue
        clip, why = _clip(ref, dict(zip(header, row, strict=True)))
        if clip:
            clips.append(clip)
        else:
            rejected.append((ref, why))
    if not clips and rejected and all(why == "empty label" for _, why in rejected):
        return None, []  # a label column left blank throughout: an unlabelled (test) release
    return clips, rejected


# ----------------------------------------------------------------------------------------- videos


def split_dir(root: Path, split: str) -> Path:
    """The split's own video folder (`val` or `validate`...), or `root/<split>` when none exists."""
    names = SPLIT_DIRS.get(split, (split,))
    return next((root / n for n in names if (root / n).is_dir()), root / names[0])


def _video_path(index: dict[str, list[Path]], stem: str, home: Path) -> Path:
    """The downloaded file for a stem, preferring the split's folder and .mp4; else the expected path."""
    found = index.get(stem)
    return pick(found, under=home, ext=".mp4") if found else home / f"{stem}.mp4"


def _class_folders(root: Path) -> list[str]:
    """Sorted names of per-class folders (folders directly holding videos) under the split folders
    and the root: the class names some download scripts leave behind."""
    parents = [root, *(root / d for dirs in SPLIT_DIRS.values() for d in dirs)]
    skip = {d for dirs in SPLIT_DIRS.values() for d in dirs}
    names = {child.name.strip() for parent in parents if parent.is_dir() for child in parent.iterdir()
             if child.is_dir() and not (parent == root and child.name in skip) and has_video(child)}
    return sorted(n for n in names if n)


# ----------------------------------------------------------------------------------------- modes


def _from_csvs(root: Path, csvs: dict[str, Path], names: list[str] | None) -> tuple[
        list[str], dict[str, list[tuple[Path, int]]], list[tuple[str, str]], dict]:
    """Rows of the labelled CSVs; unlabelled ones (some test.csv releases) are skipped and noted."""
    parsed: dict[str, list[_Clip]] = {}
    rejected: list[tuple[str, str]] = []
    unlabelled: list[str] = []
    for split in ("train", "val", "test"):
        if split in csvs:
            clips, bad = read_csv(csvs[split])
            rejected += bad
            if clips is None:
                unlabelled.append(split)
            else:
                parsed[split] = clips
    if not parsed:
        raise DataError(f"the Kinetics CSVs found ({', '.join(str(p) for p in csvs.values())}) have no label column",
                        HINT)
    classes = names if names is not None else sorted({c.label for clips in parsed.values() for c in clips})
    lookup = {name: i for i, name in enumerate(classes)}
    index = index_videos(root)
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split, clips in parsed.items():
        home = split_dir(root, split)
        splits[split] = []
        for c in clips:
            if c.label in lookup:
                splits[split].append((_video_path(index, c.stem, home), lookup[c.label]))
            else:
                rejected.append((c.ref, f"class {c.label!r} is not in the class file"))
    facts = {"unlabelled_splits": unlabelled, "videos_found": sum(len(v) for v in index.values())}
    return classes, splits, rejected, facts


def _list_classes(root: Path, classes_file: Path | None, csvs: dict[str, Path], top: int) -> tuple[list[str], str]:
    """(class names, where they came from) for index-labelled lists."""
    if classes_file is not None:
        return read_class_names(classes_file), "classes_file"
    if csvs:
        labels = {c.label for path in csvs.values() for c in (read_csv(path)[0] or [])}
        if labels:
            return sorted(labels), "annotations"
    folders = _class_folders(root)
    if folders and len(folders) == top + 1:
        return folders, "class_folders"
    return numbered_classes(top + 1, min_width=3), "numbered"


def _from_lists(root: Path, lists: dict[str, Path], classes_file: Path | None, csvs: dict[str, Path]) -> tuple[
        list[str], dict[str, list[tuple[Path, int]]], list[tuple[str, str]], dict]:
    """Rows of `path label` lists with integer labels (the reference implementation's format)."""
    rejected: list[tuple[str, str]] = []
    parsed: dict[str, list[Pair]] = {}
    for split, path in lists.items():
        option = f"--{split}-list"
        pairs, bad, _ = read_pairs(path, f"{split} list", f"check {option}")
        rejected += bad
        parsed[split] = []
        for p in pairs:
            if is_integer(p.label) and int(p.label) >= 0:
                parsed[split].append(p)
            else:
                rejected.append((p.ref, f"label {p.label!r} is not a class index (a non-negative integer)"))
    top = max((int(p.label) for pairs in parsed.values() for p in pairs), default=-1)
    classes, origin = _list_classes(root, classes_file, csvs, top)
    if not classes:
        raise DataError(f"the lists {', '.join(str(p) for p in lists.values())} have no usable rows",
                        "each line must be `path label` with an integer label; or pass --classes-file")
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split, pairs in parsed.items():
        splits[split] = []
        for p in pairs:
            if int(p.label) < len(classes):
                splits[split].append((under_root(root, p.path), int(p.label)))
            else:
                rejected.append((p.ref, f"label {p.label} is not an index of the {len(classes)} classes ({origin})"))
    return classes, splits, rejected, {"classes_from": origin}


def read_k400(root: Path, *, annotations: Path | None = None, train_list: Path | None = None,
              val_list: Path | None = None, classes_file: Path | None = None) -> Listing:
    """Kinetics-400: the CVDF layout (annotations/ + train/ val/ test/) or per-class folders, found
    from `root` alone; `path label` lists when `train_list` / `val_list` are given."""
    root = require_dir(root)
    annotations = explicit_dir(annotations, "--annotations")
    classes_file = explicit_path(classes_file)
    lists = {s: explicit_path(p) for s, p in (("train", train_list), ("val", val_list)) if p is not None}
    csvs, looked = _discover_csvs(root, annotations)
    names = read_class_names(classes_file) if classes_file is not None and not lists else None
    if lists:
        classes, splits, rejected, facts = _from_lists(root, lists, classes_file, csvs)
        used = [*lists.values(), *([classes_file] if facts["classes_from"] == "classes_file" else []),
                *(csvs.values() if facts["classes_from"] == "annotations" else [])]
        source = "Kinetics-400 lists " + ", ".join(str(p) for p in lists.values())
    elif csvs:
        classes, splits, rejected, facts = _from_csvs(root, csvs, names)
        used = [*csvs.values(), *([classes_file] if classes_file else [])]
        source = f"Kinetics-400 annotations in {next(iter(csvs.values())).parent}"
    else:
        places = [f"{folder}/{{train,val,test}}.csv" for folder in looked]
        raise DataError(f"no Kinetics-400 annotations found: looked for {preview(places, sep='; ')} "
                        f"(also kinetics_train.csv, kinetics-400_train.csv, validate.csv)", HINT)
    details = {"annotations": [str(p) for p in used], "layout": "lists" if lists else "csv", **facts}
    return make_listing("k400", classes, splits, rejected, source, details)
