"""train.loggers: Weights & Biases (offline when its server cannot be reached; refused online without a key),
and RUN/train.log (the run's console output, appended on resume), through the real console script on real
video files."""

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


def test_wandb_without_a_server_logs_offline_with_one_line(dataset: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A key but no server to reach (this test's: a local port nobody listens on) and no WANDB_MODE: the run
    logs offline at once, says so in one line naming WANDB_MODE, and wandb's files hold every logged metric.
    (It waited about 105 s for wandb, then failed with two tracebacks.)"""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    server = f"http://127.0.0.1:{closed_port()}"
    env = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567", "WANDB_BASE_URL": server,
           "HOME": str(home), "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    done = run_cli("train", str(recipe(tmp_path, dataset, "[tensorboard, wandb]")), "-q", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    notes = [line for line in done.stderr.splitlines() if "WANDB_MODE" in line]
    assert len(notes) == 1 and notes[0].startswith(f"stadapt: warning: W&B cannot be reached at {server} "), notes
    assert "logs to W&B offline in " + str(tmp_path / "runs/tiny/wandb") in notes[0] and "wandb sync" in notes[0]
    runs = sorted((tmp_path / "runs/tiny/wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    (data_file,) = runs[0].glob("run-*.wandb")  # wandb's own record of the run, written offline
    run_id = json.loads((tmp_path / "runs/tiny/wandb.json").read_text())["id"]
    assert data_file.name == f"run-{run_id}.wandb"
    logged = wandb_history(data_file)
    metrics = [json.loads(line) for line in (tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in metrics if e["split"] == "train"]
    assert logged["train/loss"] == pytest.approx(losses) and len(losses) == 4
    assert logged["val/top1"] == pytest.approx([e["top1"] for e in metrics if e["split"] == "val"])
    assert any((tmp_path / "runs/tiny/tensorboard").iterdir())  # the other logger still writes


def test_wandb_online_without_a_key_is_refused_before_the_run_starts(dataset: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key anywhere (environment, ~/.netrc) and online mode: one line naming the fixes, before any
    work (it was wandb's UsageError traceback after the model was built). Offline would hide that nothing
    reaches the W&B project the user asked for, so it is refused rather than assumed."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    done = run_cli("train", str(recipe(tmp_path, dataset, "[wandb]")), "-q", cwd=tmp_path,
                   env={"WANDB_MODE": "online", "HOME": str(home), "NETRC": str(home / ".netrc")})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("stadapt: error: train.loggers: wandb logs online to "), done.stderr
    assert "no W&B API key" in done.stderr and "`wandb login`" in done.stderr and "WANDB_MODE=offline" in done.stderr
    assert not (tmp_path / "runs").exists()  # refused before the run directory exists


def closed_port() -> int:
    """A local TCP port nothing listens on: connecting to it is refused at once, as to a server that is down."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    assert "parameters train" in first.stderr and "step 2: val top-1" in first.stderr  # the library's log records
    assert not (tmp_path / "runs/tiny/tensorboard").exists()  # loggers: [] writes no event files
    second = run_cli("train", str(path), "--resume", "-q", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    again = log.read_text()
    assert again.startswith(text)  # appended, never rewritten
    assert "run resumed at step 2" in again and "[step 4] train: loss" in again
    assert "step 4: val top-1" in again and "val top-1" not in second.stderr  # -q: the console shows warnings only
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
