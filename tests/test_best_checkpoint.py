"""Best checkpoint (issue 18.4): training keeps checkpoints/best by validation top-1 beside last, it survives
a save cut short and --overwrite, and commands that take a run say which checkpoint they use (--which)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli
from safetensors.torch import load_file

from stadapt.data.synthetic import SyntheticSpec, write_synthetic
from stadapt.runs.layout import RunDir

# validation after every step of a tiny run: top-1 rises, then falls before the last step
RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 16
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: {lr}
  batch_size: 8
  steps: {steps}
  warmup_steps: 0
train:
  device: cpu
  seed: {seed}
  log_every: 1
  val_every: 1
  save_every: 100
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run validated after every step, whose best validation is not at its last step."""
    base = tmp_path_factory.mktemp("best")
    root = base / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal", "vertical", "scale"), train_per_class=4,
                                        val_per_class=4, frames=10,
                                        size=32, clutter=4))
    recipe = base / "tiny.yaml"
    recipe.write_text(RECIPE.format(root=json.dumps(str(root)), lr=LR, steps=STEPS, seed=SEED))
    out = base / "run"
    done = run_cli("train", str(recipe), f"output.dir={out}", "-q")
    assert done.returncode == 0, done.stderr
    return out


LR, STEPS, SEED = 0.01, 8, 0  # val top-1 by step: .125 .25 .208 .25 .292 .25 .25 .25


def _val_events(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("split") == "val"]


def test_best_holds_the_step_of_the_highest_validation_top1(run: Path) -> None:
    events = _val_events(run)
    assert [e["step"] for e in events] == list(range(1, STEPS + 1))
    top = max(e["top1"] for e in events)
    best_step = max(e["step"] for e in events if e["top1"] == top)  # a tie goes to the later step
    assert best_step != STEPS, f"the run's best is its last step, the test proves nothing: {events}"
    meta = json.loads((run / "checkpoints" / "best" / "stadapt.json").read_text())
    assert meta["step"] == best_step and meta["validation"]["top1"] == top
    assert json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())["step"] == STEPS
    best = load_file(run / "checkpoints" / "best" / "trainable.safetensors")
    last = load_file(run / "checkpoints" / "last" / "trainable.safetensors")
    assert any(not best[k].equal(last[k]) for k in best)
    # and the best weights really score that top-1: eval picks best by default and says so
    evaluated = run_cli("eval", str(run), "-q", "--out", str(run.parent / "best_eval.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "using checkpoints/best" in evaluated.stderr and f"step {best_step}" in evaluated.stderr
    report = json.loads((run.parent / "best_eval.json").read_text())
    assert report["step"] == best_step and abs(report["top1"] - top) < 1e-9
    chosen = run_cli("eval", str(run), "-q", "--which", "last", "--out", str(run.parent / "last_eval.json"))
    assert chosen.returncode == 0, chosen.stderr
    assert "using checkpoints/last" in chosen.stderr
    assert json.loads((run.parent / "last_eval.json").read_text())["step"] == STEPS


def test_best_survives_a_swap_cut_short(run: Path, tmp_path: Path) -> None:
    """A crash between the swap's two renames leaves `.best.old` and no `best`: recovery puts it back."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    step = json.loads((copy / "checkpoints" / "best" / "stadapt.json").read_text())["step"]
    (copy / "checkpoints" / "best").rename(copy / "checkpoints" / ".best.old")
    (copy / "checkpoints" / ".best.a1b2c3d4").mkdir()  # a staging folder whose write never finished
    RunDir(copy).recover_checkpoints(keep=1)
    assert json.loads((copy / "checkpoints" / "best" / "stadapt.json").read_text())["step"] == step
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["best", "last"]


def test_overwrite_knows_best_and_which_refusals(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert RunDir(copy).state().foreign == []  # best/ is stadapt's: --overwrite may replace the run
    assert RunDir(copy).plan_start(resume=False, overwrite=True) == "replace"
    (copy / "checkpoints" / "best" / "notes.txt").write_text("mine")
    assert RunDir(copy).state().foreign == ["checkpoints/best/notes.txt"]
    refused = run_cli("eval", str(copy / "checkpoints" / "last"), "--which", "best", "-q")
    assert refused.returncode == 2 and "--which" in refused.stderr and "Traceback" not in refused.stderr
    shutil.rmtree(copy / "checkpoints" / "best")
    missing = run_cli("eval", str(copy), "--which", "best", "-q")
    assert missing.returncode == 2 and "keeps no checkpoints/best" in missing.stderr


def test_a_first_save_cut_short_after_best_restarts_with_the_command_the_refusal_names(run: Path,
                                                                                        tmp_path: Path) -> None:
    """23.9: a disk that fills during the first save leaves best/ without last/ (no trainer state to continue
    from). --resume, the plain command and the old advice (rename best to last) each name --auto-resume, which
    starts the run again, as it does for a run that died before its first checkpoint."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "last")
    for kept in (copy / "checkpoints").glob("step_*"):
        shutil.rmtree(kept)
    recipe = str(run.parent / "tiny.yaml")
    for flags in (["--resume"], []):
        refused = run_cli("train", recipe, f"output.dir={copy}", "-q", *flags)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "no checkpoint with the trainer state" in refused.stderr and "--auto-resume" in refused.stderr
        assert "rename" not in refused.stderr
    renamed = tmp_path / "renamed"  # what the earlier refusal told the user to do
    shutil.copytree(copy, renamed)
    (renamed / "checkpoints" / "best").rename(renamed / "checkpoints" / "last")
    assert RunDir(renamed).plan_start(resume=False, auto_resume=True) == "replace"
    done = run_cli("train", recipe, f"output.dir={copy}", "optim.steps=2", "-q", "--auto-resume")
    assert done.returncode == 0, done.stderr
    assert json.loads((copy / "checkpoints" / "last" / "stadapt.json").read_text())["step"] == 2
    assert (copy / "checkpoints" / "best" / "stadapt.json").is_file()
