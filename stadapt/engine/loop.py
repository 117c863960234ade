"""The training loop: the one loop every way of training in stadapt goes through.

One optimizer step = `optim.batch_size` clips over all processes (torchrun), each process reaching
its share by accumulating micro-batches of at most `optim.micro_batch`. The learning rate is a
function of the step (warmup + cosine), the data order a function of (seed, step), the augmentation a
function of (seed, epoch, video): with the optimizer, scaler and RNG states saved beside the weights,
a resumed run continues exactly where it stopped. SIGTERM / SIGINT end a run cleanly after the
current step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F

from stadapt.checkpoint import model_meta
from stadapt.data.on_device import to_model_input
from stadapt.engine.distributed import (
    BatchPlan,
    World,
    init_world,
    plan_batches,
    process_device,
    shutdown,
    world_from_env,
)
from stadapt.engine.optim import build_optimizer, set_lr
from stadapt.engine.reporting import RunLog, peak_memory_mb
from stadapt.engine.rundir import RunDir, RunError, RunLock, read_metrics
from stadapt.engine.schedule import lr_factor
from stadapt.engine.setup import (
    build_from_recipe,
    eval_dataset,
    parse_views,
    resolve_device,
    resolve_precision,
    train_dataset,
)
from stadapt.engine.signals import StopSignals
from stadapt.engine.state import Progress, restore_state, rng_state, state_files
from stadapt.errors import StadaptError, first_line
from stadapt.recipe import Recipe, dump_recipe

# keys a resumed run may change: they do not alter what the run computes
RESUMABLE_CHANGES = {"data.num_workers", "train.log_every", "train.val_every", "train.save_every", "train.device",
                     "train.keep_checkpoints", "train.tensorboard", "train.compile", "train.checkpointing",
                     "optim.micro_batch"}


T = TypeVar("T")


class TrainingError(StadaptError):
    """A run that cannot go on (e.g. the loss became NaN)."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    final_val: dict[str, Any] | None
    parameters: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


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
            return _train(recipe, world, device, source=source, resume=resume, auto_resume=auto_resume,
                          overwrite=overwrite, progress=progress, stop_after=stop_after, lock=lock)
    finally:
        shutdown(world)


def _train(recipe: Recipe, world: World, device: torch.device, *, source: str, resume: bool, auto_resume: bool,
           overwrite: bool, progress: bool, stop_after: int | None, lock: RunLock) -> TrainResult:
    from tqdm import tqdm

    from stadapt.data.prepared import open_prepared
    from stadapt.recipe import load_recipe

    # everything that can refuse the run is checked before the run directory is touched
    precision = resolve_precision(recipe.train.precision, device)
    plan = plan_batches(recipe.optim.batch_size, recipe.micro_batch, world.size)
    prepared = open_prepared(recipe.data.root)
    train_entries = prepared.entries(recipe.data.train_list)
    val_entries = prepared.entries(recipe.data.val_list)

    assert recipe.output.dir is not None
    run = RunDir(recipe.output.dir)
    # decided on the main process (under the lock when the folder is stadapt's), agreed by every process
    mode = _on_main(world, lambda: _plan_run(run, lock, resume=resume, auto_resume=auto_resume, overwrite=overwrite,
                                                       keep=recipe.train.keep_checkpoints))
    resume = mode == "resume"
    torch.manual_seed(recipe.train.seed)
    built = build_from_recipe(recipe, len(prepared.classes), device=device)  # refuses before the folder exists
    if recipe.model.init_from and not resume:
        _init_adapters(built.model, Path(recipe.model.init_from))

    def claim() -> None:
        _claim_run(run, lock, mode, resume=resume, auto_resume=auto_resume, overwrite=overwrite)
        if resume:
            check_resumable(load_recipe(run.recipe, check_files=False), recipe)
        else:
            dump_recipe(recipe, run.recipe, source=source)

    _on_main(world, claim)
    world.barrier()
    progress = progress and world.main

    model = built.model.to(device)
    o = recipe.optim
    optimizer = build_optimizer(model, o, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scale_loss)
    state = Progress()
    if resume:
        from stadapt.checkpoint import load_trainable, read_checkpoint

        checkpoint = run.resume_checkpoint()
        assert checkpoint is not None
        _, tensors = read_checkpoint(checkpoint)
        load_trainable(model, tensors, str(checkpoint))
        state = restore_state(checkpoint, optimizer, scaler, rank=world.rank)
    counts = model.parameter_counts()
    forward = _wrap(model, world, device, compile_model=recipe.train.compile)

    dataset = train_dataset(recipe, train_entries, built.variant)
    batches = iter(_train_loader(dataset, recipe, plan, world, start=state.step * o.batch_size, device=device))
    log = RunLog(run.path, run.metrics, enabled=world.main, resume_step=state.step if resume else None,
                 tensorboard=recipe.train.tensorboard)
    if not resume:
        log.write({"step": 0, "split": "info", "parameters": counts, "device": str(device), "processes": world.size,
                   "precision": precision.name, "train_videos": len(train_entries), "val_videos": len(val_entries),
                   "micro_batch": plan.micro_batch, "accumulation": plan.accumulation,
                   "tuning": recipe.tuning})
    if progress:
        tqdm.write(f"{recipe.name}: {counts['trainable']:,} of {counts['total']:,} parameters train "
                   f"({100 * counts['trainable'] / max(counts['total'], 1):.1f}%); {world.size} process(es) x "
                   f"{plan.accumulation} x {plan.micro_batch} clips = batch {plan.global_batch}; {device}, "
                   f"{precision.name}")

    def validate() -> dict[str, Any]:
        return _validate(model, recipe, val_entries, prepared.classes, built.variant, device, precision, progress,
                         world)

    def save() -> None:
        rngs = world.gather(rng_state())
        if world.main:
            meta = model_meta(built, prepared.classes, recipe=recipe.to_dict(), step=state.step, tuning=recipe.tuning)
            run.save_checkpoint(state.step, model.trainable_state_dict(), meta,
                                state_files(optimizer, scaler, state, rngs), keep=recipe.train.keep_checkpoints)
        world.barrier()

    warned: set[str] = set()

    def report_bad_videos(events: list[dict[str, Any]]) -> None:
        """Count, log (metrics.jsonl, split "data") and show once per file each video that failed."""
        for event in events:
            kind = event["kind"]
            setattr(state, kind, getattr(state, kind) + 1)
            log.write({"step": state.step + 1, "split": "data", "event": f"bad_video_{kind}",
                       "path": event["path"], "error": event["error"]})
            if world.main and event["path"] not in warned:  # warnings show even without a progress bar
                warned.add(event["path"])
                action = "replaced by another video" if kind == "replaced" else "skipped"
                tqdm.write(f"warning: {event['error']} ({action})")

    final_val = None
    stop_at = o.steps if stop_after is None else min(o.steps, state.step + stop_after)
    window = {"loss": 0.0, "correct": 0.0, "clips": 0.0, "seconds": 0.0}
    bar = tqdm(total=o.steps, initial=state.step, unit="step", desc=recipe.name, disable=not progress,
               dynamic_ncols=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    interrupted = None
    try:
        with StopSignals() as signals:
            while state.step < stop_at:
                tick = time.perf_counter()
                lr = o.lr * lr_factor(state.step, o.warmup_steps, o.steps)
                set_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
                correct: float  # counts, summed over the processes as floats
                clips: float
                loss_sum, correct, clips, bad = 0.0, 0, 0, []
                for k in range(plan.accumulation):
                    batch = next(batches)
                    bad += [{**e, "kind": "replaced"} for e in batch["replaced"]]
                    bad += [{**e, "kind": "skipped"} for e in batch["skipped"]]
                    last_pass = k == plan.accumulation - 1
                    with _no_sync(forward, world, last_pass):
                        if batch["video"] is None:
                            if last_pass and world.distributed:  # join the gradient all-reduce all the same
                                (cast(torch.Tensor, sum(p.sum() for p in trainable)) * 0.0).backward()
                            continue
                        video = to_model_input(batch, dataset.transform, device)  # uint8 -> normalised, there
                        labels = batch["label"].to(device, non_blocking=True)
                        with precision.autocast(device):
                            logits = forward(video)
                        # sum over this pass / global batch, x processes because DDP averages gradients
                        loss = F.cross_entropy(logits.float(), labels, reduction="sum") * (world.size / o.batch_size)
                        scaler.scale(loss).backward()
                    loss_sum += loss.item() / world.size
                    correct += int((logits.argmax(dim=1) == labels).sum())
                    clips += len(labels)
                loss_sum, correct, clips, n_bad, stop = world.sum(
                    [loss_sum, correct, clips, len(bad), float(signals.received is not None)])
                if n_bad:
                    report_bad_videos([e for part in world.gather(bad) for e in part])
                if clips == 0:
                    raise TrainingError(
                        f"no clip of step {state.step + 1} could be decoded, even after trying other videos; "
                        f"the training list {recipe.data.train_path} names mostly broken videos",
                        "prepare the data again with `stadapt prepare-data ... --check` so they go to quarantine.txt",
                    )
                if not math.isfinite(loss_sum):
                    raise TrainingError(
                        f"the loss became {loss_sum} at step {state.step + 1}; the last good checkpoint is "
                        f"{run.resume_checkpoint() or run.last}",
                        "lower optim.lr, add optim.grad_clip, or use train.precision=fp32",
                    )
                if o.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, o.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                state.step += 1
                state.clips_seen += int(clips)
                elapsed = time.perf_counter() - tick
                state.train_seconds += elapsed
                window["loss"] += loss_sum * o.batch_size
                window["correct"] += correct
                window["clips"] += clips
                window["seconds"] += elapsed
                bar.update(1)
                if state.step % recipe.train.log_every == 0 or state.step == o.steps:
                    seen = max(window["clips"], 1)
                    event = {"step": state.step, "split": "train", "loss": window["loss"] / seen,
                             "acc": window["correct"] / seen, "lr": lr,
                             "clips_per_s": window["clips"] / max(window["seconds"], 1e-9),
                             "bad_videos": state.replaced + state.skipped,
                             "peak_memory_mb": round(peak_memory_mb(device), 1)}
                    log.write(event)
                    bar.set_postfix(loss=f"{event['loss']:.3f}", acc=f"{event['acc']:.2f}",
                                    clips_s=f"{event['clips_per_s']:.1f}", lr=f"{lr:.2e}")
                    window = {"loss": 0.0, "correct": 0.0, "clips": 0.0, "seconds": 0.0}
                last = state.step == o.steps
                if last or (recipe.train.val_every and state.step % recipe.train.val_every == 0):
                    final_val = validate()
                    log.write({"step": state.step, "split": "val", **final_val})
                    if progress:
                        bar.write(f"step {state.step}: val top-1 {100 * (final_val['top1'] or 0):.1f}% "
                                  f"({final_val['videos']} videos, {final_val['skipped']} skipped)")
                    if final_val["top1"] is not None and final_val["top1"] >= state.best.get("top1", -1.0):
                        state.best = {"step": state.step, "top1": final_val["top1"]}
                if stop and not last:
                    interrupted = signals.name or "a signal to another process"
                if (last or state.step == stop_at or interrupted
                        or (recipe.train.save_every and state.step % recipe.train.save_every == 0)):
                    save()
                if interrupted:
                    break
    finally:
        bar.close()
        log.close()
        del batches
    if world.main:
        _write_curves(run)
    return TrainResult(run.path, state.step, state.train_seconds, final_val, counts,
                       extra={"finished": state.step == o.steps, "total_steps": o.steps, "interrupted": interrupted,
                              "processes": world.size})


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
    from stadapt.checkpoint import read_checkpoint
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


def _no_sync(forward: torch.nn.Module, world: World, last_pass: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step (accumulation)."""
    ddp: Any = getattr(forward, "_orig_mod", forward)
    if world.distributed and not last_pass and hasattr(ddp, "no_sync"):
        return ddp.no_sync()
    return contextlib.nullcontext()


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
    from stadapt.engine.stream import ClipStream

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


def _validate(model, recipe: Recipe, entries, classes, variant, device, precision, progress,
              world: World) -> dict[str, Any]:
    from stadapt.evaluate import predict_sharded, summarize

    views = parse_views(recipe.data.views)

    def dataset(part: list[Any]) -> Any:
        return eval_dataset(part, variant, frames=recipe.data.frames, sampling=recipe.data.sampling,
                            stride=recipe.data.stride, views=views)

    per_batch = max(1, recipe.micro_batch // (views[0] * views[1]))
    pred = predict_sharded(model, entries, dataset, world, batch_size=per_batch, num_workers=recipe.data.num_workers,
                           device=device, precision=precision, progress=progress, desc="validate")
    summary = summarize(pred, classes)
    return {"top1": summary["top1"], "top5": summary["top5"], "mean_class_accuracy": summary["mean_class_accuracy"],
            "videos": summary["videos"], "skipped": len(pred.skipped), "views": recipe.data.views}


def _write_curves(run: RunDir) -> None:
    from stadapt.plots import training_curves

    events = read_metrics(run.metrics)
    if any(e.get("split") == "train" for e in events):
        training_curves(events, run.curves)
