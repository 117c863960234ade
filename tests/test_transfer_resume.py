"""`stadapt finetune-transfer` picks up where it stopped: a re-run of the same command keeps the splits
that finished (not retrained), continues an interrupted one from its checkpoint and starts the rest;
a changed setting is refused instead of mixing results; transfer.json reports what really ran."""

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
from test_transfer import source_run, tiny_ucf  # noqa: F401 - the source run fixture and the tiny UCF layout

TINY = ("optim.batch_size=4", "optim.warmup_steps=0", "-q")


def transfer_args(source: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune-transfer", "--from", str(source), "--dataset", "ucf101", "--root", str(root), "--out", str(out),
            *extra, *TINY]


def fingerprint(run: Path) -> tuple[int, bytes]:
    """When and what a split's checkpoint wrote: a retrained split changes both."""
    weights = run / "checkpoints" / "last" / "trainable.safetensors"
    return weights.stat().st_mtime_ns, weights.read_bytes()


def final_val(run: Path) -> dict:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e for e in events if e["split"] == "val"][-1]


def test_a_rerun_keeps_finished_splits_and_trains_the_rest(source_run: Path, tmp_path: Path) -> None:  # noqa: F811
    root = tiny_ucf(tmp_path / "UCF101")
    out = tmp_path / "transfer"
    third = root / "ucfTrainTestlist" / "trainlist03.txt"
    third.rename(third.with_suffix(".away"))  # split 3 fails after splits 1 and 2 finished
    args = transfer_args(source_run, root, out, "optim.steps=2")
    broken = run_cli(*args)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr, broken.stderr
    assert not (out / "transfer.json").exists()
    before = {split: fingerprint(out / f"split{split}") for split in (1, 2)}

    third.with_suffix(".away").rename(third)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert {split: fingerprint(out / f"split{split}") for split in (1, 2)} == before  # not retrained
    summary = json.loads((out / "transfer.json").read_text())
    assert [s["split"] for s in summary["splits"]] == [1, 2, 3]
    for entry in summary["splits"]:
        val = final_val(out / f"split{entry['split']}")
        assert (entry["top1"], entry["videos"], entry["views"]) == (val["top1"], val["videos"], "2x3")
    assert [s["reused"] for s in summary["splits"]] == [True, True, False]
    assert summary["mean_top1"] == pytest.approx(sum(s["top1"] for s in summary["splits"]) / 3)
    # "setting" is what ran (the overrides included), not the paper's defaults
    setting = summary["setting"]
    assert (setting["optim.steps"], setting["optim.batch_size"], setting["optim.warmup_steps"]) == (2, 4, 0)
    assert (setting["optim.scale.adapters"], setting["data.stride"], setting["data.views"]) == (0.1, 8, "2x3")
    assert setting["optim.lr"] == pytest.approx(1e-3)
    assert summary["overrides"] == ["optim.steps=2", "optim.batch_size=4", "optim.warmup_steps=0"]
    assert "earlier" in again.stdout  # the table says which splits were read back


def test_a_changed_setting_is_refused_and_overwrite_starts_again(source_run: Path, tmp_path: Path) -> None:  # noqa: F811
    root = tiny_ucf(tmp_path / "UCF101")
    out = tmp_path / "transfer"
    first = run_cli(*transfer_args(source_run, root, out, "--splits", "1", "optim.steps=1"))
    assert first.returncode == 0, first.stderr
    before = fingerprint(out / "split1")

    changed = run_cli(*transfer_args(source_run, root, out, "--splits", "1", "optim.steps=2"))
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    message = changed.stderr.strip()
    assert len(message.splitlines()) == 1 and "optim.steps" in message and "--overwrite" in message, message
    assert "--resume" not in message  # finetune-transfer has no such option
    assert fingerprint(out / "split1") == before

    again = run_cli(*transfer_args(source_run, root, out, "--splits", "1", "optim.steps=2", "--overwrite"))
    assert again.returncode == 0, again.stderr
    assert fingerprint(out / "split1")[0] != before[0]
    assert final_val(out / "split1")["step"] == 2
    assert json.loads((out / "transfer.json").read_text())["splits"][0]["reused"] is False


def test_an_interrupted_split_continues_from_its_checkpoint(source_run: Path, tmp_path: Path) -> None:  # noqa: F811
    root = tiny_ucf(tmp_path / "UCF101")
    out = tmp_path / "transfer"
    args = transfer_args(source_run, root, out, "--splits", "1,2", "optim.steps=6", "train.save_every=1")
    exe = Path(sys.executable).with_name("stadapt")
    process = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "split2" / "checkpoints" / "last" / "stadapt.json"
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the transfer ended before split 2 wrote a checkpoint"
    os.kill(process.pid, signal.SIGTERM)  # preemption in the middle of split 2
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "re-run" in stdout and "--resume" not in stdout + stderr, stdout
    assert not (out / "transfer.json").exists()
    stopped = json.loads(checkpoint.read_text())["step"]
    assert 0 < stopped < 6
    split1 = fingerprint(out / "split1")
    started = (out / "split2" / "metrics.jsonl").read_text().splitlines()[0]

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert fingerprint(out / "split1") == split1
    lines = (out / "split2" / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == started and sum('"split": "info"' in line for line in lines) == 1  # resumed, not restarted
    assert final_val(out / "split2")["step"] == 6
    summary = json.loads((out / "transfer.json").read_text())
    assert [(s["split"], s["reused"]) for s in summary["splits"]] == [(1, True), (2, False)]
