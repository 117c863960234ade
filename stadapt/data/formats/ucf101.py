"""UCF-101 from the official `ucfTrainTestlist/` (classInd.txt, trainlist0N.txt, testlist0N.txt).

The lists and the files disagree on case (classInd says `HandstandPushups`, the files are
`v_HandStandPushups_...`), so a video that is not at its exact path is looked up ignoring case.
"""

from __future__ import annotations

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

SPLITS_DIR = "ucfTrainTestlist"
VIDEO_DIRS = ("UCF-101", "UCF101")
HINT = "pass --splits-dir DIR (the extracted ucfTrainTestlist folder)"


def find_splits_dir(root: Path) -> tuple[Path | None, list[Path]]:
    """(folder holding classInd.txt, folders looked at): root/ucfTrainTestlist, root, beside root."""
    looked = [root / SPLITS_DIR, root, root.parent / SPLITS_DIR]
    return next((d for d in looked if (d / "classInd.txt").is_file()), None), looked


def read_class_index(path: Path) -> list[str]:
    """Class names in index order from classInd.txt (`1 ApplyEyeMakeup`, 1-based)."""
    named: dict[int, str] = {}
    for n, line in enumerate(read_lines(path, "UCF-101 class index", HINT), 1):
        parts = line.split(None, 1)
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path} line {n} is not `index ClassName`: {line.strip()!r}", HINT)
        if int(parts[0]) in named:
            raise DataError(f"{path} line {n} repeats index {parts[0]}", HINT)
        named[int(parts[0])] = parts[1].strip()
    if sorted(named) != list(range(1, len(named) + 1)):
        raise DataError(f"{path} does not number its classes 1..{len(named)}", HINT)
    return [named[i] for i in range(1, len(named) + 1)]


def folder_class(rel: str, folded: dict[str, int]) -> int | None:
    """The 0-based class of a list path: its folder, else the `v_<Class>_gXX_cYY` file name, ignoring case."""
    parts = rel.replace("\\", "/").split("/")
    if len(parts) > 1 and parts[-2].lower() in folded:
        return folded[parts[-2].lower()]
    name = parts[-1]
    if name.startswith("v_") and name.count("_") >= 3:
        return folded.get(name[2:].rsplit("_", 2)[0].lower())
    return None


def _row(line: str, classes: list[str], folded: dict[str, int]) -> tuple[str, int] | str:
    """(relative path, 0-based label) of a list line, or the reason it is rejected."""
    parts = line.split()
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        return "expected `Class/v_Class_gXX_cYY.avi` optionally followed by a 1-based label"
    rel = parts[0]
    found = folder_class(rel, folded)
    if found is None:
        return f"folder of {rel!r} is not a class in classInd.txt"
    if len(parts) == 2:
        label = int(parts[1])
        if not 1 <= label <= len(classes):
            return f"label {label} is not in 1..{len(classes)}"
        if label - 1 != found:
            return f"label {label} ({classes[label - 1]}) disagrees with the folder's class {classes[found]}"
    return rel, found


def _read_list(path: Path, classes: list[str], index: VideoIndex) -> tuple[
        list[tuple[Path, int]], list[tuple[str, str]], int]:
    """(rows, rejected rows, rows found only by ignoring case) of a trainlist or testlist."""
    folded = {name.lower(): i for i, name in enumerate(classes)}
    rows: list[tuple[Path, int]] = []
    rejected: list[tuple[str, str]] = []
    inexact = 0
    for n, line in enumerate(read_lines(path, "UCF-101 list", HINT), 1):
        if not line.strip():
            continue
        ref = row_ref(path, n, line)
        parsed = _row(line, classes, folded)
        if isinstance(parsed, str):
            rejected.append((ref, parsed))
            continue
        rel, label = parsed
        found, exact = index.find(rel)
        inexact += found is not None and not exact
        rows.append((found or index.folder / rel, label))
    return rows, rejected, inexact


def read_ucf101(root: Path, *, split: int = 1, splits_dir: Path | None = None,
                videos: Path | None = None) -> Listing:
    """UCF-101, official split `split` (1-3): `train` = trainlist0N, `val` = testlist0N."""
    split = check_split_number(split)
    root = require_dir(root)
    lists = explicit_dir(splits_dir, "--splits-dir")
    if lists is None:
        lists, looked = find_splits_dir(root)
        if lists is None:
            raise DataError(f"no UCF-101 classInd.txt found: looked in {preview([str(p) for p in looked])}", HINT)
    classes = read_class_index(lists / "classInd.txt")
    video_dir = explicit_dir(videos, "--videos") or first_dir(root / d for d in VIDEO_DIRS) or root
    index = VideoIndex(video_dir)
    files = {"train": lists / f"trainlist{split:02d}.txt", "val": lists / f"testlist{split:02d}.txt"}
    splits: dict[str, list[tuple[Path, int]]] = {}
    rejected: list[tuple[str, str]] = []
    inexact = 0
    for name, path in files.items():
        splits[name], bad, count = _read_list(path, classes, index)
        rejected += bad
        inexact += count
    details = {"split": split, "annotations": [str(lists / "classInd.txt"), *(str(p) for p in files.values())],
               "videos": str(video_dir), "videos_found": len(index), "found_ignoring_case": inexact}
    return make_listing("ucf101", classes, splits, rejected, f"UCF-101 split {split} from {lists}", details)
