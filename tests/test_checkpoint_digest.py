"""The files of a checkpoint are checked against the checksums stadapt.json records for them (issue 23.5).

Flipping bits inside trainable.safetensors used to give a model that predicts noise, with exit status 0.
Now every reader (eval, predict, resume, ... all through stadapt.checkpoints.files) refuses the damaged file in
one line that names it; the trainer state of `checkpoints/last` is checked the same way when a run
resumes. Checkpoints written before the digests were recorded still load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.checkpoints.files import DIGESTS
from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
adapter: {{bottleneck: 16}}
data: {{root: {root}, frames: 4, stride: 2, views: 1x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 4, steps: 2, warmup_steps: 0}}
train: {{device: cpu, val_every: 0, loggers: []}}
"""


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the recipe, a run stopped after its first step, one of its videos)."""
    base = tmp_path_factory.mktemp("digest")
    root = base / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=10,
                                        size=32, clutter=4))
    recipe = base / "tiny.yaml"
    recipe.write_text(RECIPE.format(root=json.dumps(str(root))))
    done = run_cli("train", str(recipe), f"output.dir={base / 'run'}", "--stop-after", "1", "-q")
    assert done.returncode == 0, done.stderr
    return recipe, base / "run", next((root / "videos" / "val").glob("*.mp4"))


def flip_bits(path: Path) -> None:
    """Invert 64 bytes in the middle of a safetensors file's tensor data (its header stays readable)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    middle = start + (len(data) - start) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _one_line_refusal(done, damaged: Path) -> None:  # type: ignore[no-untyped-def]
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("stadapt: error: ") and f"{damaged} is damaged" in line
    assert "restore it" in line and "another checkpoint" in line


def test_eval_and_predict_refuse_flipped_bits_in_the_tensors(stopped: tuple[Path, Path, Path],
                                                             tmp_path: Path) -> None:
    _, run, video = stopped
    copy = _copy(run, tmp_path / "run")
    damaged = copy / "checkpoints" / "last" / "trainable.safetensors"
    flip_bits(damaged)
    _one_line_refusal(run_cli("eval", str(copy), "-q"), damaged)
    _one_line_refusal(run_cli("predict", str(video), "--checkpoint", str(copy)), damaged)
    assert not (copy / "eval.json").exists()
    meta = json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())
    assert set(meta[DIGESTS]) == {"trainable.safetensors", "trainer_state.safetensors", "trainer_state.json"}


def test_resume_refuses_a_damaged_trainer_state(stopped: tuple[Path, Path, Path], tmp_path: Path) -> None:
    recipe, run, _ = stopped
    damaged = run / "checkpoints" / "last" / "trainer_state.safetensors"
    intact = damaged.read_bytes()
    flip_bits(damaged)  # in place (a resume needs the run where its recipe says), put back afterwards
    try:
        done = run_cli("train", str(recipe), f"output.dir={run}", "--resume", "-q")
    finally:
        damaged.write_bytes(intact)
    _one_line_refusal(done, damaged)


def test_checkpoints_without_digests_still_load(stopped: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A format-2 checkpoint written before the digests (the v1 fixture is tests/test_checkpoint_v1.py's)."""
    _, run, video = stopped
    checkpoint = _copy(run / "checkpoints" / "last", tmp_path / "older")
    meta = json.loads((checkpoint / "stadapt.json").read_text())
    meta.pop(DIGESTS, None)
    (checkpoint / "stadapt.json").write_text(json.dumps(meta))
    done = run_cli("predict", str(video), "--checkpoint", str(checkpoint), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["top"]
