"""Writing files so that readers never see half of one (a crash leaves the old file or the new one).

Every atomic write in stadapt goes through here, for two reasons that are easy to get wrong one
writer at a time:
- modes: a temp file or directory gets the mode `open()` / `mkdir()` would give it (0666 / 0777
  less the umask), not tempfile's private 0600 / 0700, so colleagues on a shared cluster can read
  the results when the umask lets them;
- a full disk (ENOSPC, EDQUOT, EFBIG) becomes one `DiskFullError` naming the path and what is
  still intact, and the temp file is removed;
- a place that refuses the write (a read-only file system, no permission) becomes one `StadaptError`
  naming the output and the reason; `check_writable` refuses it before a command's work starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from stadapt.errors import DiskFullError, StadaptError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


@contextlib.contextmanager
def disk_full_as_error(path: str | Path, intact: str, then: str | None = None) -> Iterator[None]:
    """Turn a full disk (or quota, or file-size limit) while writing `path` into a `DiskFullError`
    that says what was not lost (`intact`) and what to do (`then`); other OS errors pass through."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        if then is None:
            raise DiskFullError(path, os.strerror(exc.errno), intact) from None
        raise DiskFullError(path, os.strerror(exc.errno), intact, then) from None


UNWRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_UNWRITABLE_FIX = "choose an output place you can write (--out, --to-dir, output.dir)"


def unwritable_error(path: str | Path, errno_: int) -> StadaptError:
    """The one-line error for an output place the OS refuses (a read-only file system, no permission)."""
    fix = (f"{_UNWRITABLE_FIX}, or remount it read-write" if errno_ == errno.EROFS
           else f"{_UNWRITABLE_FIX}, or make it writable (chmod u+w, or ask its owner)")
    return StadaptError(f"cannot write {path}: {os.strerror(errno_).lower()}", fix)


@contextlib.contextmanager
def unwritable_as_error(path: str | Path) -> Iterator[None]:
    """Turn a refused write (read-only file system, no permission) under `path` into a `StadaptError` that
    names `path`, the reason and the fix; other OS errors pass through."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in UNWRITABLE_ERRNOS:
            raise
        raise unwritable_error(path, exc.errno) from None


def check_writable(target: str | Path) -> None:
    """Refuse, before any work starts, an output (a file or folder to write) that cannot be written: the
    nearest existing folder on its way must take new entries (read-only mounts and permissions, as the OS
    says). The error names `target`."""
    target = Path(target)
    for folder in (target, *target.parents):
        if folder.is_dir():
            break
    else:
        return
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        raise unwritable_error(target, errno.EROFS if read_only else errno.EACCES)


def _unchanged(path: Path) -> str:
    return f"{path} is unchanged" if path.exists() else f"{path} was not created"


def create_temp_file(directory: Path, name: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """Like tempfile.mkstemp in `directory` (a fresh hidden name from `name`), with the mode open() gives."""
    for _ in range(100):
        path = directory / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            with unwritable_as_error(directory / name):
                return os.open(path, _CREATE, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory / f".{name}.*"))


def make_temp_dir(parent: Path, name: str) -> Path:
    """Like tempfile.mkdtemp in `parent` (hidden name `.NAME.<random>`), with the mode mkdir() gives."""
    for _ in range(100):
        path = parent / f".{name}.{secrets.token_hex(4)}"
        try:
            with unwritable_as_error(parent / name):
                os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent / f".{name}.*"))


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (a rename into it, a new file) durable where the OS allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is as durable as they get
        pass
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist: it lives in a staging directory) with `data`, flushed to disk."""
    fd = os.open(path, _CREATE, 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same directory + fsync + os.replace (+ fsync of the directory)."""
    path = Path(path)
    with atomic_output(path) as staging, staging.open("wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text with the newlines as given."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path` for writers that want a file name (ONNX, matplotlib, ...): it
    replaces `path` only when the block succeeds, and is removed otherwise. The temp name keeps
    the suffix of `path`, so writers that choose a format by extension still do."""
    path = Path(path)
    with unwritable_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    intact = _unchanged(path)
    staging: Path | None = None
    try:
        with disk_full_as_error(path, intact):
            fd, staging = create_temp_file(path.parent, path.name, suffix=f".tmp{path.suffix}")
            os.close(fd)
            yield staging
            with staging.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(staging, path)
            staging = None
            fsync_dir(path.parent)
    finally:
        if staging is not None:
            staging.unlink(missing_ok=True)


def temp_target(name: str) -> str | None:
    """The file a leftover temp file of `atomic_output` (`.NAME.XXXXXXXX.tmp[.suffix]`, or the older
    `.NAME.XXXXXXXX.tmp`) was meant to become, or None: what a crash between writing and renaming leaves is
    still the writer's own file."""
    import re

    found = re.fullmatch(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?", name)
    if found is None or (found.group(2) and not found.group(1).endswith(found.group(2))):
        return None
    return found.group(1)


def remove_path(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a whole folder; nothing if it is gone already."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def claim_outputs(paths: Iterable[Path], *, overwrite: bool, ours: Callable[[Path], bool],
                  where: str = "--out") -> None:
    """Refuse, before any work starts, an output path that cannot take the command's file: a folder or
    a file in the way of its folder, a directory at its name, or an existing file that stadapt did not
    write (`ours` says, from the file's content). A file stadapt wrote is replaced only with `overwrite`.

    `paths` are every file a command writes, including those named after --out (`OUT.json`, ...): the
    user's file at any of them is never replaced, and the message never offers --overwrite for it."""
    for path in map(Path, paths):
        blocker = _file_in_the_way(path.parent)
        if blocker is not None:
            raise StadaptError(f"{blocker} is a file, so {path} cannot be written",
                               f"choose another {where}, or move {blocker} away")
        if path.is_dir():
            raise StadaptError(f"{path} is a directory", f"{where} names the file to write: choose a file name")
        check_writable(path)
        if not path.exists() and not path.is_symlink():
            continue
        if not ours(path):
            raise StadaptError(f"{path} exists and stadapt did not write it, so it is not replaced",
                               f"choose another {where}, or move that file away")
        if not overwrite:
            raise StadaptError(f"{path} already exists", f"pass --overwrite to replace it, or choose another {where}")


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` (itself included) when it is not a directory, else None."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return None
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def json_by_stadapt(path: Path, *keys: str) -> dict | None:
    """The JSON object in `path` when it holds every key in `keys` (what stadapt's own JSON records), else None."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and all(key in data for key in keys) else None


PNG_SOFTWARE = "stadapt"


def png_by_stadapt(path: Path, software: str = PNG_SOFTWARE) -> bool:
    """Whether `path` is a PNG stadapt wrote: stadapt's figures carry a `Software: stadapt` text chunk,
    which matplotlib writes before the image data (`software` asks for another writer's tag)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"tEXtSoftware\x00" + software.encode() in head


def first_line_is(path: Path, line: str) -> bool:
    """Whether the text file `path` starts with `line` (a header stadapt writes, e.g. a CSV's)."""
    try:
        with path.open("rb") as handle:
            return handle.readline().rstrip(b"\r\n") == line.encode("utf-8")
    except OSError:
        return False
