"""Something-Something-v2 from its JSON annotations (labels.json, train.json, validation.json).

The class of a video is its template with the `[`/`]` brackets removed; labels.json gives each
template's index as a string. Videos are `{id}.webm`, found by id over one walk of the video folder
because some mirrors re-encode them to other containers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stadapt.data.formats.base import Listing
from stadapt.data.formats.videos import (
    VideoIndex,
    explicit_dir,
    explicit_path,
    first_dir,
    has_video,
    make_listing,
    read_json,
    require_dir,
)
from stadapt.errors import DataError, preview

PREFIX = "something-something-v2-"
FILES = {"labels": "labels.json", "train": "train.json", "val": "validation.json"}
VIDEO_DIRS = ("20bn-something-something-v2", "videos")
HINT = "pass --labels FILE, --train FILE and --val FILE (the JSON files of the SSv2 release)"


def normalize(template: str) -> str:
    """A template as labels.json spells it: brackets removed, whitespace collapsed."""
    return " ".join(template.replace("[", "").replace("]", "").split())


def _find(root: Path, key: str) -> tuple[Path | None, list[Path]]:
    """(the annotation file, the places looked): root then root/labels, plain or prefixed names."""
    names = (FILES[key], PREFIX + FILES[key])
    looked = [folder / name for folder in (root, root / "labels") for name in names]
    return next((p for p in looked if p.is_file()), None), looked


def read_labels(path: Path) -> list[str]:
    """Class names in index order from labels.json (`{"template": "0", ...}`; a plain list also works)."""
    data = read_json(path, "SSv2 labels file", HINT)
    if isinstance(data, list):
        return [str(name) for name in data]
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path} is not an SSv2 labels file", 'expected {"Template name": "0", ...}')
    indexed: dict[int, str] = {}
    for name, value in data.items():
        try:
            index = int(str(value).strip())
        except ValueError:
            raise DataError(f"{path}: class {name!r} has index {value!r}, not an integer", HINT) from None
        if index in indexed:
            raise DataError(f"{path} gives index {index} to both {indexed[index]!r} and {name!r}", HINT)
        indexed[index] = name
    if sorted(indexed) != list(range(len(indexed))):
        gaps = sorted(set(range(len(indexed))) - set(indexed))
        raise DataError(f"{path}: class indices are not 0..{len(indexed) - 1} "
                        f"(missing {preview([str(g) for g in gaps])})", HINT)
    return [indexed[i] for i in range(len(indexed))]


def _lookup(classes: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Template -> index, exact and case-folded (the fallback tolerates a capitalisation slip)."""
    exact = {normalize(name): i for i, name in enumerate(classes)}
    folded = {key.casefold(): i for key, i in exact.items()}
    return exact, folded


def _video_dir(root: Path, videos: Path | None) -> Path:
    """The given folder, else the first of 20bn-something-something-v2/, videos/, root holding videos."""
    if videos is not None:
        return videos
    candidates = [root / d for d in VIDEO_DIRS] + [root]
    return next((c for c in candidates if c.is_dir() and has_video(c)), None) or first_dir(candidates) or root


def _read_split(path: Path, lookup: tuple[dict[str, int], dict[str, int]], labels_name: str,
                index: VideoIndex) -> tuple[list[tuple[Path, int]], list[tuple[str, str]]]:
    """One split's rows; items without an id or with an unknown template are rejected."""
    items = read_json(path, "SSv2 annotation file", HINT)
    if not isinstance(items, list):
        raise DataError(f"{path} is not an SSv2 annotation list", 'expected [{"id": ..., "template": ...}, ...]')
    rows: list[tuple[Path, int]] = []
    rejected: list[tuple[str, str]] = []
    for n, item in enumerate(items):
        ref = f"{path.name} item {n}: {_short(item)}"
        video_id = str(item.get("id", "")).strip() if isinstance(item, dict) else ""
        template = item.get("template") if isinstance(item, dict) else None
        if not video_id or not isinstance(template, str):
            rejected.append((ref, "needs an `id` and a `template`"))
            continue
        key = normalize(template)
        label = lookup[0].get(key, lookup[1].get(key.casefold()))
        if label is None:
            rejected.append((ref, f"template {template!r} is not in {labels_name}"))
            continue
        found = index.find_stem(video_id, ext=".webm")
        rows.append((found or index.folder / f"{video_id}.webm", label))
    return rows, rejected


def _short(item: Any) -> str:
    """An item as one short line for the quarantine."""
    text = json.dumps(item, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def read_ssv2(root: Path, *, labels: Path | None = None, train: Path | None = None, val: Path | None = None,
              videos: Path | None = None) -> Listing:
    """Something-Something-v2: JSON files in root or root/labels (plain or `something-something-v2-`
    names), videos in root/20bn-something-something-v2/, root/videos/ or root."""
    root = require_dir(root)
    labels_path, looked = (explicit_path(labels), []) if labels is not None else _find(root, "labels")
    if labels_path is None:
        raise DataError(f"no SSv2 labels.json found: looked for {preview([str(p) for p in looked])}",
                        "pass --labels FILE (labels.json of the SSv2 release)")
    files: dict[str, Path] = {}
    looked_splits: list[Path] = []
    for split, given in (("train", train), ("val", val)):
        path, tried = (explicit_path(given), []) if given is not None else _find(root, split)
        looked_splits += tried
        if path is not None:
            files[split] = path
    if not files:
        raise DataError(f"no SSv2 train.json / validation.json found: looked for "
                        f"{preview([str(p) for p in looked_splits])}", "pass --train FILE and --val FILE")
    classes = read_labels(labels_path)
    lookup = _lookup(classes)
    index = VideoIndex(_video_dir(root, explicit_dir(videos, "--videos")))
    splits: dict[str, list[tuple[Path, int]]] = {}
    rejected: list[tuple[str, str]] = []
    for split, path in files.items():
        splits[split], bad = _read_split(path, lookup, labels_path.name, index)
        rejected += bad
    details = {"annotations": [str(labels_path), *(str(p) for p in files.values())],
               "videos": str(index.folder), "videos_found": len(index)}
    source = f"Something-Something-v2 annotations in {labels_path.parent}"
    return make_listing("ssv2", classes, splits, rejected, source, details)
