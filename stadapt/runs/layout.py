"""A run directory (`RunDir`): the resolved recipe, metrics, plots and checkpoints of one training run, the names
of its files, and which of them are stadapt's.

    RUN/recipe.yaml            the fully resolved recipe (what actually ran)
    RUN/metrics.jsonl          one JSON object per log / validation event (stadapt.runs.metrics)
    RUN/curves.png             training curves, written at the end
    RUN/checkpoints/           last, step_N and best (stadapt.runs.rotation)
    RUN/tensorboard/           TensorBoard event files (train.loggers)
    RUN/train.log              the run's console output, appended on resume
    RUN/wandb/, RUN/wandb.json Weights & Biases files and run id (train.loggers: [wandb])
    RUN/eval.json              written by `stadapt eval`
    RUN/.stadapt-run.json      the marker: stadapt made this folder (what `--overwrite` may replace)
    RUN/.stadapt.lock          locked by the training process that owns the folder while it runs (stadapt.runs.lock)

stadapt replaces only what it wrote (`RUN_FILES`, checked down into checkpoints/ and tensorboard/): a
folder that holds anything else is refused, naming what it found, and a user's file is never deleted.
How a training starts here is `stadapt.runs.start`; RunDir's other methods hand over to the module of each job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stadapt.checkpoints.files import META_FILE, foreign_files
from stadapt.fileio import atomic_write_text, remove_path, temp_target
from stadapt.runs import rotation
from stadapt.runs.start import plan_start

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
MARKER_FILE = ".stadapt-run.json"
LOCK_FILE = ".stadapt.lock"
MARKER_FORMAT = "stadapt-run"
# every name stadapt writes at the top of a run directory (train; eval and export by default)
RUN_FILES = frozenset({RECIPE_FILE, METRICS_FILE, MARKER_FILE, LOCK_FILE, "curves.png", "checkpoints", "tensorboard",
                       "eval.json", "eval.predictions.csv", "eval.confusion.png", "model.onnx", "model.onnx.data",
                       "train.log", "wandb", "wandb.json"})  # train.log: console output; wandb*: train.loggers
_CHECKPOINT_NAME = re.compile(r"\.?(last|best|step_\d+)(\..+)?")  # last, best, step_N, their staging / swap folders


@dataclass
class RunState:
    """What a run folder holds: whether stadapt made it, what in it stadapt did not write, its checkpoints."""

    exists: bool
    stadapts: bool
    foreign: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)


class RunDir:
    """One run folder: its paths, what it holds and whose it is; checkpoints through `stadapt.runs.rotation`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    recipe = property(lambda self: self.path / RECIPE_FILE)
    metrics = property(lambda self: self.path / METRICS_FILE)
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last")
    best = property(lambda self: self.path / "checkpoints" / "best")
    curves = property(lambda self: self.path / "curves.png")

    def is_run(self) -> bool:
        return self.recipe.is_file()

    def step_checkpoints(self) -> list[Path]:
        return rotation.step_checkpoints(self.checkpoints)

    def resume_checkpoint(self) -> Path | None:
        return rotation.resume_checkpoint(self.checkpoints)

    def complete_checkpoints(self) -> list[tuple[int, int, Path]]:
        return rotation.complete_checkpoints(self.checkpoints)

    def recover_checkpoints(self, keep: int) -> Path | None:
        return rotation.recover_checkpoints(self.checkpoints, keep)

    def recover_best(self) -> Path | None:
        return rotation.recover_best(self.checkpoints)

    def save_best(self, tensors: Any, meta: dict[str, Any], extra_files: dict[str, bytes] | None = None) -> Path:
        return rotation.save_best(self.checkpoints, tensors, meta, extra_files)

    def save_checkpoint(self, step: int, tensors: Any, meta: dict[str, Any], extra_files: dict[str, bytes],
                        keep: int) -> Path:
        return rotation.save_checkpoint(self.checkpoints, step, tensors, meta, extra_files, keep)

    def plan_start(self, *, resume: bool, auto_resume: bool = False, overwrite: bool = False) -> str:
        return plan_start(self, resume=resume, auto_resume=auto_resume, overwrite=overwrite)

    def start(self, *, resume: bool, overwrite: bool) -> None:
        """Make the directory ready: new, resumed or (only when asked) replaced; never silently reused."""
        self.begin(self.plan_start(resume=resume, overwrite=overwrite))

    def state(self) -> RunState:
        """What the folder holds, read without touching it."""
        if not self.path.is_dir():
            return RunState(exists=self.path.exists() or self.path.is_symlink(), stadapts=False)
        entries = sorted(p for p in self.path.iterdir() if p.name != LOCK_FILE)
        if not self._made_by_stadapt():
            return RunState(exists=True, stadapts=False, foreign=[_label(p) for p in entries])
        checkpoints = [p.name for p in sorted(self.checkpoints.iterdir()) if (p / META_FILE).is_file()] \
            if self.checkpoints.is_dir() and not self.checkpoints.is_symlink() else []
        return RunState(exists=True, stadapts=True, foreign=_foreign_entries(entries), checkpoints=checkpoints)

    def _made_by_stadapt(self) -> bool:
        """The marker, or (a run from before the marker) a recipe.yaml that stadapt resolved."""
        if (self.path / MARKER_FILE).is_file():
            return True
        try:
            with self.recipe.open(encoding="utf-8") as handle:
                return handle.readline().startswith("# resolved by stadapt")
        except (OSError, UnicodeDecodeError):
            return False

    def begin(self, mode: str) -> None:
        """Make the folder ready for `mode` (from plan_start, under the lock): mark it as stadapt's and, for
        "replace", remove what stadapt wrote there before, never anything else."""
        self.path.mkdir(parents=True, exist_ok=True)
        if mode == "resume" and (self.path / MARKER_FILE).is_file():
            return
        from stadapt import __version__

        atomic_write_text(self.path / MARKER_FILE, json.dumps(
            {"format": MARKER_FORMAT, "format_version": 1, "stadapt_version": __version__,
             "note": "stadapt wrote this folder; `stadapt train --overwrite` replaces only stadapt's files in it"},
            indent=2) + "\n")
        if mode != "replace":
            return
        for entry in sorted(self.path.iterdir()):
            owned = entry.name in RUN_FILES or temp_target(entry.name) in RUN_FILES
            if owned and entry.name not in (MARKER_FILE, LOCK_FILE):
                remove_path(entry)


def _foreign_entries(entries: list[Path]) -> list[str]:
    """The entries (down into checkpoints/ and tensorboard/) that stadapt does not write in a run."""
    found: list[str] = []
    for entry in entries:
        if entry.is_symlink() or (entry.name not in RUN_FILES and temp_target(entry.name) not in RUN_FILES):
            found.append(_label(entry))
        elif entry.name == "checkpoints" and entry.is_dir():
            for ckpt in sorted(entry.iterdir()):
                if ckpt.is_symlink() or not ckpt.is_dir() or not _CHECKPOINT_NAME.fullmatch(ckpt.name):
                    found.append(f"checkpoints/{_label(ckpt)}")
                else:
                    found += [f"checkpoints/{ckpt.name}/{name}" for name in foreign_files(ckpt)]
        elif entry.name == "tensorboard" and entry.is_dir():
            found += [f"tensorboard/{_label(e)}" for e in sorted(entry.iterdir())
                      if e.is_symlink() or not e.is_file() or not e.name.startswith("events.out.tfevents.")]
    return found


def _label(path: Path) -> str:
    """An entry as a refusal names it: `photos/` for a folder, `name (a link)` for a symbolic link."""
    if path.is_symlink():
        return f"{path.name} (a link)"
    return f"{path.name}/" if path.is_dir() else path.name
