"""A training process killed (SIGKILL) at every step of a checkpoint save loses nothing.

The real `stadapt train` runs with a sitecustomize.py on PYTHONPATH (test code only) that wraps
os.replace, os.rename, shutil.rmtree and the first os.fsync of a save, and kills the process just
before the Nth of those calls made inside the Kth `RunDir.save_checkpoint` of the process. One run
is killed at each point in turn, every restart continuing the previous one with the same command
and --auto-resume (keep_checkpoints 1) or --resume (keep_checkpoints 2), and being killed at the
next point: each restart must continue from a checkpoint no older than the last complete one, and
the weights at the end must be bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

STEPS = 24

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 8
model:
  dropout: 0.5
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: 1.0e-3
  batch_size: 2
  steps: {steps}
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 0
  save_every: 1
"""

SITECUSTOMIZE = r'''
"""Kill this process just before the Nth file-system step of its Kth checkpoint save."""
import json
import os
import shutil
import signal
import sys

_SAVE = int(os.environ["STADAPT_FAULT_SAVE"])  # the Nth save this process makes
_OP = int(os.environ["STADAPT_FAULT_OP"])
_LOG = os.environ["STADAPT_FAULT_LOG"]
_done = []
_fsync_seen = set()
_saves = []
_real_fsync = os.fsync


def _saving_step():
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "save_checkpoint" and "step" in frame.f_locals:
            return frame.f_locals["step"]
        frame = frame.f_back
    return None


def _kill(record):
    with open(_LOG, "a") as handle:
        handle.write(json.dumps({**record, "done": _done}) + "\n")
        handle.flush()
        _real_fsync(handle.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(module, name):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        step = _saving_step()
        if step is not None and step not in _saves:
            _saves.append(step)
        if step is not None and name == "fsync":
            if step in _fsync_seen:  # only the first fsync of a save: the staging is half written
                return real(*args, **kwargs)
            _fsync_seen.add(step)
        if step is not None and len(_saves) > _SAVE:
            _kill({"step": _saves[_SAVE - 1], "before": "the next save"})
        if step is not None and len(_saves) == _SAVE:
            call = [name, *(str(a) for a in args[:2])]
            if len(_done) + 1 == _OP:
                _kill({"step": step, "before": call})
            _done.append(call)
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


for _module, _name in ((os, "replace"), (os, "rename"), (shutil, "rmtree"), (os, "fsync")):
    _wrap(_module, _name)
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    return root


def _metrics_lines(run: Path) -> list[str]:
    path = run / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def _step(line: str) -> int:
    return int(json.loads(line).get("step", 0))


def _run_killed(recipe: Path, run: Path, hooks: Path, save: int, op: int, *flags: str, keep: int) -> dict:
    """Run the command once with the fault armed; returns what the hook logged when it killed it."""
    log = hooks / "faults.jsonl"
    log.unlink(missing_ok=True)
    env = {"PYTHONPATH": f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "STADAPT_FAULT_SAVE": str(save),
           "STADAPT_FAULT_OP": str(op), "STADAPT_FAULT_LOG": str(log)}
    done = run_cli("train", str(recipe), f"output.dir={run}", f"train.keep_checkpoints={keep}", "-q", *flags,
                   env=env)
    assert done.returncode == -9, f"expected the injected SIGKILL, got {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(log.read_text().splitlines()[-1])


def _assert_kept(before: list[str], after: list[str], complete_step: int, context: str) -> None:
    """The restart continued from a checkpoint at least `complete_step`: every metrics line up to that
    step is still there, untouched (a restart from an older one rewrites them with new times)."""
    expected = [line for line in before if _step(line) <= complete_step]
    assert after[: len(expected)] == expected, f"{context}: restarted before step {complete_step}"
    assert sum('"split": "info"' in line for line in after) == 1, f"{context}: the run started over"


def test_a_kill_at_every_step_of_a_save_loses_nothing(dataset: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(root=json.dumps(str(dataset)), steps=STEPS))
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    run = tmp_path / "killed"

    # keep 1: `last` is swapped through `.last.old`; keep 2: through `step_N`, and older ones pruned
    save, flags, killed_at = 2, (), []  # the first process is killed in its 2nd save: `last` exists then
    previous: tuple[list[str], int, str] | None = None
    for keep in (1, 2):
        for op in range(1, 20):
            killed = _run_killed(recipe, run, hooks, save, op, *flags, keep=keep)
            step = killed["step"]
            if previous is not None:
                _assert_kept(previous[0], _metrics_lines(run), previous[1], previous[2])
            saved = killed["before"] == "the next save" or any(
                call[0] == "replace" and Path(call[2]).name == "last" for call in killed["done"])
            complete = step if saved else step - 1
            context = f"keep_checkpoints={keep}, killed before {killed['before']} in the save of step {step}"
            killed_at.append(context)
            previous = (_metrics_lines(run), complete, context)
            flags = ("--auto-resume",) if keep == 1 else ("--resume",)  # both see a half-swapped save
            save = 1  # each restart resumes, trains a step and is killed in the save of it
            if killed["before"] == "the next save":
                break
        else:
            raise AssertionError(f"the save never ended: {killed_at}")

    final = run_cli("train", str(recipe), f"output.dir={run}", "-q", "--auto-resume")
    assert final.returncode == 0, final.stderr
    assert previous is not None
    _assert_kept(previous[0], _metrics_lines(run), previous[1], previous[2])
    straight = run_cli("train", str(recipe), f"output.dir={tmp_path / 'straight'}", "-q")
    assert straight.returncode == 0, straight.stderr
    for name in ("trainable.safetensors", "trainer_state.safetensors"):
        got = load_file(run / "checkpoints" / "last" / name)
        want = load_file(tmp_path / "straight" / "checkpoints" / "last" / name)
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(got[key], want[key]), (name, key)
    leftovers = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("."))
    assert leftovers == [], leftovers
    assert len(killed_at) >= 8, "\n".join(killed_at)
