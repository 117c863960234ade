"""What stadapt writes has the mode `open()` / `mkdir()` would give under the user's umask: readable
by colleagues under umask 022, private under 077 (tempfile's 0600 / 0700 are not what a user asked for)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 8
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  batch_size: 2
  steps: 2
  warmup_steps: 1
train:
  device: cpu
  tensorboard: false
  save_every: 1
  keep_checkpoints: 2
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("perm")
    root = base / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    path = base / "tiny.yaml"
    path.write_text(RECIPE.format(root=json.dumps(str(root))))
    return path


def _as_user_with_umask(mask: int, *args: str) -> None:
    """Run the console script with `mask` as its umask (set in this process, inherited, then restored)."""
    old = os.umask(mask)
    try:
        done = run_cli(*args)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr


def _modes(run: Path) -> dict[str, int]:
    """The permission bits of everything under `run`, by relative path."""
    return {str(p.relative_to(run)) or ".": stat.S_IMODE(p.stat().st_mode) for p in [run, *run.rglob("*")]}


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_train_eval_export_honour_the_umask(recipe: Path, tmp_path: Path, mask: int) -> None:
    run = tmp_path / "run"
    _as_user_with_umask(mask, "train", str(recipe), f"output.dir={run}", "-q")
    _as_user_with_umask(mask, "eval", str(run), "-q")
    _as_user_with_umask(mask, "export", "--onnx", "--checkpoint", str(run), "-q",
                       "--exporter", "torchscript")  # the faster exporter: the files' modes are the point
    modes = _modes(run)
    for name in ("recipe.yaml", "metrics.jsonl", "curves.png", "eval.json", "eval.predictions.csv",
                 "eval.confusion.png", "model.onnx", "checkpoints/last/trainable.safetensors",
                 "checkpoints/last/stadapt.json", "checkpoints/last/trainer_state.safetensors",
                 "checkpoints/step_00000001/trainable.safetensors", "checkpoints", "checkpoints/last",
                 "checkpoints/step_00000001"):
        assert name in modes, f"{name} was not written: {sorted(modes)}"
    for name, mode in modes.items():
        is_dir = (run / name).is_dir()
        expected = (0o777 if is_dir else 0o666) & ~mask
        assert mode == expected, (f"umask {mask:03o}: {name} has mode {mode:03o}, "
                                  f"open()/mkdir() would give {expected:03o}")
    from stadapt.runs.layout import LOCK_FILE, MARKER_FILE

    assert {MARKER_FILE, LOCK_FILE} <= set(modes)  # the run's marker and lock follow the umask too
    leftovers = [name for name in modes if Path(name).name.startswith(".") and name not in (MARKER_FILE, LOCK_FILE)]
    assert not leftovers, f"a temp file was left behind: {leftovers}"
