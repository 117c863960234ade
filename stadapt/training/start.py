"""How a training run starts: decided on the main process and agreed by all, its folder claimed only once
everything that can refuse the run has been checked, and a resumed run held to the recipe it began with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from stadapt.data.decoders import check_decoder
from stadapt.errors import StadaptError, first_line
from stadapt.model.classifier import BuiltModel
from stadapt.recipe import Recipe, dump_recipe, load_recipe
from stadapt.runs.errors import RunError
from stadapt.runs.layout import RunDir
from stadapt.runs.lock import RunLock
from stadapt.runtime.build import build_from_recipe
from stadapt.runtime.distributed import World
from stadapt.training.run import RunStart, TrainingError
from stadapt.training.wrap import init_adapters

# keys a resumed run may change: they do not alter what the run computes
RESUMABLE_CHANGES = {"data.num_workers", "train.log_every", "train.val_every", "train.save_every", "train.device",
                     "train.keep_checkpoints", "train.keep_best", "train.loggers", "train.compile",
                     "train.checkpointing", "optim.micro_batch"}


T = TypeVar("T")


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


def open_run(recipe: Recipe, world: World, device: torch.device, start: RunStart,
             num_classes: int, classes: Sequence[str] | None = None) -> tuple[RunDir, bool, BuiltModel]:
    """Decide how the run starts (on the main process, agreed by all), build the model (which can still
    refuse), then create or take over the folder and write or check the recipe."""
    assert recipe.output.dir is not None  # load_recipe fills it in
    run = RunDir(recipe.output.dir)
    mode = on_main(world, lambda: _plan_run(run, start.lock, resume=start.resume, auto_resume=start.auto_resume,
                                            overwrite=start.overwrite, keep=recipe.train.keep_checkpoints))
    resumed = mode == "resume"
    torch.manual_seed(recipe.train.seed)
    built = build_from_recipe(recipe, num_classes, device=device, classes=classes)  # refuses before the folder exists
    check_decoder(recipe.data.decoder, recipe.data.decode_device)  # so does a decoder that cannot load
    if recipe.model.init_from and not resumed:
        init_adapters(built.model, Path(recipe.model.init_from))

    def claim() -> None:
        _claim_run(run, start.lock, mode, resume=resumed, auto_resume=start.auto_resume, overwrite=start.overwrite)
        if resumed:
            check_resumable(load_recipe(run.recipe, check_files=False), recipe)
        else:
            dump_recipe(recipe, run.recipe, source=start.source)

    on_main(world, claim)
    world.barrier()
    return run, resumed, built


def on_main(world: World, action: Callable[[], T]) -> T:
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
