"""What eval, predict, export and the library accept as a target, turned into a checkpoint: a run (its best or
last checkpoint, `--which`), a checkpoint directory, an `hf-hub:ORG/NAME` id, or nothing (the latest run)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from stadapt.checkpoints.files import META_FILE
from stadapt.checkpoints.meta import checkpoint_meta, checkpoint_step
from stadapt.runs.errors import RunError
from stadapt.runs.layout import RunDir

WHICH = ("best", "last")
logger = logging.getLogger(__name__)


def latest_run(roots: Iterable[Path]) -> Path:
    """The run under `roots` whose last checkpoint was written most recently."""
    found = [
        (ckpt.stat().st_mtime, run)
        for root in roots if root.is_dir()
        for run in root.iterdir()
        if (ckpt := run / "checkpoints" / "last" / META_FILE).is_file()
    ]
    if not found:
        where = ", ".join(str(r) for r in roots)
        raise RunError(f"found no trained run under {where}",
                       "pass a run directory or a checkpoint, or train one first")
    return max(found)[1]


def pick_checkpoint(run: RunDir, which: str | None) -> tuple[Path, str]:
    """(checkpoint, why) of a run: `which` "best" or "last", or None = best when the run keeps one (it
    scored highest on validation), else last. A missing `best` asked for by name is refused."""
    if which is not None and which not in WHICH:
        raise RunError(f"unknown --which {which!r}", f"choose one of: {', '.join(WHICH)}")
    has_best = (run.best / META_FILE).is_file()
    if which == "best" and not has_best:
        raise RunError(f"{run.path} keeps no checkpoints/best (trained with train.keep_best: false, before stadapt "
                       "kept one, or never validated)", "use --which last")
    if which == "last" or not has_best:
        why = "asked for" if which == "last" else "the run keeps no best checkpoint"
        return run.last, f"checkpoints/last (step {checkpoint_step(run.last)}, the newest): {why}"
    best = checkpoint_meta(run.best) or {}
    top1 = (best.get("validation") or {}).get("top1")
    score = f", val top-1 {100 * top1:.1f}%" if isinstance(top1, (int, float)) else ""
    why = "asked for" if which == "best" else \
        f"the best validation (default when present; --which last for step {checkpoint_step(run.last)})"
    return run.best, f"checkpoints/best (step {best.get('step')}{score}): {why}"


def resolve_target(target: Path | None, which: str | None = None, *, announce: bool = True,
                   prefer: str | None = None) -> tuple[Path, Path | None]:
    """(checkpoint directory, run directory or None) for a run, a checkpoint, an `hf-hub:ORG/NAME` id, or
    None = latest run. Of a run, `which` checkpoint (`pick_checkpoint`); where the run's best and last are
    different steps, the choice and why go to stderr (`announce`): a refusal stays one line where there was no
    choice to make. `prefer`: the run's checkpoint when
    `which` is None, instead of best-when-present."""
    from stadapt.checkpoints.hub import checkpoint_dir, is_hub_id

    run_path: Path | None = None
    if is_hub_id(target):
        checkpoint: Path | None = checkpoint_dir(str(target))
    elif target is None:
        run_path = latest_run([Path("runs")])
    elif (Path(target) / META_FILE).is_file():
        checkpoint = Path(target)
    elif (RunDir(target).last / META_FILE).is_file() or (RunDir(target).best / META_FILE).is_file():
        run_path = Path(target)
    elif not Path(target).exists():
        raise RunError(f"{target} does not exist", "pass a run directory (runs/NAME) or a checkpoint directory")
    else:
        raise RunError(f"{target} is neither a run directory nor a checkpoint",
                       "pass runs/NAME or runs/NAME/checkpoints/last")
    if run_path is None:
        assert checkpoint is not None
        if which is not None:
            raise RunError(f"--which {which} picks a checkpoint of a run, and {target} is a checkpoint itself",
                           "pass the run directory, or leave --which out")
        parent = checkpoint.parent.parent
        return checkpoint, parent if not is_hub_id(target) and RunDir(parent).is_run() else None
    chosen, why = pick_checkpoint(RunDir(run_path), which or prefer)
    if announce and checkpoint_step(RunDir(run_path).best) not in (None, checkpoint_step(RunDir(run_path).last)):
        logger.info("%s: using %s", run_path, why)
    return chosen, run_path
