"""The training loop: the one loop every way of training in stadapt goes through, as orchestration of
named pieces (`start`: claim or resume the run folder; `wrap`: adapter init, DDP, compile; `loaders`:
the sharded clip stream; `step`: one optimizer step; `cadence`: logging, validation, checkpoints).

One optimizer step = `optim.batch_size` clips over all processes (torchrun), each process reaching
its share by accumulating micro-batches of at most `optim.micro_batch`. The learning rate is a
function of the step (warmup + cosine), the data order a function of (seed, step), the augmentation a
function of (seed, epoch, video): with the optimizer, scaler and RNG states saved beside the weights,
a resumed run continues exactly where it stopped. SIGTERM / SIGINT end a run cleanly after the
current step with a checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from stadapt.checkpoints.format import load_trainable, read_checkpoint
from stadapt.data.prepared import open_prepared
from stadapt.inference.views import ValidationResult
from stadapt.model.classifier import VideoClassifier
from stadapt.recipe import Recipe
from stadapt.runs.layout import RunDir
from stadapt.runs.lock import RunLock
from stadapt.runtime.build import train_dataset
from stadapt.runtime.device import resolve_device
from stadapt.runtime.distributed import World, init_world, process_device, shutdown, world_from_env
from stadapt.runtime.precision import resolve_precision
from stadapt.training.cadence import BadVideoLog, TrainWindow, announce, log_train, save, validate_run, write_curves
from stadapt.training.distributed import plan_batches
from stadapt.training.loaders import train_loader
from stadapt.training.optim import build_optimizer
from stadapt.training.reporting import RunLog
from stadapt.training.run import Run, RunStart, TrainingError
from stadapt.training.schedule import lr_factor
from stadapt.training.signals import StopSignals
from stadapt.training.start import open_run
from stadapt.training.state import RunCounters, restore_state
from stadapt.training.step import StepResult, TrainStep
from stadapt.training.wrap import wrap_model


@dataclass
class TrainResult:
    """Where a run went and how far it got."""

    run_dir: Path
    steps: int
    seconds: float
    final_val: ValidationResult | None
    parameters: dict[str, int]
    finished: bool  # reached optim.steps (False: stopped by --stop-after or a signal; resume to go on)
    total_steps: int
    interrupted: str | None  # the signal that stopped the run, if one did
    processes: int


def train(recipe: Recipe, *, source: str = "<recipe>", resume: bool = False, auto_resume: bool = False,
          overwrite: bool = False, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) the run that `recipe` describes; returns where it went and how it did.

    `resume=True` continues the run in `output.dir` (an error if there is none); `auto_resume=True`
    continues it if there is one and starts it otherwise (what a job that may be restarted wants).
    `stop_after` ends this invocation after that many steps with a checkpoint. Under torchrun every
    process calls this; only the first writes.
    """
    device = process_device(resolve_device(recipe.train.device), world_from_env())  # this process's GPU
    assert recipe.output.dir is not None  # load_recipe fills it in: runs/NAME
    world = init_world(device)
    try:
        with RunLock(recipe.output.dir) as lock:  # held by the main process until the run ends
            start = RunStart(source=source, resume=resume, auto_resume=auto_resume, overwrite=overwrite, lock=lock)
            run = _setup(recipe, world, device, start, progress=progress)
            try:
                final_val, interrupted = _run_steps(run, stop_after)
            finally:
                run.log.close()
                run.batches = iter(())  # shuts the loader's workers down
            if world.main:
                write_curves(run.dir)
            o = recipe.optim
            return TrainResult(run.dir.path, run.state.step, run.state.train_seconds, final_val,
                               run.model.parameter_counts(), finished=run.state.step == o.steps, total_steps=o.steps,
                               interrupted=interrupted, processes=world.size)
    finally:
        shutdown(world)


def _setup(recipe: Recipe, world: World, device: torch.device, start: RunStart, *, progress: bool) -> Run:
    """Model, optimizer, state and data of the run, its folder claimed; everything that can refuse the run is
    checked before the folder is touched."""
    precision = resolve_precision(recipe.train.precision, device)
    plan = plan_batches(recipe.optim.batch_size, recipe.micro_batch, world.size)
    prepared = open_prepared(recipe.data.root)
    train_entries = prepared.entries(recipe.data.train_list)
    val_entries = prepared.entries(recipe.data.val_list)
    run_dir, resumed, built = open_run(recipe, world, device, start, len(prepared.classes),
                                       prepared.classes)
    model = built.model.to(device)
    optimizer = build_optimizer(model, recipe.optim, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scale_loss)
    state = _restore(run_dir, model, optimizer, scaler, world) if resumed else RunCounters()
    forward = wrap_model(model, world, device, compile_model=recipe.train.compile)
    dataset = train_dataset(recipe, train_entries, built.variant)
    step = TrainStep(model, optimizer, scaler, precision=precision, device=device, plan=plan, world=world,
                     grad_clip=recipe.optim.grad_clip, forward=forward, transform=dataset.transform)
    batches = iter(train_loader(dataset, recipe, plan, world, start=state.step * recipe.optim.batch_size,
                                device=device))
    log = RunLog(run_dir.path, run_dir.metrics, enabled=world.main, resume_step=state.step if resumed else None,
                 loggers=recipe.train.loggers, name=recipe.name, config=recipe.to_dict())
    run = Run(recipe, world, device, precision, plan, run_dir, resumed, built, prepared.classes, val_entries, model,
              optimizer, scaler, state, step, batches, log, progress and world.main)
    announce(run, len(train_entries))
    return run


def _restore(run: RunDir, model: VideoClassifier, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             world: World) -> RunCounters:
    """Weights, optimizer, scaler and RNG states of the last checkpoint; returns its counters."""
    checkpoint = run.resume_checkpoint()
    assert checkpoint is not None
    _, tensors = read_checkpoint(checkpoint)
    load_trainable(model, tensors, str(checkpoint))
    return restore_state(checkpoint, optimizer, scaler, rank=world.rank)


def _run_steps(run: Run, stop_after: int | None) -> tuple[ValidationResult | None, str | None]:
    """Step until the run ends, `stop_after` steps are done or a signal arrives; validate, log and save on
    the recipe's cadence. Returns the last validation and the signal that stopped the run, if any."""
    o, t, state = run.recipe.optim, run.recipe.train, run.state
    stop_at = o.steps if stop_after is None else min(o.steps, state.step + stop_after)
    final_val, interrupted, window = None, None, TrainWindow()
    bad_videos = BadVideoLog(run)
    bar = tqdm(total=o.steps, initial=state.step, unit="step", desc=run.recipe.name, disable=not run.progress,
               dynamic_ncols=True)
    run.model.train()
    try:
        with StopSignals() as signals:
            while state.step < stop_at:
                tick = time.perf_counter()
                lr = o.lr * lr_factor(state.step, o.warmup_steps, o.steps)
                result = run.step(run.batches, lr, stop=signals.received is not None)
                bad_videos.report(result.bad_videos)
                _check_step(run, result)
                elapsed = time.perf_counter() - tick
                state.step, state.clips_seen = state.step + 1, state.clips_seen + result.clips
                state.train_seconds += elapsed
                window.add(result, o.batch_size, elapsed)
                bar.update(1)
                last = state.step == o.steps
                if state.step % t.log_every == 0 or last:
                    log_train(run, window.event(run, lr), bar)
                    window = TrainWindow()
                if last or (t.val_every and state.step % t.val_every == 0):
                    final_val = validate_run(run, bar)
                if result.stop and not last:
                    interrupted = signals.name or "a signal to another process"
                if last or state.step == stop_at or interrupted or (t.save_every and state.step % t.save_every == 0):
                    save(run)
                if interrupted:
                    break
    finally:
        bar.close()
    return final_val, interrupted


def _check_step(run: Run, result: StepResult) -> None:
    """A step that trained nothing or whose loss is not finite ends the run (its optimizer did not step)."""
    step = run.state.step + 1
    if result.clips == 0:
        raise TrainingError(
            f"no clip of step {step} could be decoded, even after trying other videos; "
            f"the training list {run.recipe.data.train_path} names mostly broken videos",
            "prepare the data again with `stadapt prepare-data ... --check` so they go to quarantine.txt",
        )
    if not math.isfinite(result.loss):
        raise TrainingError(
            f"the loss became {result.loss} at step {step}; the last good checkpoint is "
            f"{run.dir.resume_checkpoint() or run.dir.last}",
            "lower optim.lr, add optim.grad_clip, or use train.precision=fp32",
        )
