"""The run lock (RUN/.stadapt.lock): one training process writes to a run folder at a time."""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path

from stadapt.runs.errors import RunError
from stadapt.runs.layout import LOCK_FILE


class RunLock:
    """An exclusive lock on RUN/.stadapt.lock, held by the training process for the life of a run, so a second
    `stadapt train` into the same folder is refused every time. A POSIX record lock (fcntl.lockf): the kernel
    releases it when the process ends in any way (a dead process never leaves a stale lock), DataLoader
    workers forked from the holder do not inherit it, and it works on NFS. The holder writes its pid and
    host into the file, for the refusal to name it. The holding process must never open the lock file
    anywhere else: closing any descriptor of it would drop a POSIX lock. Where there is no fcntl (Windows),
    `acquire` refuses in one line: stadapt trains on POSIX systems (Linux, macOS; on Windows, under WSL)."""

    def __init__(self, run_path: str | Path) -> None:
        self.path = Path(run_path) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise RunError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no POSIX record locks, and a run folder must not have two writers
            raise RunError(f"cannot lock {self.path}: this platform has no POSIX file locks (fcntl), which keep "
                           "two trainings out of one run folder",
                           "train on Linux or macOS (on Windows: under WSL)") from None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise RunError(f"cannot lock {self.path} ({exc.strerror})",
                               "put output.dir on a file system that supports file locks") from None
            raise RunError(f"{self.path.parent} is in use: another stadapt training ({self.holder()}) writes to it",
                           "wait for it to end or stop it, or set output.dir=... (or name=...) to another folder") \
                from None
        self._fd = fd
        text = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it (read without opening it for writing)."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        return text or "a process that has not yet written its pid"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
