"""User-facing errors.

Anything a user can cause (a typo, a wrong file, a checkpoint that does not fit) raises a
`StadaptError`. The CLI prints its message on one line and exits non-zero without a traceback;
library users can catch it. Bugs stay ordinary exceptions so they keep their tracebacks.
"""

from __future__ import annotations


class StadaptError(Exception):
    """An error caused by the user's input; the message names the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}; {hint}" if hint else message)


def preview(items: list[str], limit: int = 4, sep: str = ", ") -> str:
    """The first `limit` items of a list for a one-line message, saying how many were left out."""
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return sep.join(items[:limit]) + more


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for quoting a library's exception inside our own message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class UnknownBackboneError(StadaptError):
    """A backbone plugin or variant that is not installed."""


class PluginError(StadaptError):
    """A plugin that is broken: fails to import, clashes with another, or breaks the protocol."""


class WeightsError(StadaptError):
    """A weights file that cannot be read or does not fit the backbone."""


class CheckpointError(StadaptError):
    """A checkpoint that cannot be read or does not fit the model."""


class RecipeError(StadaptError):
    """A recipe (YAML + command-line overrides) that does not validate; lists every problem at once."""


class DataError(StadaptError):
    """A prepared data set, list file or class file that is missing or malformed."""


class VideoDecodeError(StadaptError):
    """A video file that cannot be opened or decoded (missing, empty, truncated, no video stream)."""


class DiskFullError(StadaptError):
    """A write that failed because the disk (or a quota, or a file-size limit) is full; says what is
    intact (nothing half-written is left) and what to do."""

    def __init__(self, path: object, reason: str, intact: str,
                 then: str = "free some space and run the command again") -> None:
        self.path, self.reason, self.intact = path, reason, intact
        super().__init__(f"the disk is full: could not write {path} ({reason})", f"nothing was lost: {intact}; {then}")


class DecoderUnavailableError(StadaptError):
    """A video decoder chosen (data.decoder) that cannot be loaded here; says how to install it."""
