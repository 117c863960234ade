"""A user's own lists: `path label` lines or a `path,label` CSV, labels as indices or class names.

The same parser reads the reference implementation's Kinetics lists (`read_pairs`), so both accept
the same quirks: spaces in paths (the label is the last field, or the longest class name of the class
file that ends the line, so names may hold spaces too), CRLF, a BOM, comments.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stadapt.data.formats.base import Listing
from stadapt.data.formats.videos import (
    VIDEO_EXTS,
    explicit_path,
    make_listing,
    numbered_classes,
    read_class_names,
    require_dir,
    row_ref,
    under_root,
)
from stadapt.data.textfile import read_lines, read_text
from stadapt.errors import DataError

_PATH_HEADERS = {"path", "video", "video_path", "videopath", "file", "filename", "file_name", "filepath"}
_LABEL_HEADERS = {"label", "labels", "class", "class_name", "classname", "class_id", "label_id", "category"}
_INTEGER = re.compile(r"[+-]?\d+")
LIST_HINT = "pass --train FILE and/or --val FILE: `path label` lines, or a `path,label` CSV"


@dataclass(frozen=True)
class Pair:
    """One list row before its label is interpreted; `ref` names it for the quarantine."""

    ref: str
    path: str
    label: str


def is_integer(text: str) -> bool:
    """Whether a label is a class index rather than a class name."""
    return bool(_INTEGER.fullmatch(text))


def _is_comment(text: str) -> bool:
    """`#` starts a comment, except before a video file name: HMDB-51 has files like `#20_Rhume...avi`."""
    if not text.startswith("#"):
        return False
    head = text.rsplit(None, 1)[0] if len(text.split()) > 1 else text
    return os.path.splitext(head)[1].lower() not in VIDEO_EXTS


def _name_table(names: Sequence[str] | None) -> tuple[dict[str, str], int]:
    """Known class names keyed by their words joined with one space, and the most words in one name."""
    table: dict[str, str] = {}
    for name in names or ():
        table.setdefault(" ".join(name.split()), name)
    return table, max((key.count(" ") + 1 for key in table), default=0)


def _split_label(line: str, table: dict[str, str], most_words: int) -> tuple[str, str] | None:
    """(path, label) of a stripped `path label` line: the longest known class name the line ends with
    (names such as "moving right" hold spaces; so may paths), else the last field; None without a label."""
    if most_words > 1:
        starts = [m.start() for m in re.finditer(r"\S+", line)]
        for words in range(min(most_words, len(starts) - 1), 0, -1):
            name = table.get(" ".join(line[starts[-words]:].split()))
            if name is not None:
                return line[:starts[-words]].rstrip(), name
    parts = line.rsplit(None, 1)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _read_text_pairs(path: Path, what: str, hint: str,
                     names: Sequence[str] | None = None) -> tuple[list[Pair], list[tuple[str, str]]]:
    """`path label` lines; the label is a class name of `names` that ends the line (the longest), else
    the last whitespace-separated field, so paths keep spaces."""
    table, most_words = _name_table(names)
    pairs: list[Pair] = []
    rejected: list[tuple[str, str]] = []
    for n, raw in enumerate(read_lines(path, what, hint), 1):
        line = raw.strip()
        if not line or _is_comment(line):
            continue
        parts = _split_label(line, table, most_words)
        if parts is None:
            rejected.append((row_ref(path, n, line), "no label: expected `path label`"))
        else:
            pairs.append(Pair(row_ref(path, n, line), parts[0], parts[1]))
    return pairs, rejected


def _header_columns(cells: list[str]) -> tuple[int, int] | None:
    """(path column, label column) when the row is a header, else None."""
    lowered = [c.lower() for c in cells]
    label = next((i for i, c in enumerate(lowered) if c in _LABEL_HEADERS), None)
    if label is None:
        return None
    path = next((i for i, c in enumerate(lowered) if c in _PATH_HEADERS), None)
    if path is None and len(cells) != 2:
        return None
    return (path if path is not None else 1 - label), label


def _read_csv_pairs(path: Path, what: str, hint: str) -> tuple[list[Pair], list[tuple[str, str]], bool]:
    """`path,label` CSV rows (quoting per the csv module), with or without a header row."""
    reader = csv.reader(io.StringIO(read_text(path, what, hint), newline=""))
    pairs: list[Pair] = []
    rejected: list[tuple[str, str]] = []
    columns: tuple[int, int] | None = None
    first = True
    for row in reader:
        cells = [c.strip() for c in row]
        if not any(cells) or _is_comment(cells[0]):
            continue
        if first:
            first = False
            columns = _header_columns(cells)
            if columns:
                continue
        ref = row_ref(path, reader.line_num, ",".join(row))
        if columns:
            if max(columns) >= len(cells):
                rejected.append((ref, f"has {len(cells)} field(s), fewer than the header"))
            else:
                pairs.append(Pair(ref, cells[columns[0]], cells[columns[1]]))
        elif len(cells) != 2:
            rejected.append((ref, f"has {len(cells)} field(s); expected `path,label`"))
        else:
            pairs.append(Pair(ref, cells[0], cells[1]))
    return pairs, rejected, columns is not None


def read_pairs(path: Path, what: str, hint: str,
               names: Sequence[str] | None = None) -> tuple[list[Pair], list[tuple[str, str]], bool]:
    """(rows, rejected rows, had a CSV header) of a list file; `.csv` files are read as CSV. `names`
    (the class file's) lets a `path label` line end with a class name that holds spaces."""
    if Path(path).suffix.lower() == ".csv":
        return _read_csv_pairs(path, what, hint)
    pairs, rejected = _read_text_pairs(path, what, hint, names)
    return pairs, rejected, False


def _label_kind(parsed: dict[str, list[Pair]]) -> str | None:
    """"index" or "name" for the whole data set; mixing both is ambiguous, so an error."""
    first_int = next((p for rows in parsed.values() for p in rows if is_integer(p.label)), None)
    first_name = next((p for rows in parsed.values() for p in rows if not is_integer(p.label)), None)
    if first_int and first_name:
        raise DataError(f"the lists mix integer labels ({first_int.ref}) and class names ({first_name.ref})",
                        "use class indices everywhere or class names everywhere")
    return "index" if first_int else "name" if first_name else None


def _index_rows(parsed: dict[str, list[Pair]], root: Path, names: list[str] | None,
                rejected: list[tuple[str, str]]) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Rows with integer labels; class names from the class file or numbered up to the max label."""
    limit = len(names) if names is not None else None
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split, pairs in parsed.items():
        splits[split] = []
        for p in pairs:
            label = int(p.label)
            if label < 0:
                rejected.append((p.ref, f"negative label {label}"))
            elif limit is not None and label >= limit:
                rejected.append((p.ref, f"label {label} is not an index of the {limit} classes in the class file"))
            else:
                splits[split].append((under_root(root, p.path), label))
    if names is None:
        top = max((label for rows in splits.values() for _, label in rows), default=-1)
        names = numbered_classes(top + 1)
    return names, splits


def _name_rows(parsed: dict[str, list[Pair]], root: Path, names: list[str] | None,
               rejected: list[tuple[str, str]]) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Rows with class-name labels; the class file fixes the order, else the sorted names."""
    if names is None:
        names = sorted({p.label for pairs in parsed.values() for p in pairs})
    index = {name: i for i, name in enumerate(names)}
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split, pairs in parsed.items():
        splits[split] = []
        for p in pairs:
            if p.label in index:
                splits[split].append((under_root(root, p.path), index[p.label]))
            else:
                rejected.append((p.ref, f"class {p.label!r} is not in the class file"))
    return names, splits


def read_list(root: Path, *, train: Path | None = None, val: Path | None = None, test: Path | None = None,
              classes_file: Path | None = None) -> Listing:
    """A data set described by the user's own lists; relative video paths are relative to `root`."""
    root = require_dir(root)
    given = {s: explicit_path(p) for s, p in (("train", train), ("val", val), ("test", test)) if p is not None}
    if not given:
        raise DataError("no list file given", LIST_HINT)
    names = read_class_names(explicit_path(classes_file)) if classes_file is not None else None
    parsed: dict[str, list[Pair]] = {}
    rejected: list[tuple[str, str]] = []
    headers: dict[str, bool] = {}
    for split, file in given.items():
        pairs, bad, headers[split] = read_pairs(file, f"{split} list", f"check --{split}", names)
        parsed[split] = pairs
        rejected += bad
    kind = _label_kind(parsed)
    rows = _name_rows if kind == "name" else _index_rows
    classes, splits = rows(parsed, root, names, rejected)
    if not classes:
        raise DataError(f"the lists {', '.join(str(f) for f in given.values())} have no usable rows",
                        "each row needs `path label`; pass --classes-file to name the classes")
    source = "lists " + ", ".join(f"{split}={file}" for split, file in given.items())
    details = {
        "annotations": [str(f) for f in given.values()],
        "classes_file": str(explicit_path(classes_file)) if classes_file is not None else None,
        "label_kind": kind,
        "csv_header": {split: has for split, has in headers.items() if given[split].suffix.lower() == ".csv"},
    }
    return make_listing("list", classes, splits, rejected, source, details)
