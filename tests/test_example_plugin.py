"""examples/stadapt-plugin-example, a third party's plugin in its own distribution: pip-installed into a
directory of its own, found by the `stadapt` command through its entry point alone, and used end to
end (its own tests, conformance, train, eval, export) as its users would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import EXAMPLE_PLUGIN
from helpers import run_cli

RECIPE = """\
backbone:
  name: regvit:tiny
  weights: regvit_tiny.pth
adapter:
  bottleneck: 16
  positions: [pre_attn, pre_mlp]
model:
  dropout: 0.0
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: 1.0e-2
  batch_size: 4
  micro_batch: 2
  steps: 3
  warmup_steps: 1
train:
  device: cpu
  val_every: 3
"""


def test_the_examples_own_tests_pass_against_the_installed_plugin(example_plugin: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(EXAMPLE_PLUGIN / "tests")],
                          capture_output=True, text=True, env={"PYTHONPATH": str(example_plugin),
                                                               "PATH": str(Path(sys.executable).parent)},
                          cwd=example_plugin, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_installed_plugin_trains_evaluates_and_exports_through_the_cli(example_plugin: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(example_plugin))
    from stadapt_regvit.model import RegViT

    torch.manual_seed(0)  # the plugin's "released" weights, in the plugin's own checkpoint format
    released = RegViT(size=32, patch=8, width=64, depth=3, heads=2, registers=1)
    torch.save({"model": released.state_dict(), "epoch": 300}, tmp_path / "regvit_tiny.pth")
    data = tmp_path / "data"
    done = run_cli("prepare-data", "synthetic", "--out", str(data), "--motions", "horizontal", "--train-per-class",
                   "2", "--val-per-class", "1", "--frames", "10", "--size", "32", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "regvit.yaml").write_text(RECIPE.format(root=json.dumps(str(data))))
    # training in a new process that finds the plugin where Python finds installed packages; eval and
    # export in this process, whose path holds it too
    trained = run_cli("train", "regvit.yaml", "-q", env={"PYTHONPATH": str(example_plugin)}, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "runs" / "regvit"
    meta = json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())
    assert meta["model"]["backbone"] == "regvit:tiny"
    evaluated = run_cli("eval", str(run), "--views", "2x1", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((run / "eval.json").read_text())["videos"] == 2
    exported = run_cli("export", "--onnx", "--checkpoint", str(run), "--verify", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "verified with onnxruntime" in exported.stdout

    # without the plugin installed, the same run names what is missing
    missing = run_cli("eval", str(run), cwd=tmp_path, process=True)  # a process without the plugin's path
    assert missing.returncode != 0 and "unknown backbone plugin 'regvit'" in missing.stderr
    assert "Traceback" not in missing.stderr
