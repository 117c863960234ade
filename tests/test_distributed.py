"""Training at scale, for real: torchrun with 2 CPU processes (gloo) against one process, a run
stopped by a real SIGTERM / SIGKILL and resumed, kept checkpoints, TensorBoard events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 16
model:
  dropout: {dropout}
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: {workers}
optim:
  lr: 1.0e-3
  batch_size: 4
  micro_batch: 2
  steps: {steps}
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  save_every: {save_every}
  keep_checkpoints: {keep}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist") / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=4, val_per_class=3, frames=8,
                                        size=32, clutter=2))
    return root


def recipe(folder: Path, data: Path, *, steps: int = 3, dropout: float = 0.0, workers: int = 0, save_every: int = 0,
           keep: int = 1) -> Path:
    path = folder / f"tiny_{steps}_{dropout}_{workers}_{save_every}_{keep}.yaml"
    path.write_text(RECIPE.format(root=json.dumps(str(data)), steps=steps, dropout=dropout, workers=workers,
                                  save_every=save_every, keep=keep))
    return path


def adapters(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "trainable.safetensors")


def events(run: Path, split: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["split"] == split]


def test_torchrun_two_processes_match_one_process(data: Path, tmp_path: Path) -> None:
    path = recipe(tmp_path, data)  # dropout 0: no per-process random streams to differ
    single = run_cli("train", str(path), f"output.dir={tmp_path / 'one'}", "-q")
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", "stadapt", "train", str(path),
         f"output.dir={tmp_path / 'two'}", "-q"],
        capture_output=True, text=True, env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = adapters(tmp_path / "one"), adapters(tmp_path / "two")
    assert one.keys() == two.keys()
    for key in one:  # same global batch of the same clips: the same steps, up to summation order
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-6), key
    info = events(tmp_path / "two", "info")[0]
    assert info["processes"] == 2 and info["micro_batch"] == 2 and info["accumulation"] == 1
    assert events(tmp_path / "one", "info")[0]["accumulation"] == 2
    assert [e["step"] for e in events(tmp_path / "two", "train")] == [1, 2, 3]  # written once, by rank 0
    val_one, val_two = events(tmp_path / "one", "val")[-1], events(tmp_path / "two", "val")[-1]
    assert val_two["videos"] == val_one["videos"] == 6  # sharded validation: no video twice, none lost
    assert val_two["top1"] == val_one["top1"]
    losses = [e["loss"] for e in events(tmp_path / "one", "train")]
    assert losses == pytest.approx([e["loss"] for e in events(tmp_path / "two", "train")], rel=1e-4)


def _wait_for_step(run: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        metrics = run / "metrics.jsonl"
        if metrics.exists() and any(e["step"] >= step for e in events(run, "train")):
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never reached step {step}")


STEPS = 16


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, run) of the reference run the interrupted ones must end up equal to."""
    folder = tmp_path_factory.mktemp("straight")
    # dropout 0.5 and a DataLoader worker: the RNG, the data stream and the worker all have to resume exactly
    path = recipe(folder, data, steps=STEPS, dropout=0.5, workers=1, save_every=2)
    result = run_cli("train", str(path), f"output.dir={folder / 'run'}", "-q")
    assert result.returncode == 0, result.stderr
    return path, folder / "run"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_killed_run_resumes_to_the_same_weights_bit_for_bit(uninterrupted: tuple[Path, Path], tmp_path: Path,
                                                               how: str) -> None:
    path, straight = uninterrupted
    run = tmp_path / "killed"
    exe = Path(sys.executable).with_name("stadapt")
    process = subprocess.Popen([str(exe), "train", str(path), f"output.dir={run}", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, 5, process)
    process.send_signal(getattr(signal, how))
    out, err = process.communicate(timeout=120)
    stopped = json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())["step"]
    if how == "SIGTERM":  # a clean stop: the step in progress finishes and is saved
        assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert f"interrupted by SIGTERM at step {stopped}" in out and "--resume" in out
        assert stopped == events(run, "train")[-1]["step"]
    else:  # no chance to save: the last periodic checkpoint is what survives
        assert process.returncode == -signal.SIGKILL
        assert stopped % 2 == 0
    assert 0 < stopped < STEPS

    # restarted with the same command, as a scheduler would: --auto-resume picks the run up
    resumed = run_cli("train", str(path), f"output.dir={run}", "--auto-resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    final, reference = adapters(run), adapters(straight)
    assert final.keys() == reference.keys()
    for key in final:
        assert torch.equal(final[key], reference[key]), key
    assert [e["step"] for e in events(run, "train")] == list(range(1, STEPS + 1))  # lost work is not logged twice


def test_checkpoints_kept_tensorboard_and_auto_resume_of_a_fresh_run(data: Path, tmp_path: Path) -> None:
    path = recipe(tmp_path, data, steps=5, save_every=1, keep=3)
    run = tmp_path / "run"
    result = run_cli("train", str(path), f"output.dir={run}", "--auto-resume", "-q")  # nothing to resume: starts
    assert result.returncode == 0, result.stderr
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["best", "last", "step_00000003", "step_00000004"]  # best/ is not one of the 3 kept steps
    steps = [json.loads((run / "checkpoints" / name / "stadapt.json").read_text())["step"] for name in kept[1:]]
    assert steps == [5, 3, 4]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    assert {"train/loss", "train/lr", "val/top1"} <= set(board.Tags()["scalars"])
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2, 3, 4, 5]
    train = events(run, "train")
    assert all(e["peak_memory_mb"] > 0 for e in train)
    again = run_cli("train", str(path), f"output.dir={run}", "--auto-resume", "-q")  # finished: nothing to do
    assert again.returncode == 0, again.stderr


def test_torchrun_eval_splits_videos_without_duplicates(data: Path, tmp_path: Path) -> None:
    path = recipe(tmp_path, data, steps=2)
    run = tmp_path / "run"
    assert run_cli("train", str(path), f"output.dir={run}", "-q").returncode == 0
    single = run_cli("eval", str(run), "--views", "2x3", "--out", str(tmp_path / "one.json"), "-q")
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", "stadapt", "eval", str(run),
         "--views", "2x3", "--out", str(tmp_path / "two.json"), "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # one process prints and writes
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["videos"] == one["videos"] == 6 and two["top1"] == one["top1"]
    import csv

    rows = {n: list(csv.DictReader((tmp_path / f"{n}.predictions.csv").open())) for n in ("one", "two")}
    keys = ("index", "path", "label", "status", "prediction")
    assert [[r[k] for k in keys] for r in rows["two"]] == [[r[k] for k in keys] for r in rows["one"]]
    assert [r["index"] for r in rows["two"]] == [str(i) for i in range(6)]  # each video once, in list order
