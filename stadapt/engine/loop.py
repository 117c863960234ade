"""The training loop: the one loop every way of training in stadapt goes through.

One optimizer step = `optim.batch_size` clips, reached by accumulating micro-batches of
`optim.micro_batch`. The learning rate is a function of the step (warmup + cosine), the data order a
function of (seed, step), the augmentation a function of (seed, epoch, video): with the optimizer,
scaler and RNG states saved beside the weights, a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stadapt.checkpoint import model_meta, write_checkpoint
from stadapt.engine.optim import build_optimizer, set_lr
from stadapt.engine.rundir import MetricsLog, RunDir, read_metrics
from stadapt.engine.schedule import lr_factor
from stadapt.engine.setup import (
    build_from_recipe,
    eval_dataset,
    parse_views,
    resolve_device,
    resolve_precision,
    train_dataset,
)
from stadapt.engine.state import Progress, restore_state, state_files
from stadapt.errors import StadaptError
from stadapt.recipe import Recipe, dump_recipe

# keys a resumed run may change: they do not alter what the run computes
RESUMABLE_CHANGES = {"data.num_workers", "train.log_every", "train.val_every", "train.save_every", "train.device"}


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
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        detail = "; ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed[:4])
        raise TrainingError(
            f"the recipe differs from the one the run started with ({detail})",
            "resume with the same recipe and overrides, or start a new run with output.dir=...",
        )


def train(recipe: Recipe, *, source: str = "<recipe>", resume: bool = False, overwrite: bool = False,
          progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) the run that `recipe` describes; returns where it went and how it did.

    `stop_after` ends this invocation after that many steps with a checkpoint (for time-limited jobs);
    `resume=True` continues it.
    """
    from tqdm import tqdm

    from stadapt.data.prepared import open_prepared
    from stadapt.recipe import load_recipe

    run = RunDir(recipe.output.dir)
    run.start(resume=resume, overwrite=overwrite)
    if resume:
        check_resumable(load_recipe(run.recipe, check_files=False), recipe)
    else:
        dump_recipe(recipe, run.recipe, source=source)

    device = resolve_device(recipe.train.device)
    precision = resolve_precision(recipe.train.precision, device)
    prepared = open_prepared(recipe.data.root)
    train_entries = prepared.entries(recipe.data.train_list)
    val_entries = prepared.entries(recipe.data.val_list)

    torch.manual_seed(recipe.train.seed)
    built = build_from_recipe(recipe, len(prepared.classes))
    model = built.model.to(device)
    o = recipe.optim
    optimizer = build_optimizer(model, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scale_loss)
    state = Progress()
    if resume:
        from stadapt.checkpoint import load_trainable, read_checkpoint

        _, tensors = read_checkpoint(run.last)
        load_trainable(model, tensors, str(run.last))
        state = restore_state(run.last, optimizer, scaler)
    counts = model.parameter_counts()

    dataset = train_dataset(recipe, train_entries, built.variant)
    loader = _train_loader(dataset, recipe, start=state.step * o.batch_size, device=device)
    metrics = MetricsLog(run.metrics, resume_step=state.step if resume else None)
    if not resume:
        metrics.write({"step": 0, "split": "info", "parameters": counts, "device": str(device),
                       "precision": precision.name, "train_videos": len(train_entries),
                       "val_videos": len(val_entries), "accumulation": recipe.accumulation})

    def validate() -> dict[str, Any]:
        return _validate(model, recipe, val_entries, prepared.classes, built.variant, device, precision, progress)

    def save() -> None:
        meta = model_meta(built, prepared.classes, recipe=recipe.to_dict(), step=state.step, tuning=recipe.tuning)
        write_checkpoint(run.last, model.trainable_state_dict(), meta, overwrite=True,
                         extra_files=state_files(optimizer, scaler, state))

    warned: set[str] = set()

    def report_bad_videos(batch: dict[str, Any]) -> None:
        """Count, log (metrics.jsonl, split "data") and show once per file each video that failed."""
        for kind, events in (("replaced", batch["replaced"]), ("skipped", batch["skipped"])):
            for event in events:
                setattr(state, kind, getattr(state, kind) + 1)
                metrics.write({"step": state.step + 1, "split": "data", "event": f"bad_video_{kind}",
                               "path": event["path"], "error": event["error"]})
                if event["path"] not in warned:
                    warned.add(event["path"])
                    action = "replaced by another video" if kind == "replaced" else "skipped"
                    bar.write(f"warning: {event['error']} ({action})")

    final_val = None
    stop_at = o.steps if stop_after is None else min(o.steps, state.step + stop_after)
    window = {"loss": 0.0, "correct": 0, "clips": 0, "seconds": 0.0}
    bar = tqdm(total=o.steps, initial=state.step, unit="step", desc=recipe.name, disable=not progress,
               dynamic_ncols=True)
    batches = iter(loader)
    model.train()
    try:
        while state.step < stop_at:
            tick = time.perf_counter()
            lr = o.lr * lr_factor(state.step, o.warmup_steps, o.steps)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            step_loss, step_correct, step_clips = 0.0, 0, 0
            for _ in range(recipe.accumulation):
                batch = next(batches)
                report_bad_videos(batch)
                if batch["video"] is None:
                    continue
                video = batch["video"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                with precision.autocast(device):
                    logits = model(video)
                loss = F.cross_entropy(logits.float(), labels, reduction="sum") / o.batch_size
                scaler.scale(loss).backward()
                step_loss += loss.item()
                step_correct += int((logits.argmax(dim=1) == labels).sum())
                step_clips += len(labels)
            if step_clips == 0:
                raise TrainingError(
                    f"no clip of step {state.step + 1} could be decoded, even after trying other videos; "
                    f"the training list {recipe.data.train_path} names mostly broken videos",
                    "prepare the data again with `stadapt prepare-data ... --check` so they go to quarantine.txt",
                )
            if not math.isfinite(step_loss):
                raise TrainingError(
                    f"the loss became {step_loss} at step {state.step + 1}; the last good checkpoint is {run.last}",
                    "lower optim.lr, add optim.grad_clip, or use train.precision=fp32",
                )
            if o.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], o.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            state.step += 1
            state.clips_seen += step_clips
            elapsed = time.perf_counter() - tick
            state.train_seconds += elapsed
            mean_loss = step_loss * o.batch_size / max(step_clips, 1)
            window["loss"] += mean_loss * step_clips
            window["correct"] += step_correct
            window["clips"] += step_clips
            window["seconds"] += elapsed
            bar.update(1)
            if state.step % recipe.train.log_every == 0 or state.step == o.steps:
                clips = max(window["clips"], 1)
                event = {"step": state.step, "split": "train", "loss": window["loss"] / clips,
                         "acc": window["correct"] / clips, "lr": lr,
                         "clips_per_s": window["clips"] / max(window["seconds"], 1e-9),
                         "bad_videos": state.replaced + state.skipped}
                metrics.write(event)
                bar.set_postfix(loss=f"{event['loss']:.3f}", acc=f"{event['acc']:.2f}",
                                clips_s=f"{event['clips_per_s']:.1f}", lr=f"{lr:.2e}")
                window = {"loss": 0.0, "correct": 0, "clips": 0, "seconds": 0.0}
            last = state.step == o.steps
            if last or (recipe.train.val_every and state.step % recipe.train.val_every == 0):
                final_val = validate()
                metrics.write({"step": state.step, "split": "val", **final_val})
                bar.write(f"step {state.step}: val top-1 {100 * (final_val['top1'] or 0):.1f}% "
                          f"({final_val['videos']} videos, {final_val['skipped']} skipped)")
                if final_val["top1"] is not None and final_val["top1"] >= state.best.get("top1", -1.0):
                    state.best = {"step": state.step, "top1": final_val["top1"]}
            if last or state.step == stop_at or (recipe.train.save_every and state.step % recipe.train.save_every == 0):
                save()
    finally:
        bar.close()
        metrics.close()
        del batches
    _write_curves(run)
    return TrainResult(run.path, state.step, state.train_seconds, final_val, counts,
                       extra={"finished": state.step == o.steps, "total_steps": o.steps})


def _train_loader(dataset: Any, recipe: Recipe, *, start: int, device: torch.device):
    from torch.utils.data import BatchSampler, DataLoader

    from stadapt.data import collate_clips
    from stadapt.engine.stream import ClipStream

    stream = ClipStream(len(dataset), seed=recipe.train.seed, start=start)
    workers = recipe.data.num_workers
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(stream, recipe.micro_batch, drop_last=False),
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator(),  # worker seeds must not draw from (and shift) the global RNG
    )


def _validate(model, recipe: Recipe, entries, classes, variant, device, precision, progress) -> dict[str, Any]:
    from stadapt.evaluate import predict, summarize

    views = parse_views(recipe.data.views)
    dataset = eval_dataset(entries, variant, frames=recipe.data.frames, sampling=recipe.data.sampling,
                           stride=recipe.data.stride, views=views)
    per_batch = max(1, recipe.micro_batch // (views[0] * views[1]))
    pred = predict(model, dataset, batch_size=per_batch, num_workers=recipe.data.num_workers, device=device,
                   precision=precision, progress=progress, desc="validate")
    summary = summarize(pred, classes)
    return {"top1": summary["top1"], "top5": summary["top5"], "mean_class_accuracy": summary["mean_class_accuracy"],
            "videos": summary["videos"], "skipped": len(pred.skipped), "views": recipe.data.views}


def _write_curves(run: RunDir) -> None:
    from stadapt.plots import training_curves

    events = read_metrics(run.metrics)
    if any(e.get("split") == "train" for e in events):
        training_curves(events, run.curves)
