"""What a training run is made of once it is set up (`Run`), how it was asked to start (`RunStart`), and
the error of a run that cannot go on: the types the pieces of the loop hand each other."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from stadapt.errors import StadaptError
from stadapt.model.classifier import BuiltModel, VideoClassifier
from stadapt.model.precision import Precision
from stadapt.recipe import Recipe
from stadapt.runs.layout import RunDir
from stadapt.runs.lock import RunLock
from stadapt.runtime.distributed import World
from stadapt.training.distributed import BatchPlan
from stadapt.training.reporting import RunLog
from stadapt.training.state import RunCounters
from stadapt.training.step import TrainStep


class TrainingError(StadaptError):
    """A run that cannot go on (e.g. the loss became NaN)."""


@dataclass(frozen=True)
class RunStart:
    """How `stadapt train` was asked to start: the command's flags and the run folder's lock."""

    source: str
    resume: bool
    auto_resume: bool
    overwrite: bool
    lock: RunLock


@dataclass
class Run:
    """Everything a run is made of, set up before its first step (see `stadapt.training.loop._setup`)."""

    recipe: Recipe
    world: World
    device: torch.device
    precision: Precision
    plan: BatchPlan
    dir: RunDir
    resumed: bool
    built: BuiltModel
    classes: list[str]
    val_entries: list[Any]
    model: VideoClassifier
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: RunCounters
    step: TrainStep
    batches: Iterator[dict[str, Any]]
    log: RunLog
    progress: bool
