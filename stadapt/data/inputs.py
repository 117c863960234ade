"""The videos a command reads, from what a user names: video files, folders, glob patterns or lists.

A folder gives its video files (by extension, recursively through links to folders, sorted); a pattern
(`*`, `?`, `[`) that names no existing path gives its matches, sorted; any other file whose extension is
not a video's is a list: one video a line, as a prepared list writes it (`path label`, the label optional;
paths relative to the list's folder). Explicit video files are kept as given, even missing ones: the
reader reports those per video. The order is the order of the inputs, so outputs line up with them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from stadapt.errors import StadaptError


class InputsError(StadaptError):
    """Inputs that name no video."""


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Every video the inputs name, in input order (see the module docstring)."""
    from stadapt.data.formats.videos import VIDEO_EXTS

    videos: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = videos_under(path, VIDEO_EXTS)
            if not found:
                raise InputsError(f"the folder {path} holds no video files ({', '.join(VIDEO_EXTS)})",
                                  "pass a folder of videos, video files, a pattern or a list")
            videos += found
        elif not path.exists() and glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputsError(f"the pattern {item} matches no file", "check the pattern (quote it for the shell)")
            videos += matches
        elif path.is_file() and path.suffix.lower() not in VIDEO_EXTS:
            videos += read_video_list(path)
        else:
            videos.append(path)
    if not videos:
        raise InputsError("no video given", "pass video files, folders, patterns or a list")
    return videos


def videos_under(folder: Path, exts: Sequence[str]) -> list[Path]:
    """The video files under `folder`, recursively and sorted, through symbolic links to folders too (a user
    gathers videos by linking their folders); each real folder is read once, so a link back up ends."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        here = os.stat(top)
        if (here.st_dev, here.st_ino) in seen:  # reached again through another link: a cycle or a duplicate
            dirs[:] = []
            continue
        seen.add((here.st_dev, here.st_ino))
        found += [Path(top) / name for name in files
                  if Path(name).suffix.lower() in exts and os.path.isfile(os.path.join(top, name))]
    return sorted(found)


def read_video_list(path: Path) -> list[Path]:
    """The videos of a list file: one a line, `path` or `path label` (an integer label, ignored); relative
    paths are relative to the list's folder, as in the prepared layout."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise InputsError(f"{path} is neither a video (by its extension) nor a UTF-8 list of videos",
                          "pass video files, folders, patterns or a `path [label]` list") from None
    videos = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        name = parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line
        video = Path(name)
        videos.append(video if video.is_absolute() else path.parent / video)
    if not videos:
        raise InputsError(f"the list {path} names no video", "one video a line: `path` or `path label`")
    return videos
