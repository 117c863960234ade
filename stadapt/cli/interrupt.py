"""What a command says when Ctrl-C stops it: exit status 130 and one line saying which of its outputs it
had written (each write is atomic, so those are whole) or that nothing was written."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@contextmanager
def interrupt_says(outputs: Sequence[Path], when: str) -> Iterator[None]:
    """A Ctrl-C in the block ends the command with exit status 130 and one line saying what it kept: the
    outputs it had written (each write is atomic), or that nothing was written and `when` it would have been."""
    before = {path: _stamp(path) for path in outputs}
    try:
        yield
    except KeyboardInterrupt:
        written = [str(path) for path in outputs if _stamp(path) != before[path]]
        kept = f"wrote {', '.join(written)} before it stopped" if written else f"nothing was written ({when})"
        print(f"stadapt: interrupted: {kept}", file=sys.stderr)
        # the process ends: a DataLoader iterator the Ctrl-C cut short in its constructor must not add a
        # traceback from its __del__ ("Exception ignored in ...") after that one line
        sys.unraisablehook = lambda _: None
        raise SystemExit(130) from None
