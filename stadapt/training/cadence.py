"""What the loop does between steps, on the recipe's cadence: the run's announcement, train events summed
over a window of steps, bad videos reported once, validation (and `checkpoints/best`), checkpoints, and
the training curves at the end."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from stadapt.checkpoints.format import model_meta, text_head_files
from stadapt.inference.views import ValidationResult, validate
from stadapt.runs.layout import RunDir
from stadapt.runs.metrics import read_metrics
from stadapt.training.reporting import peak_memory_mb
from stadapt.training.run import Run
from stadapt.training.state import rng_state, state_files
from stadapt.training.step import StepResult

logger = logging.getLogger(__name__)


@dataclass
class TrainWindow:
    """Sums over the steps since the last train event of metrics.jsonl."""

    loss: float = 0.0  # summed per clip
    correct: float = 0.0
    clips: float = 0.0
    seconds: float = 0.0

    def add(self, result: StepResult, batch_size: int, seconds: float) -> None:
        self.loss += result.loss * batch_size
        self.correct += result.correct
        self.clips += result.clips
        self.seconds += seconds

    def event(self, run: Run, lr: float) -> dict[str, Any]:
        seen = max(self.clips, 1)
        return {"step": run.state.step, "split": "train", "loss": self.loss / seen, "acc": self.correct / seen,
                "lr": lr, "clips_per_s": self.clips / max(self.seconds, 1e-9),
                "bad_videos": run.state.replaced + run.state.skipped,
                "peak_memory_mb": round(peak_memory_mb(run.device), 1)}


class BadVideoLog:
    """Counts, logs (metrics.jsonl, split "data") and shows once per file each video that failed to decode."""

    def __init__(self, run: Run) -> None:
        self.run, self.warned = run, set[str]()

    def report(self, events: list[dict[str, Any]]) -> None:
        state = self.run.state
        for event in events:
            kind = event["kind"]
            setattr(state, kind, getattr(state, kind) + 1)
            self.run.log.write({"step": state.step + 1, "split": "data", "event": f"bad_video_{kind}",
                                "path": event["path"], "error": event["error"]})
            if self.run.world.main and event["path"] not in self.warned:  # shown even without a progress bar
                self.warned.add(event["path"])
                action = "replaced by another video" if kind == "replaced" else "skipped"
                logger.warning("%s (%s)", event["error"], action)


def announce(run: Run, train_videos: int) -> None:
    """The info event of a new run (metrics.jsonl) and the one-line summary above the progress bar."""
    recipe, plan, counts = run.recipe, run.plan, run.model.parameter_counts()
    if not run.resumed:
        run.log.write({"step": 0, "split": "info", "parameters": counts, "device": str(run.device),
                       "processes": run.world.size, "precision": run.precision.name, "train_videos": train_videos,
                       "val_videos": len(run.val_entries), "micro_batch": plan.micro_batch,
                       "accumulation": plan.accumulation, "tuning": recipe.tuning})
    if run.world.main:
        logger.info(f"{recipe.name}: {counts['trainable']:,} of {counts['total']:,} parameters train "
                 f"({100 * counts['trainable'] / max(counts['total'], 1):.1f}%); {run.world.size} process(es) x "
                 f"{plan.accumulation} x {plan.micro_batch} clips = batch {plan.global_batch}; {run.device}, "
                 f"{run.precision.name}")


def log_train(run: Run, event: dict[str, Any], bar: Any) -> None:
    run.log.write(event)
    bar.set_postfix(loss=f"{event['loss']:.3f}", acc=f"{event['acc']:.2f}",
                    clips_s=f"{event['clips_per_s']:.1f}", lr=f"{event['lr']:.2e}")


def validate_run(run: Run, bar: Any) -> ValidationResult:
    """Validate, log it (split "val"), show it, and remember the best top-1 in the run's counters."""
    state = run.state
    val = validate(run.model, run.recipe, run.val_entries, run.classes, run.built.variant, device=run.device,
                   precision=run.precision, progress=run.progress, world=run.world)
    run.log.write({"step": state.step, "split": "val", **val.to_dict()})
    if run.world.main:
        logger.info(f"step {state.step}: val top-1 {100 * (val.top1 or 0):.1f}% "
                 f"({val.videos} videos, {val.skipped} skipped)")
    if val.top1 is not None and val.top1 >= state.best.get("top1", -1.0):
        state.best = {"step": state.step, "top1": val.top1}
        if run.recipe.train.keep_best:
            _save_best(run, val)
    return val


def _meta_for_save(run: Run, **extra: Any) -> dict[str, Any]:
    """The stadapt.json of a checkpoint of this run at its current step."""
    recipe = run.recipe
    return model_meta(run.built, run.classes, recipe=recipe.to_dict(), step=run.state.step, tuning=recipe.tuning,
                      **extra)


def _save_best(run: Run, val: ValidationResult) -> None:
    """checkpoints/best: the weights that just scored the best validation top-1, with that score."""
    if run.world.main:
        run.dir.save_best(run.model.trainable_state_dict(), _meta_for_save(run, validation=val.to_dict()),
                          text_head_files(run.model))
    run.world.barrier()


def save(run: Run) -> None:
    """Checkpoint the run: weights, metadata, optimizer, scaler, counters and every process's RNG states."""
    rngs = run.world.gather(rng_state())
    if run.world.main:
        recipe, state = run.recipe, run.state
        meta = _meta_for_save(run)
        extra = {**state_files(run.optimizer, run.scaler, state, rngs), **text_head_files(run.model)}
        run.dir.save_checkpoint(state.step, run.model.trainable_state_dict(), meta, extra,
                                keep=recipe.train.keep_checkpoints)
    run.world.barrier()


def write_curves(run: RunDir) -> None:
    """The training curves PNG of the run's metrics.jsonl (when it has train events)."""
    from stadapt.plots import training_curves

    events = read_metrics(run.metrics)
    if any(e.get("split") == "train" for e in events):
        training_curves(events, run.curves)
