"""How a training starts in a run folder: new, replaced or resumed, decided from what the folder really holds,
reading only; each refusal says what is there and names the option that works."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stadapt.checkpoints.meta import checkpoint_step
from stadapt.errors import preview
from stadapt.runs.errors import RunError

if TYPE_CHECKING:
    from stadapt.runs.layout import RunDir, RunState


def plan_start(run: RunDir, *, resume: bool, auto_resume: bool = False, overwrite: bool = False) -> str:
    """How a training starts in `run`: "start" (a new or empty folder), "replace" (remove what stadapt wrote,
    then start) or "resume"."""
    state, where = run.state(), run.path
    if state.exists and not where.is_dir():
        raise RunError(f"{where} exists and is not a folder", "set output.dir=... to a folder")
    found = preview(state.foreign)
    if not state.stadapts and state.foreign:
        raise RunError(f"{'--overwrite refused: ' if overwrite else ''}{where} is not a stadapt run and not empty "
                       f"(it holds {found})", "set output.dir=... (or name=...) to a new or empty folder; "
                                          "stadapt never replaces files it did not write")
    if not state.stadapts:
        if resume:
            raise RunError(f"there is no run to resume in {where}",
                           "drop --resume to start it, or set output.dir=... to the run you mean")
        return "start"
    if state.checkpoints:
        return _plan_for_a_run(run, state, resume=resume, auto_resume=auto_resume, overwrite=overwrite)
    if resume:
        raise RunError(f"{where} holds no checkpoint to resume: the run there stopped before its first one",
                       "run the same command without --resume to start it again")
    if state.foreign:
        raise RunError(f"{where} holds a run that stopped before its first checkpoint and files stadapt did not "
                       f"write ({found})", "move them out of the folder, or set output.dir=... to another folder")
    return "replace"  # only stadapt's own stub of a run that died before its first checkpoint: nothing to lose


def _plan_for_a_run(run: RunDir, state: RunState, *, resume: bool, auto_resume: bool, overwrite: bool) -> str:
    """plan_start for a folder that holds at least one complete checkpoint."""
    where, found = run.path, preview(state.foreign)
    if overwrite and not state.foreign:
        return "replace"
    if overwrite:
        raise RunError(f"--overwrite refused: {where} holds a run and files stadapt did not write ({found})",
                       "move them out of the folder to let --overwrite replace the run, pass --resume to "
                       "continue it, or set output.dir=...")
    if run.resume_checkpoint() is None:
        return _plan_without_trainer_state(run, state, auto_resume=auto_resume)
    if resume or auto_resume:
        _refuse_foreign_in_checkpoints(run, state)
        return "resume"
    step = checkpoint_step(run.resume_checkpoint())
    extra = f" and files stadapt did not write ({found})" if state.foreign else ""
    raise RunError(f"{where} already holds a run{f' (checkpoint at step {step})' if step is not None else ''}"
                   f"{extra}", "pass --resume to continue it, --overwrite to start it again, or set "
                               "output.dir=... (or name=...)" if not extra else
                   "pass --resume to continue it, or set output.dir=... (or name=...)")


def _refuse_foreign_in_checkpoints(run: RunDir, state: RunState) -> None:
    """A user's file inside a checkpoint folder (last, best, step_N) would stop the run's next save, after
    the training it holds: refused before any training work, naming it."""
    inside = [e for e in state.foreign if e.startswith("checkpoints/") and e.rstrip("/").count("/") >= 2]
    if inside:
        raise RunError(f"{run.path} holds {preview(inside)}, which stadapt "
                       "did not write, inside a checkpoint folder that the run's next save replaces",
                       "move it out of checkpoints/, then run the same command again")


def _plan_without_trainer_state(run: RunDir, state: RunState, *, auto_resume: bool) -> str:
    """A run whose checkpoints hold no trainer state (`best` only, or a `last` without its state: what a save
    cut short before the first complete `last` leaves) has nothing to continue: --auto-resume starts it
    again, as it starts a run that died before its first checkpoint; anything else is refused naming it."""
    what = (f"{run.path} holds {', '.join(state.checkpoints)} but no checkpoint with the trainer state that "
            "--resume continues from (the run's first save of checkpoints/last never finished)")
    if state.foreign:
        raise RunError(f"{what}, and files stadapt did not write ({preview(state.foreign)})",
                       "move them out of the folder, then start the run again with the same command and "
                       "--auto-resume, or set output.dir=...")
    if auto_resume:
        return "replace"
    raise RunError(what, "start the run again with the same command and --auto-resume (it replaces only what "
                         "stadapt wrote), or set output.dir=...")
