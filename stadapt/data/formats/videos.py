"""Helpers every reader shares: finding videos on disk, reading annotation text, checking classes.

Readers never open a video; they only decide where each one should be. Finding files goes through one
directory walk per data set (`index_videos`, `VideoIndex`) because stat-ing hundreds of thousands of
paths one by one is slow on network disks, and because download scripts rename folders and change
extensions, so the file stem is the only thing that reliably identifies a video.
Only the standard library is used: preparing data never needs torch or PyAV.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from stadapt.data.formats.base import Listing
from stadapt.data.textfile import read_lines, read_text
from stadapt.errors import DataError, preview

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")
SPLIT_NUMBERS = (1, 2, 3)


# ----------------------------------------------------------------------------------------- paths


def require_dir(root: Path, what: str = "data set root") -> Path:
    """The absolute, resolved root; a DataError when it is not a folder (the usual typo)."""
    path = Path(root).expanduser()
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise DataError(f"{what} {path} {state}", "pass the folder that holds the data set with --root")
    return path.resolve()


@overload
def explicit_path(path: Path | str) -> Path: ...


@overload
def explicit_path(path: None) -> None: ...


def explicit_path(path: Path | str | None) -> Path | None:
    """An option's path made absolute (relative to the working directory) without renaming anything."""
    if path is None:
        return None
    return Path(os.path.abspath(Path(path).expanduser()))


def explicit_dir(path: Path | str | None, option: str) -> Path | None:
    """An option naming a folder: absolute, resolved, and a DataError naming the option if absent."""
    if path is None:
        return None
    folder = Path(path).expanduser()
    if not folder.is_dir():
        state = "is not a directory" if folder.exists() else "does not exist"
        raise DataError(f"{option} {folder} {state}", f"give {option} an existing folder")
    return folder.resolve()


def under_root(root: Path, text: str) -> Path:
    """A path from a list: absolute as written, or relative to the data set root."""
    path = Path(text)
    return path if path.is_absolute() else root / path


def first_dir(candidates: Iterable[Path]) -> Path | None:
    """The first candidate that is an existing folder."""
    return next((c for c in candidates if c.is_dir()), None)


def has_video(folder: Path, exts: Sequence[str] = VIDEO_EXTS) -> bool:
    """Whether a folder directly holds at least one video file (stops at the first)."""
    wanted = {e.lower() for e in exts}
    try:
        with os.scandir(folder) as entries:
            return any(os.path.splitext(e.name)[1].lower() in wanted for e in entries)
    except OSError:
        return False


def is_under(path: Path, folder: Path | None) -> bool:
    """Lexical containment (paths from one walk share the same spelling of the root)."""
    return folder is not None and folder in path.parents


# ----------------------------------------------------------------------------------------- finding videos


def walk_files(root: Path) -> Iterator[tuple[str, str]]:
    """(folder, file name) under root in sorted order, following symlinked folders but never twice
    into the same real folder, so a symlink loop cannot hang the walk."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            dirs[:] = []
            continue
        seen.add(key)
        dirs.sort()
        for name in sorted(files):
            yield folder, name


def index_videos(root: Path, exts: Sequence[str] = VIDEO_EXTS) -> dict[str, list[Path]]:
    """File stem -> video paths under root, from one walk; extensions match case-insensitively."""
    wanted = {e.lower() for e in exts}
    index: dict[str, list[Path]] = {}
    for folder, name in walk_files(root):
        stem, ext = os.path.splitext(name)
        if ext.lower() in wanted:
            index.setdefault(stem, []).append(Path(folder, name))
    return index


def pick(paths: Sequence[Path], *, under: Path | None = None, ext: str | None = None) -> Path:
    """One of several candidates: inside `under` first, then with extension `ext`, then by name."""
    def rank(p: Path) -> tuple[bool, bool, str]:
        return (not is_under(p, under), ext is not None and p.suffix.lower() != ext, str(p))

    return min(paths, key=rank)


class VideoIndex:
    """The videos under one folder, looked up by relative path: exactly, then ignoring case, then
    by file name anywhere, then by stem with any video extension (a converted download)."""

    def __init__(self, folder: Path, exts: Sequence[str] = VIDEO_EXTS) -> None:
        self.folder = folder
        self.exact: dict[str, Path] = {}
        self.lower: dict[str, list[Path]] = {}
        self.names: dict[str, list[Path]] = {}
        self.stems: dict[str, list[Path]] = {}
        wanted = {e.lower() for e in exts}
        for parent, name in walk_files(folder):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in wanted:
                continue
            path = Path(parent, name)
            rel = path.relative_to(folder).as_posix()
            self.exact[rel] = path
            self.lower.setdefault(rel.lower(), []).append(path)
            self.names.setdefault(name.lower(), []).append(path)
            self.stems.setdefault(stem.lower(), []).append(path)

    def __len__(self) -> int:
        return len(self.exact)

    def find(self, rel: str) -> tuple[Path | None, bool]:
        """(path, exact): the video a list names as `rel`, or None; `exact` False when it was found
        only by ignoring case, folder or extension."""
        rel = rel.replace("\\", "/").strip("/")
        if rel in self.exact:
            return self.exact[rel], True
        home = self.folder / os.path.dirname(rel) if "/" in rel else None
        name = os.path.basename(rel)
        stem, ext = os.path.splitext(name)
        for table, key in ((self.lower, rel.lower()), (self.names, name.lower()), (self.stems, stem.lower())):
            if key in table:
                return pick(table[key], under=home, ext=ext.lower() or None), False
        return None, False

    def find_stem(self, stem: str, *, ext: str) -> Path | None:
        """A video by stem only (ids such as SSv2's `78687`), preferring extension `ext`."""
        found = self.stems.get(stem.lower())
        return pick(found, under=None, ext=ext) if found else None


# ----------------------------------------------------------------------------------------- reading text


def read_json(path: Path, what: str, hint: str | None = None) -> Any:
    """A JSON annotation file, with the parse error's line and column in the DataError."""
    text = read_text(path, what, hint)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                        hint) from None


def row_ref(path: Path, line: int, text: str) -> str:
    """How a rejected row is named: `file line N: the row`, enough to find it again."""
    return f"{Path(path).name} line {line}: {text.strip()}"


# ----------------------------------------------------------------------------------------- classes


def check_class_names(names: Iterable[str], where: str) -> list[str]:
    """Stripped class names; blank, multi-line or repeated names are errors (they would shift labels)."""
    out = [str(n).strip() for n in names]
    bad = [repr(n) for n in out if not n or "\n" in n or "\r" in n]
    if bad:
        raise DataError(f"{where} has blank or multi-line class names: {preview(bad)}",
                        "fix the class names there")
    seen: set[str] = set()
    dupes = sorted({n for n in out if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dupes:
        raise DataError(f"{where} repeats class names: {preview(dupes)}", "each class must appear once")
    return out


def read_class_names(path: Path, option: str = "--classes-file") -> list[str]:
    """A class file, one name a line in index order; trailing blank lines are ignored, inner ones
    are errors because they would shift every later index."""
    lines = [line.strip() for line in read_lines(path, "class file", f"check {option}")]
    while lines and not lines[-1]:
        lines.pop()
    blank = [str(n) for n, line in enumerate(lines, 1) if not line]
    if blank:
        raise DataError(f"class file {path} has blank lines (line {preview(blank)})",
                        "remove them: the class index is the line number")
    if not lines:
        raise DataError(f"class file {path} is empty", "write one class name a line")
    return check_class_names(lines, f"class file {path}")


def numbered_classes(count: int, min_width: int = 1) -> list[str]:
    """`class_0`.. names when only indices are known; zero-padded so they also sort in index order."""
    width = max(min_width, len(str(max(count - 1, 0))))
    return [f"class_{i:0{width}d}" for i in range(count)]


def check_split_number(split: int, option: str = "--split") -> int:
    """The official split number (1, 2 or 3) of UCF-101 and HMDB-51."""
    if isinstance(split, bool) or not isinstance(split, int) or split not in SPLIT_NUMBERS:
        raise DataError(f"split {split!r} does not exist", f"{option} must be 1, 2 or 3 (the official splits)")
    return split


def empty_classes(classes: Sequence[str], splits: dict[str, list[tuple[Path, int]]]) -> dict[str, list[str]]:
    """Per split, the classes without a single video there (they keep their index anyway)."""
    out: dict[str, list[str]] = {}
    for split, rows in splits.items():
        used = {label for _, label in rows}
        missing = [name for i, name in enumerate(classes) if i not in used]
        if missing:
            out[split] = missing
    return out


def make_listing(name: str, classes: list[str], splits: dict[str, list[tuple[Path, int]]],
                 rejected: list[tuple[str, str]], source: str, details: dict[str, Any]) -> Listing:
    """The Listing with the checks and facts every reader shares (class names, empty classes)."""
    classes = check_class_names(classes, source)
    details = {**details, "empty_classes": empty_classes(classes, splits),
               "counts": {split: len(rows) for split, rows in splits.items()}, "rejected": len(rejected)}
    return Listing(name=name, classes=classes, splits=splits, rejected=rejected, source=source, details=details)
