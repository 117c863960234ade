"""train.loggers: Weights & Biases in its offline mode, and RUN/train.log (the run's console output, appended
on resume), through the real console script on real video files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone: {{name: "clip:tiny", weights: synthetic}}
adapter: {{bottleneck: 16}}
data: {{root: {root}, frames: 4, stride: 2, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 4, steps: 4}}
train: {{device: cpu, log_every: 1, val_every: 2, save_every: 2, loggers: {loggers}}}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiny"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=8,
                                        size=32, clutter=2))
    return root


def recipe(folder: Path, root: Path, loggers: str) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(RECIPE.format(root=json.dumps(str(root)), loggers=loggers))
    return path


def test_wandb_offline_run_files_hold_the_logged_metric(dataset: Path, tmp_path: Path) -> None:
    wandb_dir = tmp_path / "wandb-dir"
    wandb_dir.mkdir()
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true"}
    done = run_cli("train", str(recipe(tmp_path, dataset, "[tensorboard, wandb]")), "-q", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = sorted((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(wandb_dir.rglob("*"))
    (data_file,) = runs[0].glob("run-*.wandb")  # wandb's own record of the run, written offline
    run_id = json.loads((tmp_path / "runs/tiny/wandb.json").read_text())["id"]
    assert data_file.name == f"run-{run_id}.wandb"
    logged = wandb_history(data_file)
    metrics = [json.loads(line) for line in (tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in metrics if e["split"] == "train"]
    assert logged["train/loss"] == pytest.approx(losses) and len(losses) == 4
    assert logged["val/top1"] == pytest.approx([e["top1"] for e in metrics if e["split"] == "val"])
    assert any((tmp_path / "runs/tiny/tensorboard").iterdir())  # the other logger still writes


def wandb_history(path: Path) -> dict[str, list[float]]:
    """The `history` records (what run.log wrote) of wandb's offline .wandb file: protobuf Records in a
    LevelDB-style log (a 7-byte file header; 32 KiB blocks of chunks with a 7-byte header each)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            records.append(pending)
            pending = b""
    logged: dict[str, list[float]] = {}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                logged.setdefault(item.key or "/".join(item.nested_key), []).append(json.loads(item.value_json))
    return logged


def test_train_log_holds_the_console_output_and_is_appended_on_resume(dataset: Path, tmp_path: Path) -> None:
    path = recipe(tmp_path, dataset, "[]")
    first = run_cli("train", str(path), "--stop-after", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    log = tmp_path / "runs/tiny/train.log"
    text = log.read_text()
    assert "run started" in text and "parameters train" in text  # the opening line the console showed
    assert "step 2: val top-1" in text and "[step 1] train: loss" in text
    assert not (tmp_path / "runs/tiny/tensorboard").exists()  # loggers: [] writes no event files
    second = run_cli("train", str(path), "--resume", "-q", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    again = log.read_text()
    assert again.startswith(text)  # appended, never rewritten
    assert "run resumed at step 2" in again and "[step 4] train: loss" in again
    assert "trained 4 steps" in again.splitlines()[-2]  # the command's closing summary, too
    assert "\r" not in again  # a redrawn progress bar leaves its final state, not every redraw


def test_missing_wandb_is_refused_with_the_extra_to_install(dataset: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    done = run_cli("train", str(recipe(tmp_path, dataset, "[wandb]")), env={"PYTHONPATH": str(blocker),
                                                                            "STADAPT_TEST_BLOCK": "wandb"},
                   cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("stadapt: error: train.loggers: wandb needs the package wandb, which is not "
                                   "installed; install it with: pip install 'stadapt[wandb]'")
    assert not (tmp_path / "runs").exists()  # refused before the run directory exists


def test_missing_tensorboard_falls_back_to_metrics_with_one_notice(dataset: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    done = run_cli("train", str(recipe(tmp_path, dataset, "[tensorboard]")), "-q",
                   env={"PYTHONPATH": str(blocker), "STADAPT_TEST_BLOCK": "tensorboard"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("TensorBoard is not installed") == 1
    assert "pip install 'stadapt[tensorboard]'" in done.stderr
    assert not (tmp_path / "runs/tiny/tensorboard").exists()
    assert len((tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()) > 4


# A sitecustomize that makes the top-level packages named in STADAPT_TEST_BLOCK unimportable, as if they were not
# installed (a meta-path finder ahead of every other one).
BLOCKER = '''\
import os
import sys

BLOCKED = set(filter(None, os.environ.get("STADAPT_TEST_BLOCK", "").split(",")))


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _Block())
'''
