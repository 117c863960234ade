"""Logging: the library speaks through the `stadapt` logger hierarchy and never prints.

Modules log to `logging.getLogger(__name__)` (`stadapt.training.cadence`, `stadapt.runs.lookup`, ...). A
program that imports stadapt configures or silences them as it does any library's; without a handler,
Python shows warnings and nothing else. The `stadapt` command installs a console handler
(`stadapt.cli.logs`), and a training run copies its records into RUN/train.log (`RunFileLog`).

One line per record, as the console always showed them: a warning reads `warning: ...`, a Python warning
the command shows `stadapt: warning: ...` (`PYTHON_WARNING`), information is the message itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

ROOT = "stadapt"
PYTHON_WARNING = "python_warning"  # a record's extra flag: a warnings.warn the command logs (stadapt.cli)


class LineFormatter(logging.Formatter):
    """The message, prefixed with `warning: ` (or `error: `) from WARNING up."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if getattr(record, PYTHON_WARNING, False):
            return f"stadapt: warning: {message}"
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class RunFileLog(logging.Handler):
    """Appends the records of the `stadapt` loggers to a run's log file while it trains, plus the lines
    the run writes itself (`line`). Best effort: a failing write (a full disk) stops the copy, never the run."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self.setFormatter(LineFormatter())
        root = logging.getLogger(ROOT)
        root.addHandler(self)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            self._restore_level: int | None = root.level
            root.setLevel(logging.INFO)  # the file keeps information even where the console shows less
        else:
            self._restore_level = None

    def emit(self, record: logging.LogRecord) -> None:
        self.line(self.format(record))

    def line(self, text: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(text.rstrip("\n") + "\n")
            self._file.flush()
        except OSError:
            self._file = None

    def close(self) -> None:
        logging.getLogger(ROOT).removeHandler(self)
        if self._restore_level is not None:
            logging.getLogger(ROOT).setLevel(self._restore_level)
            self._restore_level = None
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        super().close()
