"""The "prepared" layout: the one on-disk format that training and evaluation read.

Every dataset converter (synthetic, k400, ssv2, ucf101, hmdb51, a user's own list) writes this layout,
so the rest of stadapt only ever reads one format:

    classes.txt      one class name a line; the class index is the 0-based line number
    {split}.txt      `path label` lines (the reference implementation's format); the path may contain
                     spaces, so the label is the LAST whitespace-separated field; paths are relative to
                     the prepared directory or absolute
    quarantine.txt   `path<TAB>reason` lines for unreadable or missing videos (only when there are any)
    manifest.json    counts and sha256 of the files above; written last, so its presence means complete

Only the standard library is used here: preparing data never needs torch or PyAV imported.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stadapt.data.textfile import read_lines
from stadapt.errors import DataError, preview
from stadapt.fileio import atomic_write_text, remove_path

FORMAT = "stadapt-prepared"
FORMAT_VERSION = 1
CLASSES_FILE = "classes.txt"
QUARANTINE_FILE = "quarantine.txt"
MANIFEST_FILE = "manifest.json"
PREPARE_HINT = "make one with `stadapt prepare-data synthetic --out DIR` (or another format)"

_RESERVED_SPLITS = {"classes", "quarantine", "manifest"}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MANIFEST_KEYS = {"format", "format_version", "stadapt_version", "source", "num_classes", "classes_sha256",
                  "splits", "quarantine"}


@dataclass(frozen=True)
class VideoEntry:
    """One labelled video of a split; `path` is absolute so workers need no root to find it."""

    path: Path
    label: int


# ----------------------------------------------------------------------------------------- helpers


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (list files of big datasets run to megabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a BOM dropped: it would glue itself to the first path or class
    name), with one DataError for a missing or undecodable file."""
    return read_lines(Path(path), what, PREPARE_HINT)


def _check_path_field(path: str) -> None:
    """A path that a `path label` line cannot carry back unchanged is refused when writing."""
    if not path or path != path.strip() or any(c in path for c in "\r\n\t"):
        raise DataError(
            f"cannot write list path {path!r}: empty, or with leading/trailing whitespace, tab or newline",
            "rename the file; list lines are `path label`",
        )


# ----------------------------------------------------------------------------------------- reading


def read_classes(path: Path) -> list[str]:
    """Class names in index order; blank lines and duplicates are errors (they would shift labels)."""
    lines = _read_lines(Path(path), "class file")
    names = [line.strip() for line in lines]
    blank = [str(n) for n, name in enumerate(names, 1) if not name]
    if blank:
        raise DataError(
            f"class file {path} has blank lines (line {preview(blank)})",
            "remove them: the class index is the line number, so a blank line would shift every label",
        )
    if not names:
        raise DataError(f"class file {path} is empty", "write one class name a line")
    first: dict[str, int] = {}
    dupes: list[str] = []
    for n, name in enumerate(names, 1):
        if name in first:
            dupes.append(f"{name!r} on lines {first[name]} and {n}")
        else:
            first[name] = n
    if dupes:
        raise DataError(f"class file {path} repeats class names: {preview(dupes, sep='; ')}",
                        "each class must appear exactly once")
    return names


def read_list(path: Path, root: Path, num_classes: int) -> list[VideoEntry]:
    """Parse a `path label` list; all bad lines are reported in one error, blank lines are skipped."""
    path, root = Path(path), Path(root)
    lines = _read_lines(path, "list file")
    entries: list[VideoEntry] = []
    bad: list[str] = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            bad.append(f"{n} (no label)")
            continue
        video, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            bad.append(f"{n} (label {label_text!r} is not an integer)")
            continue
        if not 0 <= label < num_classes:
            bad.append(f"{n} (label {label} not in 0..{num_classes - 1})")
            continue
        video_path = Path(video)
        entries.append(VideoEntry(video_path if video_path.is_absolute() else root / video_path, label))
    if bad:
        named = any("is not an integer" in reason for reason in bad)
        raise DataError(
            f"list file {path} has {len(bad)} bad line(s): line {preview(bad)}",
            f"each line must be `path label` with an integer label in 0..{num_classes - 1} "
            f"(the index of the class in {CLASSES_FILE}); fix or remove those lines"
            + (" (`stadapt prepare-data list --train FILE --classes CLASSES --out DIR` turns a list labelled "
               "with class names into this layout)" if named else ""),
        )
    if not entries:
        raise DataError(f"list file {path} has no entries", "it needs one `path label` line per video")
    return entries


# ----------------------------------------------------------------------------------------- writing


def write_list(path: Path, rows: Sequence[tuple[str, int]]) -> None:
    """Write `path label` lines atomically; refuses paths that would not read back unchanged."""
    lines = []
    for video, label in rows:
        video = str(video)
        _check_path_field(video)
        lines.append(f"{video} {int(label)}\n")
    atomic_write_text(Path(path), "".join(lines))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def write_prepared(
    out: Path,
    classes: Sequence[str],
    splits: Mapping[str, Sequence[tuple[str, int]]],
    *,
    source: str,
    quarantine: Sequence[tuple[str, str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Write a complete prepared directory and return its manifest.

    The old manifest is removed first and the new one written last, so an interrupted run never leaves
    a manifest that describes files it did not finish. A stale quarantine.txt is removed too.
    """
    import stadapt

    out = Path(out)
    classes = [str(c) for c in classes]
    bad_names = [repr(c) for c in classes if not c.strip() or c != c.strip() or "\n" in c or "\r" in c]
    if bad_names:
        raise DataError(f"class names must be non-blank single lines without surrounding spaces: "
                        f"{preview(bad_names)}")
    if not classes:
        raise DataError("cannot prepare a data set with no classes")
    if len(set(classes)) != len(classes):
        seen: set[str] = set()
        dupes = [c for c in classes if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
        raise DataError(f"duplicate class names: {preview(sorted(set(dupes)))}")
    if not splits:
        raise DataError("cannot prepare a data set with no splits")
    for name, rows in splits.items():
        if not _SPLIT_NAME.match(name) or name in _RESERVED_SPLITS:
            raise DataError(f"bad split name {name!r}", "use letters, digits, '_', '-' or '.', e.g. train, val")
        for video, _ in rows:
            _check_path_field(str(video))
        wrong = [f"{v} {lab}" for v, lab in rows if not 0 <= int(lab) < len(classes)]
        if wrong:
            raise DataError(f"split {name!r} has labels outside 0..{len(classes) - 1}: {preview(wrong)}")
    clash = sorted(set(extra or {}) & _MANIFEST_KEYS)
    if clash:
        raise ValueError(f"extra manifest keys clash with the format's own: {clash}")

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    atomic_write_text(out / CLASSES_FILE, "".join(f"{c}\n" for c in classes))
    split_info: dict[str, dict[str, Any]] = {}
    for name, rows in splits.items():
        file = f"{name}.txt"
        write_list(out / file, rows)
        split_info[name] = {"file": file, "count": len(rows), "sha256": file_sha256(out / file)}
    if quarantine:
        lines = "".join(f"{_one_line(p)}\t{_one_line(r)}\n" for p, r in quarantine)
        atomic_write_text(out / QUARANTINE_FILE, lines)
    else:
        (out / QUARANTINE_FILE).unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stadapt_version": stadapt.__version__,
        "source": source,
        "num_classes": len(classes),
        "classes_sha256": file_sha256(out / CLASSES_FILE),
        "splits": split_info,
        "quarantine": {"file": QUARANTINE_FILE if quarantine else None, "count": len(quarantine)},
        **(extra or {}),
    }
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def claim_out_dir(out: Path, *, overwrite: bool, owned: Sequence[str] = (), record: str | None = None,
                  planned: Sequence[str] = ()) -> None:
    """Make `out` ready for a new preparation without ever deleting or replacing a file stadapt did not write.

    An empty or new directory is used as is. A non-empty one needs `overwrite`, and even then only a
    directory with a stadapt manifest is touched: the files its manifest names (classes, lists,
    quarantine, manifest), the `owned` names and the files listed in the `record` file (`DIGEST  NAME`
    lines, e.g. the synthetic set's `videos.sha256`) are removed, and the folders that removal leaves
    empty; nothing else. A recorded file changed since, or a file of the user's at a `planned` name (what
    the new preparation writes), is refused before anything is removed. The videos of a real data set
    are never inside what is removed.
    """

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory", "choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise DataError(f"{out} is not empty", "choose another --out, or pass --overwrite to replace a data set "
                                               "that stadapt prepared there")
    manifest = _stadapt_manifest(out)
    if manifest is None:
        raise DataError(f"--overwrite refused: {out} is not a directory stadapt prepared (no stadapt {MANIFEST_FILE}), "
                        "so its files may be yours",
                        "choose a new or empty --out directory, or remove that directory yourself")
    names = {CLASSES_FILE, *owned}
    quarantine = manifest.get("quarantine")
    if not isinstance(quarantine, dict) or quarantine.get("file") == QUARANTINE_FILE:
        names.add(QUARANTINE_FILE)  # what it wrote; an older manifest without the entry: as before
    for info in (manifest.get("splits") or {}).values():
        if isinstance(info, dict) and isinstance(info.get("file"), str) and "/" not in info["file"]:
            names.add(info["file"])
    recorded = _recorded_files(out, record) if record else {}
    ours = names | set(recorded) | {MANIFEST_FILE}
    _refuse_users_files(out, recorded, [p for p in planned if p not in ours])
    (out / MANIFEST_FILE).unlink()  # first: an interrupted removal must not leave a manifest behind
    for name in sorted(recorded):
        (out / name).unlink(missing_ok=True)
        _remove_empty_folders(out, (out / name).parent)
    for name in sorted(names):
        remove_path(out / name)


def _stadapt_manifest(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _recorded_files(out: Path, record: str) -> dict[str, str]:
    """NAME -> sha256 of the files a preparation wrote, from its `DIGEST  NAME` record (names inside `out` only)."""
    try:
        lines = (out / record).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        parts = Path(name).parts
        if name and not Path(name).is_absolute() and ".." not in parts and parts[0] != MANIFEST_FILE:
            found[name] = digest
    return found


def _refuse_users_files(out: Path, recorded: Mapping[str, str], planned: Sequence[str]) -> None:
    """Refuse, naming them, recorded files changed since they were written and files at `planned` names."""
    changed = [n for n, digest in recorded.items() if (out / n).is_file() and file_sha256(out / n) != digest]
    in_the_way = [n for n in planned if (out / n).exists() or (out / n).is_symlink()]
    if changed or in_the_way:
        what = [f"{n} (changed since stadapt wrote it)" for n in changed]
        what += [f"{n} (not written by stadapt prepare-data)" for n in in_the_way]
        raise DataError(f"--overwrite refused: {out} holds {preview(what)}, which would be replaced",
                        "move those files out of --out first, or choose a new or empty --out directory")


def _remove_empty_folders(out: Path, folder: Path) -> None:
    """Remove `folder` and its parents up to (not including) `out` while they are empty."""
    while folder != out and out in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (a user's file stays, and so does its folder), or gone
            return
        folder = folder.parent


# ----------------------------------------------------------------------------------------- opening


@dataclass
class PreparedData:
    """An opened prepared directory: class names, the manifest (if any) and access to its lists."""

    root: Path
    classes: list[str]
    manifest: dict | None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def splits(self) -> list[str]:
        """Split names from the manifest, else the `*.txt` list files present."""
        if self.manifest and isinstance(self.manifest.get("splits"), dict):
            return list(self.manifest["splits"])
        skip = {CLASSES_FILE, QUARANTINE_FILE}
        return sorted(p.stem for p in self.root.glob("*.txt") if p.name not in skip)

    def list_path(self, list_file: str | Path) -> Path:
        """Resolve a list file: relative to the root; a bare split name (`val`) finds `val.txt`."""
        path = Path(list_file)
        if not path.is_absolute():
            path = self.root / path
        if not path.exists() and not path.suffix and path.with_suffix(".txt").exists():
            path = path.with_suffix(".txt")
        if not path.is_file():
            raise DataError(f"list file {path} does not exist",
                            f"splits in {self.root}: {preview(self.splits) or 'none'}")
        return path

    def entries(self, list_file: str | Path) -> list[VideoEntry]:
        """The labelled videos of one list file, checked against this directory's classes."""
        return read_list(self.list_path(list_file), self.root, len(self.classes))

    def list_sha256(self, list_file: str | Path) -> str:
        """The fingerprint a run records, so an evaluation can tell it read the same list."""
        return file_sha256(self.list_path(list_file))


def _read_manifest(path: Path, num_classes: int) -> dict | None:
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}", "prepare the data again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a stadapt-prepared manifest", "prepare the data again")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"{path} has format_version {version!r}; this stadapt reads up to {FORMAT_VERSION}",
                        "upgrade stadapt or prepare the data again with this version")
    if manifest.get("num_classes") != num_classes:
        raise DataError(f"{path} says {manifest.get('num_classes')} classes but {CLASSES_FILE} has {num_classes}",
                        "the directory was edited after preparing; prepare the data again")
    return manifest


def open_prepared(root: str | Path) -> PreparedData:
    """Open a prepared directory; the manifest is optional so hand-written layouts work too."""
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"prepared data directory {root} {what}", PREPARE_HINT)
    if not (root / CLASSES_FILE).is_file():
        raise DataError(f"{root} has no {CLASSES_FILE}, so it is not a prepared data directory", PREPARE_HINT)
    root = root.resolve()
    classes = read_classes(root / CLASSES_FILE)
    return PreparedData(root=root, classes=classes, manifest=_read_manifest(root / MANIFEST_FILE, len(classes)))
