"""The training loop reads the device back once per optimizer step, not once per micro-batch (issue 16.2).

Every way a tensor's value reaches the host (`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `int()`,
`float()`, `bool()`, `index`) is patched to count the calls stadapt's own code makes while a real run
trains with gradient accumulation, from its first step to its last (the setup before, data loading
and validation left out: they are not the step)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import stadapt
from stadapt.data.synthetic import SyntheticSpec, write_synthetic
from stadapt.recipe import load_recipe
from stadapt.training.loop import train

PACKAGE = Path(stadapt.__file__).parent
# data loading (the clip stream shuffles with CPU tensors) and validation are not the step
NOT_THE_STEP = (PACKAGE / "data", PACKAGE / "training" / "stream.py", PACKAGE / "inference" / "views.py")
STEPPING = (PACKAGE / "training" / "loop.py", "_run_steps")  # the loop over the steps, after the run's setup
SYNCS = ("item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")

RECIPE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
adapter: {{bottleneck: 16}}
data: {{root: {root}, frames: 4, stride: 2, views: 1x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 6, micro_batch: 2, steps: {steps}, warmup_steps: 1}}
train: {{device: cpu, log_every: 1, val_every: 0, save_every: 100, tensorboard: false}}
"""


def count_host_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch the tensor methods that wait for a tensor's value; returns the list the calls go to."""
    calls: list[str] = []

    def counting(name: str, original):
        def method(self, *args, **kwargs):
            frame = sys._getframe(1)
            caller = Path(frame.f_code.co_filename)
            if (PACKAGE in caller.parents and _stepping(frame)
                    and not any(_within(frame, part) for part in NOT_THE_STEP)):
                calls.append(f"{name} at {caller.name}:{frame.f_lineno}")
            return original(self, *args, **kwargs)
        return method

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    return calls


def _stepping(frame) -> bool:
    while frame is not None:
        if (Path(frame.f_code.co_filename), frame.f_code.co_name) == STEPPING:
            return True
        frame = frame.f_back
    return False


def _within(frame, part: Path) -> bool:
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path == part or part in path.parents:
            return True
        frame = frame.f_back
    return False


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=3, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    return root


def run(data: Path, folder: Path, steps: int) -> Path:
    recipe_file = folder / "r.yaml"
    recipe_file.write_text(RECIPE.format(root=json.dumps(str(data)), steps=steps))
    recipe = load_recipe(recipe_file, [f"output.dir={folder / 'run'}"])
    train(recipe, progress=False)
    return folder / "run"


def test_one_host_sync_per_step_with_three_micro_batches(data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_host_syncs(monkeypatch)
    run_dir = run(data, tmp_path, steps=3)
    monkeypatch.undo()
    info = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert info["accumulation"] == 3
    assert len(calls) == 3, calls  # one per optimizer step, wherever the micro-batches are
    losses = [json.loads(line).get("loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(loss is not None for loss in losses) == 3  # and every step still logs its loss

