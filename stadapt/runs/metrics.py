"""A run's metrics.jsonl: one JSON object per log or validation event, appended as the run goes and cut back
to the resumed step when a run continues (the events after it describe work that was lost)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from stadapt.fileio import atomic_write_text, disk_full_as_error
from stadapt.runs.errors import continue_after_disk_full


class MetricsLog:
    """Append-only JSONL; on resume, events after the resumed step (work that was lost) are dropped."""

    def __init__(self, path: Path, *, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._file = path.open("a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        with disk_full_as_error(self.path, "the run's checkpoints are intact", continue_after_disk_full()):
            self._file.write(json.dumps({**event, "time": round(time.time(), 3)}) + "\n")
            self._file.flush()

    def close(self) -> None:
        with disk_full_as_error(self.path, "the run's checkpoints are intact", continue_after_disk_full()):
            self._file.close()


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every event of a metrics.jsonl, in order ([] where the run wrote none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
