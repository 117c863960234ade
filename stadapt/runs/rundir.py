"""A run directory: the resolved recipe, metrics, plots and checkpoints of one training run.

    RUN/recipe.yaml            the fully resolved recipe (what actually ran)
    RUN/metrics.jsonl          one JSON object per log / validation event
    RUN/curves.png             training curves, written at the end
    RUN/checkpoints/last/      adapters + head, metadata, trainer state (what --resume continues)
    RUN/checkpoints/step_N/    earlier checkpoints, the newest `train.keep_checkpoints - 1` of them
    RUN/checkpoints/best/      the checkpoint of the best validation top-1 so far (train.keep_best), no trainer state
    RUN/tensorboard/           TensorBoard event files (train.loggers)
    RUN/train.log              the run's console output, appended on resume
    RUN/wandb/, RUN/wandb.json Weights & Biases files and run id (train.loggers: [wandb])
    RUN/eval.json              written by `stadapt eval`
    RUN/.stadapt-run.json      the marker: stadapt made this folder (what `--overwrite` may replace)
    RUN/.stadapt.lock          locked by the training process that owns the folder while it runs

stadapt replaces only what it wrote (`RUN_FILES`, checked down into checkpoints/ and tensorboard/): a
folder that holds anything else is refused, naming what it found, and a user's file is never deleted.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stadapt.errors import DiskFullError, StadaptError, preview
from stadapt.fileio import atomic_write_text, disk_full_as_error, fsync_dir, remove_path, temp_target

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
MARKER_FILE = ".stadapt-run.json"
LOCK_FILE = ".stadapt.lock"
MARKER_FORMAT = "stadapt-run"
# every name stadapt writes at the top of a run directory (train; eval and export by default)
RUN_FILES = frozenset({RECIPE_FILE, METRICS_FILE, MARKER_FILE, LOCK_FILE, "curves.png", "checkpoints", "tensorboard",
                       "eval.json", "eval.predictions.csv", "eval.confusion.png", "model.onnx", "model.onnx.data",
                       "train.log", "wandb", "wandb.json"})  # train.log: console output; wandb*: train.loggers
_CHECKPOINT_NAME = re.compile(r"\.?(last|best|step_\d+)(\..+)?")  # last, best, step_N, their staging / swap folders
CONTINUE_AFTER_DISK_FULL = "free some space, then continue with the same command and --auto-resume"


def continue_after_disk_full() -> str:
    """How to go on after a full disk, naming the command when this process is `stadapt train ...`: its own
    arguments with --auto-resume, which continues from the last complete checkpoint or, where the first save
    never finished, starts the run again."""
    args = [arg for arg in sys.argv[1:] if arg not in ("--resume", "--auto-resume", "--overwrite")]
    if args[:1] != ["train"]:
        return CONTINUE_AFTER_DISK_FULL
    return f"{CONTINUE_AFTER_DISK_FULL}: {shlex.join(['stadapt', *args, '--auto-resume'])}"


class RunError(StadaptError):
    """A run directory that cannot be started, resumed or found."""


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    recipe = property(lambda self: self.path / RECIPE_FILE)
    metrics = property(lambda self: self.path / METRICS_FILE)
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last")
    best = property(lambda self: self.path / "checkpoints" / "best")
    curves = property(lambda self: self.path / "curves.png")

    def is_run(self) -> bool:
        return self.recipe.is_file()

    def step_checkpoints(self) -> list[Path]:
        """The kept earlier checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob("step_*") if (p / "stadapt.json").is_file())

    def resume_checkpoint(self) -> Path | None:
        """The checkpoint a resume continues from: the newest complete one, `last` on a tie. Only a
        crash in the middle of a save makes it another (`recover_checkpoints` puts it back as `last`)."""
        found = self.complete_checkpoints()
        return found[-1][2] if found else None

    def complete_checkpoints(self) -> list[tuple[int, int, Path]]:
        """(step, preference, path) of every complete checkpoint, oldest first: `last`, the kept
        `step_*`, and what a save cut short by a crash leaves (`.last.old`, a staging `.last.*`)."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for path in self.checkpoints.iterdir():
            preference = 3 if path.name == "last" else 2 if path.name.startswith("step_") else \
                1 if path.name.startswith(".last.") else 0
            step = complete_step(path) if preference else None
            if step is not None:
                found.append((step, preference, path))
        return sorted(found)

    def recover_checkpoints(self, keep: int) -> Path | None:
        """Finish what a save cut short by a crash left: the newest complete checkpoint becomes `last`
        (a `last` it replaces is kept as `step_N` when `keep` > 1), then the save's leftovers, all
        older or incomplete, go. Nothing changes when no checkpoint is complete. Returns `last`.
        A `best` save cut short is finished too (`recover_best`)."""
        self.recover_best()
        found = self.complete_checkpoints()
        if not found:
            return None
        best = found[-1][2]
        if best != self.last:
            if self.last.exists():
                last_step = complete_step(self.last)
                aside = self.checkpoints / f"step_{last_step:08d}" if last_step is not None and keep > 1 else None
                if aside is not None and not aside.exists():
                    os.replace(self.last, aside)
                else:
                    shutil.rmtree(self.last)
            os.replace(best, self.last)
            fsync_dir(self.checkpoints)
        for leftover in self.checkpoints.glob(".last.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self._prune_steps(keep)
        return self.last

    def recover_best(self) -> Path | None:
        """Finish a save of `best` that a crash cut short: of `best`, the replaced `.best.old` and a complete
        staging `.best.*`, the newest complete one (a later best is a better one) becomes `best`; the rest go."""
        if not self.checkpoints.is_dir():
            return None
        found = sorted((step, path.name == "best", path) for path in self.checkpoints.iterdir()
                       if (path.name == "best" or path.name.startswith(".best."))
                       and (step := complete_best_step(path)) is not None)
        if found and found[-1][2] != self.best:
            if self.best.exists():
                shutil.rmtree(self.best)
            os.replace(found[-1][2], self.best)
            fsync_dir(self.checkpoints)
        for leftover in self.checkpoints.glob(".best.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return self.best if self.best.is_dir() else None

    def save_best(self, tensors: Any, meta: dict[str, Any]) -> Path:
        """Write `best` atomically (the same staging and swap as `last`; a crash leaves a complete one that
        `recover_best` puts back). Inference only: no trainer state."""
        from stadapt.checkpoints.format import write_checkpoint

        try:
            return write_checkpoint(self.best, tensors, meta, overwrite=True)
        except DiskFullError as exc:
            raise DiskFullError(exc.path, exc.reason, exc.intact, continue_after_disk_full()) from None

    def _prune_steps(self, keep: int) -> None:
        kept = self.step_checkpoints()
        for stale in kept[: max(0, len(kept) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)

    def save_checkpoint(self, step: int, tensors: Any, meta: dict[str, Any], extra_files: dict[str, bytes],
                        keep: int) -> Path:
        """Write `last` atomically; the one it replaces becomes `step_<its step>` while fewer than
        `keep` checkpoints exist, and older step checkpoints are removed."""
        from stadapt.checkpoints.format import write_checkpoint

        previous = None
        if keep > 1 and (self.last / "stadapt.json").is_file():
            try:
                old_step = int(json.loads((self.last / "stadapt.json").read_text()).get("step", 0))
            except (OSError, ValueError, TypeError):
                old_step = -1
            if 0 <= old_step < step:
                previous = self.checkpoints / f"step_{old_step:08d}"
        try:
            write_checkpoint(self.last, tensors, meta, overwrite=True, extra_files=extra_files,
                             keep_replaced_as=previous)
        except DiskFullError as exc:  # say how to go on: --auto-resume continues, or restarts a run with none
            raise DiskFullError(exc.path, exc.reason, exc.intact,
                                continue_after_disk_full()) from None
        self._prune_steps(keep)
        return self.last

    def start(self, *, resume: bool, overwrite: bool) -> None:
        """Make the directory ready: new, resumed or (only when asked) replaced; never silently reused."""
        self.begin(self.plan_start(resume=resume, overwrite=overwrite))

    def state(self) -> RunState:
        """What the folder holds, read without touching it."""
        if not self.path.is_dir():
            return RunState(exists=self.path.exists() or self.path.is_symlink(), stadapts=False)
        entries = sorted(p for p in self.path.iterdir() if p.name != LOCK_FILE)
        if not self._made_by_stadapt():
            return RunState(exists=True, stadapts=False, foreign=[_label(p) for p in entries])
        checkpoints = [p.name for p in sorted(self.checkpoints.iterdir()) if (p / "stadapt.json").is_file()] \
            if self.checkpoints.is_dir() and not self.checkpoints.is_symlink() else []
        return RunState(exists=True, stadapts=True, foreign=self._foreign_entries(entries), checkpoints=checkpoints)

    def _made_by_stadapt(self) -> bool:
        """The marker, or (a run from before the marker) a recipe.yaml that stadapt resolved."""
        if (self.path / MARKER_FILE).is_file():
            return True
        try:
            with self.recipe.open(encoding="utf-8") as handle:
                return handle.readline().startswith("# resolved by stadapt")
        except (OSError, UnicodeDecodeError):
            return False

    def _foreign_entries(self, entries: list[Path]) -> list[str]:
        """The entries (down into checkpoints/ and tensorboard/) that stadapt does not write in a run."""
        from stadapt.checkpoints.format import foreign_files

        found: list[str] = []
        for entry in entries:
            if entry.is_symlink() or (entry.name not in RUN_FILES and temp_target(entry.name) not in RUN_FILES):
                found.append(_label(entry))
            elif entry.name == "checkpoints" and entry.is_dir():
                for ckpt in sorted(entry.iterdir()):
                    if ckpt.is_symlink() or not ckpt.is_dir() or not _CHECKPOINT_NAME.fullmatch(ckpt.name):
                        found.append(f"checkpoints/{_label(ckpt)}")
                    else:
                        found += [f"checkpoints/{ckpt.name}/{name}" for name in foreign_files(ckpt)]
            elif entry.name == "tensorboard" and entry.is_dir():
                found += [f"tensorboard/{_label(e)}" for e in sorted(entry.iterdir())
                          if e.is_symlink() or not e.is_file() or not e.name.startswith("events.out.tfevents.")]
        return found

    def plan_start(self, *, resume: bool, auto_resume: bool = False, overwrite: bool = False) -> str:
        """How a training starts here: "start" (a new or empty folder), "replace" (remove what stadapt wrote,
        then start) or "resume". Decided from what the folder really holds, reading only; each refusal says
        what is there and names the option that works."""
        state, where = self.state(), self.path
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
            return self._plan_for_a_run(state, resume=resume, auto_resume=auto_resume, overwrite=overwrite)
        if resume:
            raise RunError(f"{where} holds no checkpoint to resume: the run there stopped before its first one",
                           "run the same command without --resume to start it again")
        if state.foreign:
            raise RunError(f"{where} holds a run that stopped before its first checkpoint and files stadapt did not "
                           f"write ({found})", "move them out of the folder, or set output.dir=... to another folder")
        return "replace"  # only stadapt's own stub of a run that died before its first checkpoint: nothing to lose

    def _plan_for_a_run(self, state: RunState, *, resume: bool, auto_resume: bool, overwrite: bool) -> str:
        """plan_start for a folder that holds at least one complete checkpoint."""
        where, found = self.path, preview(state.foreign)
        if overwrite and not state.foreign:
            return "replace"
        if overwrite:
            raise RunError(f"--overwrite refused: {where} holds a run and files stadapt did not write ({found})",
                           "move them out of the folder to let --overwrite replace the run, pass --resume to "
                           "continue it, or set output.dir=...")
        if self.resume_checkpoint() is None:
            return self._plan_without_trainer_state(state, auto_resume=auto_resume)
        if resume or auto_resume:
            self._refuse_foreign_in_checkpoints(state)
            return "resume"
        step = _checkpoint_step(self.resume_checkpoint())
        extra = f" and files stadapt did not write ({found})" if state.foreign else ""
        raise RunError(f"{where} already holds a run{f' (checkpoint at step {step})' if step is not None else ''}"
                       f"{extra}", "pass --resume to continue it, --overwrite to start it again, or set "
                                   "output.dir=... (or name=...)" if not extra else
                       "pass --resume to continue it, or set output.dir=... (or name=...)")

    def _refuse_foreign_in_checkpoints(self, state: RunState) -> None:
        """A user's file inside a checkpoint folder (last, best, step_N) would stop the run's next save, after
        the training it holds: refused before any training work, naming it."""
        inside = [e for e in state.foreign if e.startswith("checkpoints/") and e.rstrip("/").count("/") >= 2]
        if inside:
            raise RunError(f"{self.path} holds {preview(inside)}, which stadapt "
                           "did not write, inside a checkpoint folder that the run's next save replaces",
                           "move it out of checkpoints/, then run the same command again")

    def _plan_without_trainer_state(self, state: RunState, *, auto_resume: bool) -> str:
        """A run whose checkpoints hold no trainer state (`best` only, or a `last` without its state: what a save
        cut short before the first complete `last` leaves) has nothing to continue: --auto-resume starts it
        again, as it starts a run that died before its first checkpoint; anything else is refused naming it."""
        what = (f"{self.path} holds {', '.join(state.checkpoints)} but no checkpoint with the trainer state that "
                "--resume continues from (the run's first save of checkpoints/last never finished)")
        if state.foreign:
            raise RunError(f"{what}, and files stadapt did not write ({preview(state.foreign)})",
                           "move them out of the folder, then start the run again with the same command and "
                           "--auto-resume, or set output.dir=...")
        if auto_resume:
            return "replace"
        raise RunError(what, "start the run again with the same command and --auto-resume (it replaces only what "
                             "stadapt wrote), or set output.dir=...")

    def begin(self, mode: str) -> None:
        """Make the folder ready for `mode` (from plan_start, under the lock): mark it as stadapt's and, for
        "replace", remove what stadapt wrote there before, never anything else."""
        self.path.mkdir(parents=True, exist_ok=True)
        if mode == "resume" and (self.path / MARKER_FILE).is_file():
            return
        from stadapt import __version__

        atomic_write_text(self.path / MARKER_FILE, json.dumps(
            {"format": MARKER_FORMAT, "format_version": 1, "stadapt_version": __version__,
             "note": "stadapt wrote this folder; `stadapt train --overwrite` replaces only stadapt's files in it"},
            indent=2) + "\n")
        if mode != "replace":
            return
        for entry in sorted(self.path.iterdir()):
            owned = entry.name in RUN_FILES or temp_target(entry.name) in RUN_FILES
            if owned and entry.name not in (MARKER_FILE, LOCK_FILE):
                remove_path(entry)


@dataclass
class RunState:
    """What a run folder holds: whether stadapt made it, what in it stadapt did not write, its checkpoints."""

    exists: bool
    stadapts: bool
    foreign: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)


def _label(path: Path) -> str:
    """An entry as a refusal names it: `photos/` for a folder, `name (a link)` for a symbolic link."""
    if path.is_symlink():
        return f"{path.name} (a link)"
    return f"{path.name}/" if path.is_dir() else path.name


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    if checkpoint is None:
        return None
    try:
        return int(json.loads((checkpoint / "stadapt.json").read_text()).get("step"))
    except (OSError, ValueError, TypeError):
        return None


class RunLock:
    """An exclusive lock on RUN/.stadapt.lock, held by the training process for the life of a run, so a second
    `stadapt train` into the same folder is refused every time. A POSIX record lock (fcntl.lockf): the kernel
    releases it when the process ends in any way (a dead process never leaves a stale lock), DataLoader
    workers forked from the holder do not inherit it, and it works on NFS. The holder writes its pid and
    host into the file, for the refusal to name it. The holding process must never open the lock file
    anywhere else: closing any descriptor of it would drop a POSIX lock. Where there is no fcntl (Windows),
    `acquire` refuses in one line: stadapt trains on POSIX systems (Linux, macOS; on Windows, under WSL)."""

    def __init__(self, run_path: str | Path) -> None:
        self.path = Path(run_path) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise RunError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no POSIX record locks, and a run folder must not have two writers
            raise RunError(f"cannot lock {self.path}: this platform has no POSIX file locks (fcntl), which keep "
                           "two trainings out of one run folder",
                           "train on Linux or macOS (on Windows: under WSL)") from None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise RunError(f"cannot lock {self.path} ({exc.strerror})",
                               "put output.dir on a file system that supports file locks") from None
            raise RunError(f"{self.path.parent} is in use: another stadapt training ({self.holder()}) writes to it",
                           "wait for it to end or stop it, or set output.dir=... (or name=...) to another folder") \
                from None
        self._fd = fd
        text = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it (read without opening it for writing)."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        return text or "a process that has not yet written its pid"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MetricsLog:
    """Append-only JSONL; on resume, events after the resumed step (work that was lost) are dropped."""

    def __init__(self, path: Path, *, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._file = path.open("a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        with disk_full_as_error(self.path, "the run's checkpoints are intact", continue_after_disk_full()):
            self._file.write(json.dumps({**event, "time": round(time.time(), 3)}) + "\n")
            self._file.flush()

    def close(self) -> None:
        with disk_full_as_error(self.path, "the run's checkpoints are intact", continue_after_disk_full()):
            self._file.close()


def complete_step(checkpoint: Path) -> int | None:
    """The step of a complete training checkpoint directory (metadata, tensors and trainer state all
    there and whole), else None."""
    from stadapt.checkpoints.format import FORMAT, META_FILE, safetensors_intact, tensors_path
    from stadapt.training.state import STATE_META, STATE_TENSORS

    try:
        meta = json.loads((checkpoint / META_FILE).read_text())
        json.loads((checkpoint / STATE_META).read_text())
        step = int(meta["step"]) if meta.get("format") == FORMAT else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    whole = safetensors_intact(tensors_path(checkpoint)) and safetensors_intact(checkpoint / STATE_TENSORS)
    return step if whole else None


def complete_best_step(checkpoint: Path) -> int | None:
    """The step of a complete best checkpoint directory (metadata and tensors whole), else None."""
    from stadapt.checkpoints.format import FORMAT, META_FILE, safetensors_intact, tensors_path

    try:
        meta = json.loads((checkpoint / META_FILE).read_text())
        step = int(meta["step"]) if meta.get("format") == FORMAT else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return step if safetensors_intact(tensors_path(checkpoint)) else None


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest_run(roots: Iterable[Path]) -> Path:
    """The run under `roots` whose last checkpoint was written most recently."""
    found = [
        (ckpt.stat().st_mtime, run)
        for root in roots if root.is_dir()
        for run in root.iterdir()
        if (ckpt := run / "checkpoints" / "last" / "stadapt.json").is_file()
    ]
    if not found:
        where = ", ".join(str(r) for r in roots)
        raise RunError(f"found no trained run under {where}",
                       "pass a run directory or a checkpoint, or train one first")
    return max(found)[1]


WHICH = ("best", "last")


def pick_checkpoint(run: RunDir, which: str | None) -> tuple[Path, str]:
    """(checkpoint, why) of a run: `which` "best" or "last", or None = best when the run keeps one (it
    scored highest on validation), else last. A missing `best` asked for by name is refused."""
    if which is not None and which not in WHICH:
        raise RunError(f"unknown --which {which!r}", f"choose one of: {', '.join(WHICH)}")
    has_best = (run.best / "stadapt.json").is_file()
    if which == "best" and not has_best:
        raise RunError(f"{run.path} keeps no checkpoints/best (trained with train.keep_best: false, before stadapt "
                       "kept one, or never validated)", "use --which last")
    if which == "last" or not has_best:
        why = "asked for" if which == "last" else "the run keeps no best checkpoint"
        return run.last, f"checkpoints/last (step {_checkpoint_step(run.last)}, the newest): {why}"
    best = _checkpoint_meta(run.best)
    top1 = (best.get("validation") or {}).get("top1")
    score = f", val top-1 {100 * top1:.1f}%" if isinstance(top1, (int, float)) else ""
    why = "asked for" if which == "best" else \
        f"the best validation (default when present; --which last for step {_checkpoint_step(run.last)})"
    return run.best, f"checkpoints/best (step {best.get('step')}{score}): {why}"


def _checkpoint_meta(checkpoint: Path) -> dict[str, Any]:
    try:
        meta = json.loads((checkpoint / "stadapt.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


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
    elif (Path(target) / "stadapt.json").is_file():
        checkpoint = Path(target)
    elif (RunDir(target).last / "stadapt.json").is_file() or (RunDir(target).best / "stadapt.json").is_file():
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
    if announce and _checkpoint_step(RunDir(run_path).best) not in (None, _checkpoint_step(RunDir(run_path).last)):
        sys.stderr.write(f"{run_path}: using {why}\n")
    return chosen, run_path
