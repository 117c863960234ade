"""A run's checkpoints/ folder: saving `last` (the one it replaces kept as `step_N`, the oldest pruned) and
`best`, and finishing what a save cut short by a crash left, so a resume always finds a complete checkpoint.

    checkpoints/last/      adapters + head, metadata, trainer state (what --resume continues)
    checkpoints/step_N/    earlier checkpoints, the newest `train.keep_checkpoints - 1` of them
    checkpoints/best/      the checkpoint of the best validation top-1 so far (train.keep_best), no trainer state
    checkpoints/.last.*, checkpoints/.best.*   a save's staging and swap folders, gone once it finished

Every function takes the run's checkpoints/ folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from stadapt.checkpoints.files import META_FILE
from stadapt.checkpoints.meta import checkpoint_meta, complete_best_step, complete_step
from stadapt.errors import DiskFullError
from stadapt.fileio import fsync_dir
from stadapt.runs.errors import continue_after_disk_full


def step_checkpoints(folder: Path) -> list[Path]:
    """The kept earlier checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if (p / META_FILE).is_file())


def complete_checkpoints(folder: Path) -> list[tuple[int, int, Path]]:
    """(step, preference, path) of every complete checkpoint, oldest first: `last`, the kept
    `step_*`, and what a save cut short by a crash leaves (`.last.old`, a staging `.last.*`)."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        preference = 3 if path.name == "last" else 2 if path.name.startswith("step_") else \
            1 if path.name.startswith(".last.") else 0
        step = complete_step(path) if preference else None
        if step is not None:
            found.append((step, preference, path))
    return sorted(found)


def resume_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a resume continues from: the newest complete one, `last` on a tie. Only a
    crash in the middle of a save makes it another (`recover_checkpoints` puts it back as `last`)."""
    found = complete_checkpoints(folder)
    return found[-1][2] if found else None


def recover_checkpoints(folder: Path, keep: int) -> Path | None:
    """Finish what a save cut short by a crash left: the newest complete checkpoint becomes `last`
    (a `last` it replaces is kept as `step_N` when `keep` > 1), then the save's leftovers, all
    older or incomplete, go. Nothing changes when no checkpoint is complete. Returns `last`.
    A `best` save cut short is finished too (`recover_best`)."""
    recover_best(folder)
    found = complete_checkpoints(folder)
    if not found:
        return None
    newest, last = found[-1][2], folder / "last"
    if newest != last:
        if last.exists():
            last_step = complete_step(last)
            aside = folder / f"step_{last_step:08d}" if last_step is not None and keep > 1 else None
            if aside is not None and not aside.exists():
                os.replace(last, aside)
            else:
                shutil.rmtree(last)
        os.replace(newest, last)
        fsync_dir(folder)
    for leftover in folder.glob(".last.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    _prune_steps(folder, keep)
    return last


def recover_best(folder: Path) -> Path | None:
    """Finish a save of `best` that a crash cut short: of `best`, the replaced `.best.old` and a complete
    staging `.best.*`, the newest complete one (a later best is a better one) becomes `best`; the rest go."""
    if not folder.is_dir():
        return None
    best = folder / "best"
    found = sorted((step, path.name == "best", path) for path in folder.iterdir()
                   if (path.name == "best" or path.name.startswith(".best."))
                   and (step := complete_best_step(path)) is not None)
    if found and found[-1][2] != best:
        if best.exists():
            shutil.rmtree(best)
        os.replace(found[-1][2], best)
        fsync_dir(folder)
    for leftover in folder.glob(".best.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return best if best.is_dir() else None


def save_best(folder: Path, tensors: Any, meta: dict[str, Any], extra_files: dict[str, bytes] | None = None) -> Path:
    """Write `best` atomically (the same staging and swap as `last`; a crash leaves a complete one that
    `recover_best` puts back). Inference only: no trainer state; `extra_files` what a reader needs besides."""
    from stadapt.checkpoints.format import write_checkpoint

    try:
        return write_checkpoint(folder / "best", tensors, meta, overwrite=True, extra_files=extra_files)
    except DiskFullError as exc:
        raise DiskFullError(exc.path, exc.reason, exc.intact, continue_after_disk_full()) from None


def save_checkpoint(folder: Path, step: int, tensors: Any, meta: dict[str, Any], extra_files: dict[str, bytes],
                    keep: int) -> Path:
    """Write `last` atomically; the one it replaces becomes `step_<its step>` while fewer than
    `keep` checkpoints exist, and older step checkpoints are removed."""
    from stadapt.checkpoints.format import write_checkpoint

    last, previous = folder / "last", None
    if keep > 1 and (last / META_FILE).is_file():
        old_step = _replaced_step(last)
        if 0 <= old_step < step:
            previous = folder / f"step_{old_step:08d}"
    try:
        write_checkpoint(last, tensors, meta, overwrite=True, extra_files=extra_files, keep_replaced_as=previous)
    except DiskFullError as exc:  # say how to go on: --auto-resume continues, or restarts a run with none
        raise DiskFullError(exc.path, exc.reason, exc.intact, continue_after_disk_full()) from None
    _prune_steps(folder, keep)
    return last


def _replaced_step(last: Path) -> int:
    """The step of the `last` a save replaces (0 where it records none), -1 where it cannot be read."""
    recorded = checkpoint_meta(last)
    try:
        return int(recorded.get("step", 0)) if recorded is not None else -1
    except (ValueError, TypeError):
        return -1


def _prune_steps(folder: Path, keep: int) -> None:
    kept = step_checkpoints(folder)
    for stale in kept[: max(0, len(kept) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
