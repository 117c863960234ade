"""A checkpoint directory looked at without loading it: its stadapt.json read leniently, the step it records,
and whether a save finished it (a training checkpoint with its trainer state, or an inference one).

    DIR/trainer_state.safetensors   optimizer tensors and RNG states of a training checkpoint (stadapt.training.state)
    DIR/trainer_state.json          its step, counters, optimizer param groups and scaler state

For the code that names, compares, rotates and recovers checkpoints (the run folders): a damaged or
half-written checkpoint is something to skip or report there, never an error, so nothing here raises on one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stadapt.checkpoints.files import META_FILE, STATE_META, STATE_TENSORS, safetensors_intact, tensors_path


def checkpoint_meta(checkpoint: Path) -> dict[str, Any] | None:
    """stadapt.json of checkpoint directory `checkpoint` as written (no format check, no upgrade), or None where
    it is missing, unreadable or not a JSON object."""
    try:
        meta = json.loads((checkpoint / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def checkpoint_step(checkpoint: Path | None) -> int | None:
    """The step a checkpoint's stadapt.json records, or None (no checkpoint, no readable step)."""
    meta = checkpoint_meta(checkpoint) if checkpoint is not None else None
    if meta is None:
        return None
    try:
        return int(meta["step"])
    except (ValueError, TypeError, KeyError):
        return None


def _recorded_step(checkpoint: Path) -> int | None:
    """The step of a checkpoint whose stadapt.json is stadapt checkpoint metadata, else None."""
    from stadapt.checkpoints.format import FORMAT

    meta = checkpoint_meta(checkpoint)
    try:
        return int(meta["step"]) if meta is not None and meta.get("format") == FORMAT else None
    except (ValueError, TypeError, KeyError):
        return None


def complete_step(checkpoint: Path) -> int | None:
    """The step of a complete training checkpoint directory (metadata, tensors and trainer state all
    there and whole), else None."""
    step = _recorded_step(checkpoint)
    try:
        json.loads((checkpoint / STATE_META).read_text())
    except (OSError, ValueError):
        return None
    if step is None:
        return None
    whole = safetensors_intact(tensors_path(checkpoint)) and safetensors_intact(checkpoint / STATE_TENSORS)
    return step if whole else None


def complete_best_step(checkpoint: Path) -> int | None:
    """The step of a complete best checkpoint directory (metadata and tensors whole), else None."""
    step = _recorded_step(checkpoint)
    return step if step is not None and safetensors_intact(tensors_path(checkpoint)) else None
