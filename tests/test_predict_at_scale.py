"""`stadapt predict` at scale (issue 18.3): folders, globs and lists, batched through workers, CSV / JSONL with
class names; a corrupt video gives an error row and exit status 1, the others their rows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli, train_synthetic_run

RECIPE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
adapter: {{bottleneck: 16}}
data: {{root: {root}, frames: 4, stride: 2, views: 1x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 4, steps: 1, warmup_steps: 0}}
train: {{device: cpu, val_every: 0, loggers: []}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a one-step run, a folder of 4 of its videos and one corrupt one)."""
    base = tmp_path_factory.mktemp("predict")
    run = train_synthetic_run(base, RECIPE)
    root = base / "data"
    folder = base / "clips"
    (folder / "sub").mkdir(parents=True)
    for video in sorted((root / "videos" / "val").glob("*.mp4")):
        shutil.copy(video, folder / "sub" / video.name)
    (folder / "corrupt.mp4").write_bytes(b"\x00" * 100)
    return run, folder


def test_folder_with_a_corrupt_video_gives_rows_and_one_error_row(trained: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    run, folder = trained
    out = tmp_path / "pred.csv"
    done = run_cli("predict", str(folder), "--checkpoint", str(run), "--out", str(out), "--workers", "2",
                   "--batch-size", "2")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "1 error" in done.stdout
    videos = sorted(p for p in folder.rglob("*.mp4"))
    rows = list(csv.DictReader(out.open()))
    assert [r["video"] for r in rows] == [str(v) for v in videos]
    errors = [r for r in rows if r["status"] == "error"]
    assert [r["video"] for r in errors] == [str(folder / "corrupt.mp4")] and errors[0]["error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4 and all(r["class"] in ("moving right", "moving left") for r in ok)
    # the same numbers as predicting each file on its own, today's path
    single = run_cli("predict", *(r["video"] for r in ok), "--checkpoint", str(run), "--json", "--workers", "0")
    assert single.returncode == 0, single.stderr
    for row, line in zip(ok, map(json.loads, single.stdout.splitlines()), strict=True):
        assert row["class"] == line["top"][0]["class"]
        assert abs(float(row["probability"]) - line["top"][0]["probability"]) < 1e-5


def test_jsonl_from_a_glob_and_a_list(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, folder = trained
    listed = tmp_path / "videos.txt"
    listed.write_text("sub/01_0001.mp4 1\n")
    shutil.copy(listed, folder / "videos.txt")
    out = tmp_path / "pred.jsonl"
    done = run_cli("predict", str(folder / "sub" / "00_*.mp4"), str(folder / "videos.txt"), "--checkpoint",
                   str(run), "--out", str(out), "-k", "1", "-q")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    want = [*sorted((folder / "sub").glob("00_*.mp4")), folder / "sub" / "01_0001.mp4"]
    assert [line["video"] for line in lines] == [str(v) for v in want]
    assert all(len(line["top"]) == 1 and line["top"][0]["class"].startswith("moving") for line in lines)
    again = run_cli("predict", str(want[0]), "--checkpoint", str(run), "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr
