"""What every dataset reader returns: a `Listing` of classes and labelled video paths, before any
video is opened.

A reader (k400, ssv2, ucf101, hmdb51, list) only parses the publisher's annotation files and finds
where each video should be. Whether the file exists and decodes is decided afterwards, in one place
(`stadapt.data.prepare`), so every format quarantines bad videos the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Listing:
    """A data set as its annotation files describe it.

    - `classes`: class names in index order (the official order of the data set).
    - `splits`: split name (`train`, `val`, ...) -> `(video path, label)` rows, in annotation order.
      Paths are absolute; a path may not exist (then it is quarantined as missing).
    - `rejected`: annotation rows that cannot become an entry at all (unknown label, malformed
      line, ...): `(the row as the annotation names it, reason)`. They go to quarantine.txt too.
    - `source`: one line saying what was read, e.g. "Kinetics-400 annotations in /data/k400/annotations".
    - `details`: JSON-serialisable facts for manifest.json (annotation files used, split number, ...).
    """

    name: str
    classes: list[str]
    splits: dict[str, list[tuple[Path, int]]]
    rejected: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    details: dict[str, Any] = field(default_factory=dict)
