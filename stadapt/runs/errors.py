"""What goes wrong with a run folder and how to go on: `RunError`, and the line a full disk ends a run with."""

from __future__ import annotations

import shlex
import sys

from stadapt.errors import StadaptError

CONTINUE_AFTER_DISK_FULL = "free some space, then continue with the same command and --auto-resume"


class RunError(StadaptError):
    """A run directory that cannot be started, resumed or found."""


def continue_after_disk_full() -> str:
    """How to go on after a full disk, naming the command when this process is `stadapt train ...`: its own
    arguments with --auto-resume, which continues from the last complete checkpoint or, where the first save
    never finished, starts the run again."""
    args = [arg for arg in sys.argv[1:] if arg not in ("--resume", "--auto-resume", "--overwrite")]
    if args[:1] != ["train"]:
        return CONTINUE_AFTER_DISK_FULL
    return f"{CONTINUE_AFTER_DISK_FULL}: {shlex.join(['stadapt', *args, '--auto-resume'])}"
