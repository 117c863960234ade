"""The training loop: the one loop every way of training in stadapt goes through.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from tqdm import tqdm

from stadapt.checkpoints.format import load_trainable, model_meta, read_checkpoint
from stadapt.data.decode import check_decoder
from stadapt.data.prepared import open_prepared
from stadapt.training.distributed import (
    BatchPlan,
    World,
    init_world,
    plan_batches,
    process_device,
    shutdown,
    world_from_env,
)
from stadapt.training.optim import build_optimizer
from stadapt.training.reporting import RunLog, peak_memory_mb
from stadapt.runs.rundir import RunDir, RunError, RunLock, read_metrics
from stadapt.training.schedule import lr_factor
from stadapt.training.setup import (
    Precision,
    build_from_recipe,
    resolve_device,
    resolve_precision,
    train_dataset,
)
from stadapt.training.signals import StopSignals
from stadapt.training.state import RunCounters, restore_state, rng_state, state_files
from stadapt.training.step import StepResult, TrainStep
from stadapt.inference.views import ValidationResult, validate
from stadapt.errors import StadaptError, first_line
from stadapt.model.classifier import BuiltModel, VideoClassifier
from stadapt.recipe import Recipe, dump_recipe, load_recipe

# keys a resumed run may change: they do not alter what the run computes
RESUMABLE_CHANGES = {"data.num_workers", "train.log_every", "train.val_every", "train.save_every", "train.device",
                     "train.keep_checkpoints", "train.keep_best", "train.loggers", "train.compile",
                     "train.checkpointing", "optim.micro_batch"}


T = TypeVar("T")


class TrainingError(StadaptError):
    """A run that cannot go on (e.g. the loss became NaN)."""


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("options",):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumable(saved: Recipe, now: Recipe) -> None:
    """A resumed run must compute the same thing: any other difference is an error naming the keys."""
    before, after = _flatten(saved.to_dict()), _flatten(now.to_dict())
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        detail = "; ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed[:4])
        raise TrainingError(
            f"the recipe differs from the one the run started with ({detail})",
            "resume with the same recipe and overrides, or start a new run with output.dir=...",
        )


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
    """Everything a run is made of, set up before its first step (see `_setup`)."""

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
                _write_curves(run.dir)
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
    run_dir, resumed, built = _open_run(recipe, world, device, start, len(prepared.classes))
    model = built.model.to(device)
    optimizer = build_optimizer(model, recipe.optim, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scale_loss)
    state = _restore(run_dir, model, optimizer, scaler, world) if resumed else RunCounters()
    forward = _wrap(model, world, device, compile_model=recipe.train.compile)
    dataset = train_dataset(recipe, train_entries, built.variant)
    step = TrainStep(model, optimizer, scaler, precision=precision, device=device, plan=plan, world=world,
                     grad_clip=recipe.optim.grad_clip, forward=forward, transform=dataset.transform)
    batches = iter(_train_loader(dataset, recipe, plan, world, start=state.step * recipe.optim.batch_size,
                                 device=device))
    log = RunLog(run_dir.path, run_dir.metrics, enabled=world.main, resume_step=state.step if resumed else None,
                 loggers=recipe.train.loggers, name=recipe.name, config=recipe.to_dict())
    run = Run(recipe, world, device, precision, plan, run_dir, resumed, built, prepared.classes, val_entries, model,
              optimizer, scaler, state, step, batches, log, progress and world.main)
    _announce(run, len(train_entries))
    return run


def _open_run(recipe: Recipe, world: World, device: torch.device, start: RunStart,
              num_classes: int) -> tuple[RunDir, bool, BuiltModel]:
    """Decide how the run starts (on the main process, agreed by all), build the model (which can still
    refuse), then create or take over the folder and write or check the recipe."""
    assert recipe.output.dir is not None  # load_recipe fills it in
    run = RunDir(recipe.output.dir)
    mode = _on_main(world, lambda: _plan_run(run, start.lock, resume=start.resume, auto_resume=start.auto_resume,
                                             overwrite=start.overwrite, keep=recipe.train.keep_checkpoints))
    resumed = mode == "resume"
    torch.manual_seed(recipe.train.seed)
    built = build_from_recipe(recipe, num_classes, device=device)  # refuses before the folder exists
    check_decoder(recipe.data.decoder, recipe.data.decode_device)  # so does a decoder that cannot load
    if recipe.model.init_from and not resumed:
        _init_adapters(built.model, Path(recipe.model.init_from))

    def claim() -> None:
        _claim_run(run, start.lock, mode, resume=resumed, auto_resume=start.auto_resume, overwrite=start.overwrite)
        if resumed:
            check_resumable(load_recipe(run.recipe, check_files=False), recipe)
        else:
            dump_recipe(recipe, run.recipe, source=start.source)

    _on_main(world, claim)
    world.barrier()
    return run, resumed, built


def _restore(run: RunDir, model: VideoClassifier, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             world: World) -> RunCounters:
    """Weights, optimizer, scaler and RNG states of the last checkpoint; returns its counters."""
    checkpoint = run.resume_checkpoint()
    assert checkpoint is not None
    _, tensors = read_checkpoint(checkpoint)
    load_trainable(model, tensors, str(checkpoint))
    return restore_state(checkpoint, optimizer, scaler, rank=world.rank)


def _announce(run: Run, train_videos: int) -> None:
    """The info event of a new run (metrics.jsonl) and the one-line summary above the progress bar."""
    recipe, plan, counts = run.recipe, run.plan, run.model.parameter_counts()
    if not run.resumed:
        run.log.write({"step": 0, "split": "info", "parameters": counts, "device": str(run.device),
                       "processes": run.world.size, "precision": run.precision.name, "train_videos": train_videos,
                       "val_videos": len(run.val_entries), "micro_batch": plan.micro_batch,
                       "accumulation": plan.accumulation, "tuning": recipe.tuning})
    if run.progress:
        tqdm.write(f"{recipe.name}: {counts['trainable']:,} of {counts['total']:,} parameters train "
                   f"({100 * counts['trainable'] / max(counts['total'], 1):.1f}%); {run.world.size} process(es) x "
                   f"{plan.accumulation} x {plan.micro_batch} clips = batch {plan.global_batch}; {run.device}, "
                   f"{run.precision.name}")


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
                    _log_train(run, window.event(run, lr), bar)
                    window = TrainWindow()
                if last or (t.val_every and state.step % t.val_every == 0):
                    final_val = _validate(run, bar)
                if result.stop and not last:
                    interrupted = signals.name or "a signal to another process"
                if last or state.step == stop_at or interrupted or (t.save_every and state.step % t.save_every == 0):
                    _save(run)
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


def _log_train(run: Run, event: dict[str, Any], bar: Any) -> None:
    run.log.write(event)
    bar.set_postfix(loss=f"{event['loss']:.3f}", acc=f"{event['acc']:.2f}",
                    clips_s=f"{event['clips_per_s']:.1f}", lr=f"{event['lr']:.2e}")


def _validate(run: Run, bar: Any) -> ValidationResult:
    """Validate, log it (split "val"), show it, and remember the best top-1 in the run's counters."""
    state = run.state
    val = validate(run.model, run.recipe, run.val_entries, run.classes, run.built.variant, device=run.device,
                   precision=run.precision, progress=run.progress, world=run.world)
    run.log.write({"step": state.step, "split": "val", **val.to_dict()})
    if run.progress:
        bar.write(f"step {state.step}: val top-1 {100 * (val.top1 or 0):.1f}% "
                  f"({val.videos} videos, {val.skipped} skipped)")
    if val.top1 is not None and val.top1 >= state.best.get("top1", -1.0):
        state.best = {"step": state.step, "top1": val.top1}
        if run.recipe.train.keep_best:
            _save_best(run, val)
    return val


def _checkpoint_meta(run: Run, **extra: Any) -> dict[str, Any]:
    """The stadapt.json of a checkpoint of this run at its current step."""
    recipe = run.recipe
    return model_meta(run.built, run.classes, recipe=recipe.to_dict(), step=run.state.step, tuning=recipe.tuning,
                      **extra)


def _save_best(run: Run, val: ValidationResult) -> None:
    """checkpoints/best: the weights that just scored the best validation top-1, with that score."""
    if run.world.main:
        run.dir.save_best(run.model.trainable_state_dict(), _checkpoint_meta(run, validation=val.to_dict()))
    run.world.barrier()


def _save(run: Run) -> None:
    """Checkpoint the run: weights, metadata, optimizer, scaler, counters and every process's RNG states."""
    rngs = run.world.gather(rng_state())
    if run.world.main:
        recipe, state = run.recipe, run.state
        meta = _checkpoint_meta(run)
        run.dir.save_checkpoint(state.step, run.model.trainable_state_dict(), meta,
                                state_files(run.optimizer, run.scaler, state, rngs), keep=recipe.train.keep_checkpoints)
    run.world.barrier()


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
                tqdm.write(f"warning: {event['error']} ({action})")


def _on_main(world: World, action: Callable[[], T]) -> T:
    """Run `action` on the main process only; every process returns its result, or raises its refusal (so
    that under torchrun all processes stop together instead of waiting for a main process that stopped)."""
    outcome: tuple[Any, ...] = ("ok", None)
    failure: BaseException | None = None
    if world.main:
        try:
            outcome = ("ok", action())
        except StadaptError as exc:
            failure, outcome = exc, ("refused", exc.message, exc.hint)
        except Exception as exc:
            failure, outcome = exc, ("failed", f"the main process failed: {first_line(exc)}", None)
    if world.distributed:
        outcome = world.gather(outcome)[0]
    if failure is not None:
        raise failure
    if outcome[0] != "ok":
        raise TrainingError(outcome[1], outcome[2])
    return outcome[1]


def _plan_run(run: RunDir, lock: RunLock, *, resume: bool, auto_resume: bool, overwrite: bool, keep: int) -> str:
    """How this run starts (RunDir.plan_start), read before the model is built. A folder stadapt made is locked
    first, so a second training into it is refused naming the holder, and a save a crash cut short is
    recovered under the lock (the newest complete checkpoint back as `last`); a new or empty folder (or a
    user's, which is refused) is not touched yet."""
    if run.state().stadapts:
        lock.acquire()
        if not overwrite:
            run.recover_checkpoints(keep)
    return run.plan_start(resume=resume, auto_resume=auto_resume, overwrite=overwrite)


def _claim_run(run: RunDir, lock: RunLock, mode: str, *, resume: bool, auto_resume: bool, overwrite: bool) -> None:
    """Create and lock the run folder once everything that can refuse the run has been checked, then make it
    ready (RunDir.begin). A folder that changed since the plan is planned again under the lock."""
    if not lock.held:
        run.path.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        again = run.plan_start(resume=resume, auto_resume=auto_resume, overwrite=overwrite)
        if (again == "resume") != (mode == "resume"):
            raise RunError(f"{run.path} changed while this run was starting", "run the same command again")
        mode = again
    run.begin(mode)


def _init_adapters(model: torch.nn.Module, checkpoint: Path) -> None:
    """Start from another run's adapters (model.init_from), strictly: every adapter tensor of this model
    present with its shape; the source's head is left out (its classes are not this run's)."""
    from stadapt.checkpoints.format import read_checkpoint
    from stadapt.errors import CheckpointError, preview

    _, tensors = read_checkpoint(checkpoint)
    own = {k: p for k, p in model.named_parameters() if p.requires_grad and k.startswith("adapters.")}
    problems = [f"{k} missing" for k in sorted(set(own) - set(tensors))]
    problems += [f"{k}: {tuple(tensors[k].shape)} != {tuple(p.shape)}" for k, p in own.items()
                 if k in tensors and tuple(tensors[k].shape) != tuple(p.shape)]
    if problems or not own:
        raise CheckpointError(f"model.init_from {checkpoint} does not fit this model's adapters: "
                              f"{preview(problems, 3, '; ') or 'this model has no adapters'}",
                              "start from a checkpoint of the same backbone and adapter layout")
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(tensors[k])


def _wrap(model: torch.nn.Module, world: World, device: torch.device, *, compile_model: bool) -> torch.nn.Module:
    """What the loop calls forward on: DDP around the model when distributed, compiled if asked."""
    wrapped: torch.nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if compile_model:
        wrapped = cast(torch.nn.Module, torch.compile(wrapped))
    return wrapped


class _ShardedStream(torch.utils.data.Sampler):
    """This process's share of each global batch of the clip stream: clips [r*P, (r+1)*P) of every
    `global_batch` consecutive ones, so N processes together see exactly what one process sees."""

    def __init__(self, stream: Any, global_batch: int, world: World) -> None:
        self.stream, self.global_batch, self.world = stream, global_batch, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        share = self.global_batch // self.world.size
        lo = self.world.rank * share
        items = iter(self.stream)
        while True:
            chunk = [next(items) for _ in range(self.global_batch)]
            yield from chunk[lo : lo + share]

    def __len__(self) -> int:
        raise TypeError("the clip stream is endless")


def _train_loader(dataset: Any, recipe: Recipe, plan: BatchPlan, world: World, *, start: int, device: torch.device):
    from torch.utils.data import BatchSampler, DataLoader

    from stadapt.data import collate_clips
    from stadapt.training.stream import ClipStream

    stream: Any = ClipStream(len(dataset), seed=recipe.train.seed, start=start)
    if world.distributed:
        stream = _ShardedStream(stream, plan.global_batch, world)
    workers = recipe.data.num_workers
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(stream, plan.micro_batch, drop_last=False),
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator(),  # worker seeds must not draw from (and shift) the global RNG
        worker_init_fn=_leave_signals_to_the_main_process,
    )


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT/SIGTERM (Ctrl-C and preemption reach the whole process group):
    the main process stops cleanly and shuts them down; they exit on their own if it dies."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _write_curves(run: RunDir) -> None:
    from stadapt.plots import training_curves

    events = read_metrics(run.metrics)
    if any(e.get("split") == "train" for e in events):
        training_curves(events, run.curves)
