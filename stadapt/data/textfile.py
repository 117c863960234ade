"""Reading the text files users hand us: lists, class files, annotations.

One reader for all of them, so they all accept what editors write: UTF-8 with or without a byte-order
mark (Windows editors add one; left in, it would glue itself to the first path or class name) and
CRLF line ends. Only the standard library is used: preparing data never needs torch or PyAV.
"""

from __future__ import annotations

from pathlib import Path

from stadapt.errors import DataError


def read_text(path: Path, what: str, hint: str | None = None) -> str:
    """A UTF-8 text file as text (a BOM is dropped); one DataError naming the file otherwise."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist", hint) from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory, not a file", hint) from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}", hint) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start})",
                        "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


def split_lines(text: str) -> list[str]:
    """Lines split on LF with a CR before it dropped; only LF/CRLF count, so odd characters inside
    file names (form feeds, U+2028) never split a line the way `str.splitlines` would."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: Path, what: str, hint: str | None = None) -> list[str]:
    """The lines of a UTF-8 text file (BOM and CRLF allowed); trailing spaces are kept."""
    return split_lines(read_text(path, what, hint))
