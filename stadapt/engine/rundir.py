"""A run directory: the resolved recipe, metrics, plots and checkpoints of one training run.

    RUN/recipe.yaml            the fully resolved recipe (what actually ran)
    RUN/metrics.jsonl          one JSON object per log / validation event
    RUN/curves.png             training curves, written at the end
    RUN/checkpoints/last/      adapters + head, metadata, trainer state (what --resume continues)
    RUN/checkpoints/step_N/    earlier checkpoints, the newest `train.keep_checkpoints - 1` of them
    RUN/tensorboard/           TensorBoard event files
    RUN/eval.json              written by `stadapt eval`
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stadapt.errors import StadaptError
from stadapt.fileio import atomic_write_text

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"


class RunError(StadaptError):
    """A run directory that cannot be started, resumed or found."""


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    recipe = property(lambda self: self.path / RECIPE_FILE)
    metrics = property(lambda self: self.path / METRICS_FILE)
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last")
    curves = property(lambda self: self.path / "curves.png")

    def is_run(self) -> bool:
        return self.recipe.is_file()

    def step_checkpoints(self) -> list[Path]:
        """The kept earlier checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob("step_*") if (p / "stadapt.json").is_file())

    def resume_checkpoint(self) -> Path | None:
        """The checkpoint a resume continues from: `last`, or (if a crash hit the instant between
        renaming it and putting the new one in place) the newest kept step checkpoint."""
        if (self.last / "stadapt.json").is_file():
            return self.last
        kept = self.step_checkpoints()
        return kept[-1] if kept else None

    def save_checkpoint(self, step: int, tensors: Any, meta: dict[str, Any], extra_files: dict[str, bytes],
                        keep: int) -> Path:
        """Write `last` atomically; the one it replaces becomes `step_<its step>` while fewer than
        `keep` checkpoints exist, and older step checkpoints are removed."""
        from stadapt.checkpoint import write_checkpoint

        previous = None
        if keep > 1 and (self.last / "stadapt.json").is_file():
            try:
                old_step = int(json.loads((self.last / "stadapt.json").read_text()).get("step", 0))
            except (OSError, ValueError, TypeError):
                old_step = -1
            if 0 <= old_step < step:
                previous = self.checkpoints / f"step_{old_step:08d}"
        write_checkpoint(self.last, tensors, meta, overwrite=True, extra_files=extra_files,
                         keep_replaced_as=previous)
        kept = self.step_checkpoints()
        for stale in kept[: max(0, len(kept) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
        return self.last

    def start(self, *, resume: bool, overwrite: bool) -> None:
        """Make the directory ready: new, resumed or (only when asked) replaced; never silently reused."""
        occupied = self.path.exists() and any(self.path.iterdir())
        if resume:
            if self.resume_checkpoint() is None:
                raise RunError(
                    f"there is no run to resume in {self.path} (no checkpoints/last)",
                    "drop --resume to start it, or set output.dir=... to the run you mean",
                )
            return
        if occupied and not overwrite:
            raise RunError(
                f"{self.path} already holds a run",
                "pass --resume to continue it, --overwrite to start it again, or set output.dir=... (or name=...)",
            )
        if occupied:
            trash = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            os.replace(self.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)


class MetricsLog:
    """Append-only JSONL; on resume, events after the resumed step (work that was lost) are dropped."""

    def __init__(self, path: Path, *, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._file = path.open("a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps({**event, "time": round(time.time(), 3)}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest_run(roots: Iterable[Path]) -> Path:
    """The run under `roots` whose last checkpoint was written most recently."""
    found = [
        (ckpt.stat().st_mtime, run)
        for root in roots if root.is_dir()
        for run in root.iterdir()
        if (ckpt := run / "checkpoints" / "last" / "stadapt.json").is_file()
    ]
    if not found:
        where = ", ".join(str(r) for r in roots)
        raise RunError(f"found no trained run under {where}", "pass a run directory or a checkpoint, or train one first")
    return max(found)[1]
