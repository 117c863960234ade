"""What a command says when Ctrl-C stops it: exit status 130 and one line saying which of its outputs it
had written (each write is atomic, so those are whole) or that nothing was written."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


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
        with _insisting_ctrl_c():
            yield
    except KeyboardInterrupt:
        written = [str(path) for path in outputs if _stamp(path) != before[path]]
        kept = f"wrote {', '.join(written)} before it stopped" if written else f"nothing was written ({when})"
        print(f"stadapt: interrupted: {kept}", file=sys.stderr)
        # the process ends: a DataLoader iterator the Ctrl-C cut short in its constructor must not add a
        # traceback from its __del__ ("Exception ignored in ...") after that one line
        sys.unraisablehook = lambda _: None
        raise SystemExit(130) from None


@contextmanager
def _insisting_ctrl_c() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, and raises it again every second until the block ends: Python loses
    one raised inside a finalizer (a decoder or DataLoader being freed prints "Exception ignored"), and
    the command would otherwise run to its end. Outside the main thread, the default behaviour stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed, done = threading.Event(), threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        pressed.set()
        raise KeyboardInterrupt

    def insist() -> None:
        while not done.wait(1.0):
            if pressed.is_set():
                _thread.interrupt_main(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    watcher = threading.Thread(target=insist, name="stadapt-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.signal(signal.SIGINT, previous)
