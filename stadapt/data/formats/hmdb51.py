"""HMDB-51 from the official `testTrainMulti_7030_splits/` (`<class>_test_split<N>.txt` files).

Each line is `video.avi 1|2|0` (train, test, unused) with trailing spaces; video names contain `#`,
`&`, `(`, `!`, `;`, quotes and spaces, so a line is split only on its last whitespace.
"""

from __future__ import annotations

import re
from pathlib import Path

from stadapt.data.formats.base import Listing
from stadapt.data.formats.videos import (
    VideoIndex,
    check_split_number,
    explicit_dir,
    first_dir,
    make_listing,
    require_dir,
    row_ref,
)
from stadapt.data.textfile import read_lines
from stadapt.errors import DataError, preview

SPLITS_DIR = "testTrainMulti_7030_splits"
VIDEO_DIRS = ("hmdb51_org", "hmdb51", "videos")
_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>\d+)\.txt$")
_FLAGS = {"1": "train", "2": "val"}
HINT = "pass --splits-dir DIR (the extracted testTrainMulti_7030_splits folder)"


def split_files(folder: Path) -> dict[int, dict[str, Path]]:
    """split number -> class name -> its `<class>_test_split<N>.txt` in one folder."""
    found: dict[int, dict[str, Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = _SPLIT_FILE.match(path.name)
            if match and path.is_file():
                found.setdefault(int(match["n"]), {})[match["cls"].strip()] = path
    return found


def find_splits_dir(root: Path) -> tuple[Path | None, list[Path]]:
    """(folder holding the split files, folders looked at): root/testTrainMulti_7030_splits, root, beside root."""
    looked = [root / SPLITS_DIR, root, root.parent / SPLITS_DIR]
    return next((d for d in looked if split_files(d)), None), looked


def _video_dir(root: Path, classes: list[str]) -> Path:
    """The folder holding the per-class folders: hmdb51_org/, hmdb51/, videos/ or root, in that order."""
    candidates = [root / d for d in VIDEO_DIRS]
    with_classes = [c for c in candidates if c.is_dir() and any((c / name).is_dir() for name in classes)]
    return (with_classes or [first_dir(candidates) or root])[0]


def _read_file(path: Path, label: int, index: VideoIndex, cls: str) -> tuple[
        dict[str, list[tuple[Path, int]]], list[tuple[str, str]], int]:
    """(rows per split, rejected rows, unused rows) of one class's split file."""
    rows: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    rejected: list[tuple[str, str]] = []
    unused = 0
    for n, raw in enumerate(read_lines(path, "HMDB-51 split file", HINT), 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            rejected.append((row_ref(path, n, line), "expected `video.avi 0|1|2` (unused, train, test)"))
            continue
        if parts[1] == "0":
            unused += 1
            continue
        found, _ = index.find(f"{cls}/{parts[0]}")
        rows[_FLAGS[parts[1]]].append((found or index.folder / cls / parts[0], label))
    return rows, rejected, unused


def read_hmdb51(root: Path, *, split: int = 1, splits_dir: Path | None = None,
                videos: Path | None = None) -> Listing:
    """HMDB-51, official split `split` (1-3): `train` = flag 1, `val` = flag 2 (the test split)."""
    split = check_split_number(split)
    root = require_dir(root)
    folder = explicit_dir(splits_dir, "--splits-dir")
    if folder is None:
        folder, looked = find_splits_dir(root)
        if folder is None:
            raise DataError(f"no HMDB-51 <class>_test_split<N>.txt files found: looked in "
                            f"{preview([str(p) for p in looked])}", HINT)
    files = split_files(folder)
    if split not in files:
        have = ", ".join(str(n) for n in sorted(files)) or "none"
        raise DataError(f"no HMDB-51 split-{split} files (<class>_test_split{split}.txt) in {folder}",
                        f"splits there: {have}; choose --split from them or {HINT}")
    classes = sorted({cls for by_class in files.values() for cls in by_class})
    video_dir = explicit_dir(videos, "--videos") or _video_dir(root, classes)
    index = VideoIndex(video_dir)
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    rejected: list[tuple[str, str]] = []
    unused = 0
    for label, cls in enumerate(classes):
        if cls not in files[split]:
            continue
        rows, bad, skipped = _read_file(files[split][cls], label, index, cls)
        for name in splits:
            splits[name] += rows[name]
        rejected += bad
        unused += skipped
    details = {"split": split, "annotations": [str(files[split][c]) for c in classes if c in files[split]],
               "classes_without_split_file": [c for c in classes if c not in files[split]],
               "unused": unused, "videos": str(video_dir), "videos_found": len(index)}
    return make_listing("hmdb51", classes, splits, rejected, f"HMDB-51 split {split} from {folder}", details)
