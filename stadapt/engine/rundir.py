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

from stadapt.errors import DiskFullError, StadaptError
from stadapt.fileio import atomic_write_text, disk_full_as_error, fsync_dir

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
CONTINUE_AFTER_DISK_FULL = "free some space, then continue with the same command and --auto-resume"


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
        """The checkpoint a resume continues from: the newest complete one, `last` on a tie. Only a
        crash in the middle of a save makes it another (`recover_checkpoints` puts it back as `last`)."""
        found = self.complete_checkpoints()
        return found[-1][2] if found else None

    def complete_checkpoints(self) -> list[tuple[int, int, Path]]:
        """(step, preference, path) of every complete checkpoint, oldest first: `last`, the kept
        `step_*`, and what a save cut short by a crash leaves (`.last.old`, a staging `.last.*`)."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for path in self.checkpoints.iterdir():
            preference = 3 if path.name == "last" else 2 if path.name.startswith("step_") else \
                1 if path.name.startswith(".last.") else 0
            step = complete_step(path) if preference else None
            if step is not None:
                found.append((step, preference, path))
        return sorted(found)

    def recover_checkpoints(self, keep: int) -> Path | None:
        """Finish what a save cut short by a crash left: the newest complete checkpoint becomes `last`
        (a `last` it replaces is kept as `step_N` when `keep` > 1), then the save's leftovers, all
        older or incomplete, go. Nothing changes when no checkpoint is complete. Returns `last`."""
        found = self.complete_checkpoints()
        if not found:
            return None
        best = found[-1][2]
        if best != self.last:
            if self.last.exists():
                last_step = complete_step(self.last)
                aside = self.checkpoints / f"step_{last_step:08d}" if last_step is not None and keep > 1 else None
                if aside is not None and not aside.exists():
                    os.replace(self.last, aside)
                else:
                    shutil.rmtree(self.last)
            os.replace(best, self.last)
            fsync_dir(self.checkpoints)
        for leftover in self.checkpoints.glob(".last.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self._prune_steps(keep)
        return self.last

    def _prune_steps(self, keep: int) -> None:
        kept = self.step_checkpoints()
        for stale in kept[: max(0, len(kept) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)

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
        try:
            write_checkpoint(self.last, tensors, meta, overwrite=True, extra_files=extra_files,
                             keep_replaced_as=previous)
        except DiskFullError as exc:  # say how to go on: --auto-resume continues, or restarts a run with none
            raise DiskFullError(exc.path, exc.reason, exc.intact,
                                CONTINUE_AFTER_DISK_FULL) from None
        self._prune_steps(keep)
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
        with disk_full_as_error(self.path, "the run's checkpoints are intact", CONTINUE_AFTER_DISK_FULL):
            self._file.write(json.dumps({**event, "time": round(time.time(), 3)}) + "\n")
            self._file.flush()

    def close(self) -> None:
        with disk_full_as_error(self.path, "the run's checkpoints are intact", CONTINUE_AFTER_DISK_FULL):
            self._file.close()


def complete_step(checkpoint: Path) -> int | None:
    """The step of a complete training checkpoint directory (metadata, tensors and trainer state all
    there and whole), else None."""
    from stadapt.checkpoint import FORMAT, META_FILE, TENSORS_FILE, safetensors_intact
    from stadapt.engine.state import STATE_META, STATE_TENSORS

    try:
        meta = json.loads((checkpoint / META_FILE).read_text())
        json.loads((checkpoint / STATE_META).read_text())
        step = int(meta["step"]) if meta.get("format") == FORMAT else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    whole = safetensors_intact(checkpoint / TENSORS_FILE) and safetensors_intact(checkpoint / STATE_TENSORS)
    return step if whole else None


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
