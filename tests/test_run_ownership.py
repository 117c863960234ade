"""What `stadapt train` and `import-checkpoint` may replace: only what stadapt wrote (issue 14, items 1 and 3).

Through the console script, on real video files: a user's folder is never called a run nor deleted, even with
--overwrite; a run with a user's file in it is not replaced; runs written before the marker are still runs;
every refusal at model build comes before the run folder exists; a run killed before its first checkpoint is
restarted by the same command, and each refusal names the option that works.
"""

from __future__ import annotations

import json
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
  num_workers: 0
optim:
  batch_size: 2
  steps: {steps}
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 0
  save_every: 1000
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ownership") / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=6,
                                        size=32, clutter=2))
    return root


def write_recipe(folder: Path, data: Path, steps: int = 2) -> Path:
    path = folder / f"tiny_{steps}.yaml"
    path.write_text(RECIPE.format(root=json.dumps(str(data)), steps=steps))
    return path


def refused(result: subprocess.CompletedProcess) -> str:
    """The one-line refusal of a run that must exit 2 without a traceback."""
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_users_folder_is_never_called_a_run_nor_deleted(data: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data)
    mine = tmp_path / "mydir"
    (mine / "photos").mkdir(parents=True)
    (mine / "photos" / "a.txt").write_text("x")
    for extra in ((), ("--overwrite",), ("--auto-resume",)):
        message = refused(run_cli("train", str(recipe), f"output.dir={mine}", *extra, "-q"))
        assert "already holds a run" not in message and "photos/" in message, message
    assert (mine / "photos" / "a.txt").read_text() == "x"
    assert sorted(p.name for p in mine.iterdir()) == ["photos"]  # not even a lock file or marker left

    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine to use
    result = run_cli("train", str(recipe), f"output.dir={empty}", "-q")
    assert result.returncode == 0, result.stderr


def test_overwrite_replaces_only_a_run_that_holds_nothing_but_what_stadapt_wrote(data: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data)
    run = tmp_path / "run"
    assert run_cli("train", str(recipe), f"output.dir={run}", "-q").returncode == 0
    assert run_cli("eval", str(run), "-q").returncode == 0  # eval.json, eval.predictions.csv, ... are stadapt's too
    for marker in run.glob(".stadapt-run*"):
        marker.unlink()  # as a run written before the marker existed: still recognised
    (run / "notes.txt").write_text("mine")
    message = refused(run_cli("train", str(recipe), f"output.dir={run}", "-q"))
    assert "already holds a run" in message and "--resume" in message and "notes.txt" in message
    message = refused(run_cli("train", str(recipe), f"output.dir={run}", "--overwrite", "-q"))
    assert "notes.txt" in message
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoints" / "last" / "stadapt.json").is_file()

    (run / "notes.txt").unlink()
    replaced = run_cli("train", str(recipe), f"output.dir={run}", "optim.steps=3", "--overwrite", "-q")
    assert replaced.returncode == 0, replaced.stderr
    assert not (run / "eval.json").exists() and not (run / "eval.predictions.csv").exists()  # the old run's
    assert json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())["step"] == 3
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(e["split"], e["step"]) for e in logged if e["split"] != "val"] == [("info", 0), ("train", 1),
                                                                                  ("train", 2), ("train", 3)]


@pytest.mark.slow  # runs import-checkpoint many times (about 25 s)
def test_import_checkpoint_overwrite_never_removes_a_users_file(tmp_path: Path) -> None:
    from test_import_checkpoint import _import, _reference_checkpoint

    _, archive, ckpt, _ = _reference_checkpoint(tmp_path)
    out = tmp_path / "imported"
    assert _import(ckpt, archive, out).returncode == 0
    (out / "notes.txt").write_text("mine")
    message = refused(_import(ckpt, archive, out, "--overwrite"))
    assert "notes.txt" in message
    assert (out / "notes.txt").read_text() == "mine" and (out / "stadapt.json").is_file()

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    message = refused(_import(ckpt, archive, folder, "--overwrite"))
    assert "not a stadapt checkpoint" in message and "notes.txt" in message
    assert (folder / "notes.txt").read_text() == "mine"

    (out / "notes.txt").unlink()
    assert _import(ckpt, archive, out, "--overwrite").returncode == 0


@pytest.mark.parametrize("override", ["backbone.weights=nope", "backbone.weights={garbage}", "adapter.blocks=[0,99]"],
                         ids=["unknown-tag", "refused-file", "block-out-of-range"])
def test_a_run_refused_at_model_build_leaves_no_folder(data: Path, tmp_path: Path, override: str) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a weights file")
    run = tmp_path / "run"
    result = run_cli("train", str(write_recipe(tmp_path, data)), f"output.dir={run}",
                     override.format(garbage=garbage), "-q")
    assert result.returncode != 0
    if "blocks" not in override:  # out-of-range blocks become a clean refusal in another change
        refused(result)
    assert not run.exists()


def test_a_run_killed_before_its_first_checkpoint_restarts_with_the_same_command(data: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data, steps=6)
    run = tmp_path / "run"
    command = ["train", str(recipe), f"output.dir={run}", "-q"]
    process = subprocess.Popen([str(Path(sys.executable).with_name("stadapt")), *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file():  # started: the recipe is written, no checkpoint yet
        assert process.poll() is None and time.time() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not list(run.glob("checkpoints/*/stadapt.json")), "the run saved a checkpoint before it was killed"

    message = refused(run_cli(*command, "--resume"))
    assert "no checkpoint" in message and "without --resume" in message

    # a stub left by an older stadapt: only recipe.yaml and an empty staging folder, no marker
    for marker in run.glob(".stadapt-run*"):
        marker.unlink()
    (run / "checkpoints" / ".last.abc123").mkdir(parents=True, exist_ok=True)
    again = run_cli(*command)  # the same command: nothing to lose, so no --overwrite needed
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())["step"] == 6
    assert not (run / "checkpoints" / ".last.abc123").exists()
