"""What a run reports while it trains: metrics.jsonl, TensorBoard event files, peak memory.

Only the main process of a distributed run writes; on the others `RunLog` does nothing.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import torch

from stadapt.engine.rundir import MetricsLog

TENSORBOARD_DIR = "tensorboard"
_SCALARS = {"train": ("loss", "acc", "lr", "clips_per_s", "peak_memory_mb"),
            "val": ("top1", "top5", "mean_class_accuracy")}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated CUDA memory on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


class RunLog:
    """metrics.jsonl plus TensorBoard scalars for train and val events (main process only)."""

    def __init__(self, run_path: Path, metrics_path: Path, *, enabled: bool, resume_step: int | None,
                 tensorboard: bool) -> None:
        self.enabled = enabled
        self._metrics = MetricsLog(metrics_path, resume_step=resume_step) if enabled else None
        self._board = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a resumed run is about to redo
            self._board = SummaryWriter(str(run_path / TENSORBOARD_DIR), purge_step=resume_step or None)

    def write(self, event: dict[str, Any]) -> None:
        if self._metrics is None:
            return
        self._metrics.write(event)
        if self._board is not None and event.get("split") in _SCALARS:
            for key in _SCALARS[event["split"]]:
                value = event.get(key)
                if isinstance(value, (int, float)):
                    self._board.add_scalar(f"{event['split']}/{key}", value, event["step"])

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        if self._board is not None:
            self._board.close()
