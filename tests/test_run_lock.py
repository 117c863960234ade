"""One training per run folder (issue 14, item 8): a lock held for the life of the training process.

Real processes through the console script: while one `stadapt train` runs, every second one into the same
folder (plain, --resume, --auto-resume, --overwrite, under torchrun) is refused with exit 2, naming the holder,
and touches nothing; once the holder is SIGKILLed, the kernel has released its lock and a new run starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 16
data:
  root: {root}
  frames: 4
  stride: 1
  views: 1x1
  num_workers: {workers}
optim:
  batch_size: 2
  steps: {steps}
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 0
  save_every: 2
"""
EXE = str(Path(sys.executable).with_name("stadapt"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lock") / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=6,
                                        size=32, clutter=2))
    return root


def write_recipe(folder: Path, data: Path, *, steps: int, workers: int = 0) -> Path:
    path = folder / f"tiny_{steps}_{workers}.yaml"
    path.write_text(RECIPE.format(root=json.dumps(str(data)), steps=steps, workers=workers))
    return path


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def wait_for_training(run: Path, process: subprocess.Popen, step: int = 1) -> None:
    deadline = time.time() + 120
    while True:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, "the run never started training"
        if (run / "metrics.jsonl").is_file() and any(e.get("step", 0) >= step for e in events(run)):
            return
        time.sleep(0.05)


def test_a_second_training_into_a_running_folder_is_refused_every_time(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    long = write_recipe(tmp_path, data, steps=100_000, workers=1)  # a DataLoader worker: it must not keep the lock
    first = subprocess.Popen([EXE, "train", str(long), f"output.dir={run}", "-q"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for_training(run, first, step=3)  # a checkpoint at step 2: the folder holds a run
        for extra in ((), ("--overwrite",), ("--auto-resume",), ("--resume",)):
            second = run_cli("train", str(long), f"output.dir={run}", *extra, "-q")
            assert second.returncode == 2, second.stderr[-3000:]
            assert "Traceback" not in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                   "2", "--no-python", "stadapt", "train", str(long), f"output.dir={run}", "-q"],
                                  capture_output=True, text=True, env=env, timeout=240)
        assert torchrun.returncode != 0 and f"pid {first.pid}" in torchrun.stderr, torchrun.stderr[-3000:]
        assert first.poll() is None  # the first run went on, untouched
        logged = events(run)
        assert [e["step"] for e in logged if e["split"] == "info"] == [0]
        steps = [e["step"] for e in logged if e["split"] == "train"]
        assert steps == list(range(1, len(steps) + 1))  # one writer: no line twice
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)

    # the kernel released the dead process's lock: the next run gets it (and continues the run)
    resumed = run_cli("train", str(long), f"output.dir={run}", "--auto-resume", "--stop-after", "1", "-q")
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_two_trainings_started_at_once_into_one_folder_one_runs(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    recipe = write_recipe(tmp_path, data, steps=4)
    both = [subprocess.Popen([EXE, "train", str(recipe), f"output.dir={run}", "-q"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=240), p.communicate()[1]) for p in both]
    assert sorted(code for code, _ in results) == [0, 2], results
    assert all("Traceback" not in err for _, err in results)
    assert [e["step"] for e in events(run) if e["split"] == "train"] == [1, 2, 3, 4]


NO_FCNTL = """
import importlib, json, pkgutil, sys
sys.modules["fcntl"] = sys.modules["resource"] = None  # POSIX-only: on Windows `import fcntl` raises ImportError
import stadapt, stadapt_clip, stadapt_swag, stadapt_timm
names = []
for package in (stadapt, stadapt_clip, stadapt_swag, stadapt_timm):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)
        names.append(module.name)
from stadapt.runs.lock import RunLock
from stadapt.errors import StadaptError
try:
    RunLock(sys.argv[1]).acquire()
    print(json.dumps({"modules": names, "acquired": True}))
except StadaptError as exc:
    print(json.dumps({"modules": names, "acquired": False, "error": str(exc)}))
"""


def test_without_fcntl_every_module_imports_and_the_lock_refuses_in_one_line(tmp_path: Path) -> None:
    """A platform without fcntl and resource (Windows): importing stadapt and each of its modules works; taking the run
    lock is refused with one line that says why and what to do, and leaves nothing in the folder."""
    done = subprocess.run([sys.executable, "-c", NO_FCNTL, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "stadapt.runs.lock" in report["modules"] and "stadapt.training.loop" in report["modules"]
    assert report["acquired"] is False
    assert len(report["error"].splitlines()) == 1
    assert "no POSIX file locks (fcntl)" in report["error"] and "WSL" in report["error"]
    assert list(tmp_path.iterdir()) == []
