"""The command's console: the library's `stadapt` log records on stderr, one line each, above any progress
bar; `-q` shows warnings only, `-v` adds debug records."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

import typer

from stadapt.logs import PYTHON_WARNING, ROOT, LineFormatter


class ConsoleHandler(logging.Handler):
    """Writes through tqdm, so that a progress bar on the terminal is redrawn below the line, to the
    stderr of the moment (tests and callers may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def install(level: int = logging.INFO) -> None:
    """The console handler on the `stadapt` logger (once: a second call resets it), and Python warnings
    shown as one `stadapt: warning:` line through it."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    handler = ConsoleHandler(level)
    handler.setFormatter(LineFormatter())
    logger.addHandler(handler)
    logger.setLevel(min(level, logging.INFO))
    warnings.showwarning = _show_warning


def set_level(level: int) -> None:
    """What the console shows from now on (the run's train.log keeps information regardless)."""
    logger = logging.getLogger(ROOT)
    for handler in logger.handlers:
        if isinstance(handler, ConsoleHandler):
            handler.setLevel(level)
    if level < logger.getEffectiveLevel():
        logger.setLevel(level)


def _quiet(value: bool) -> bool:
    if value:
        set_level(logging.WARNING)
    return value


def quiet_option(help: str) -> Any:
    """A training command's `--quiet/-q`: no progress bar, and warnings only on the console (its progress
    lines are records). Other commands' `-q` hides their progress bar; `stadapt -q` quiets the records."""
    return typer.Option(False, "--quiet", "-q", help=help, callback=_quiet)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """warnings.showwarning: one line, no source location (the user cannot act on our file names)."""
    logging.getLogger(ROOT).warning("%s", message, extra={PYTHON_WARNING: True})
