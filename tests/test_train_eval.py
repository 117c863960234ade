"""End to end through the console script: prepare-data, train, stop, resume, eval; on real video files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

from stadapt.data.prepared import file_sha256
from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 32
model:
  dropout: 0.5
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
  steps: 4
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 2
  save_every: 100
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes (moving right / left), 4 training and 3 validation clips each, plus one broken video."""
    root = tmp_path_factory.mktemp("data") / "synthetic tiny"  # a space in the path, on purpose
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=4, val_per_class=3, frames=10,
                                        size=32, clutter=4))
    (root / "videos" / "broken.mp4").write_bytes(b"")  # listed, but not a video: must be skipped in eval
    with (root / "val.txt").open("a") as f:
        f.write("videos/broken.mp4 1\n")
    return root


def write_recipe(folder: Path, root: Path, workers: int = 0) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(RECIPE.format(root=json.dumps(str(root)), workers=workers))
    return path


def test_train_stop_resume_equals_uninterrupted_then_eval_2x3(dataset: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, dataset, workers=1)
    straight = run_cli("train", str(recipe), f"output.dir={tmp_path / 'straight'}", "-q")
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "resumed"
    first = run_cli("train", str(recipe), f"output.dir={run}", "--stop-after", "2", "-q")
    assert first.returncode == 0, first.stderr
    assert "stopped at step 2 of 4" in first.stdout and "--resume" in first.stdout
    assert json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())["step"] == 2

    again = run_cli("train", str(recipe), f"output.dir={run}", "-q")  # no --resume: refuses to touch the run
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--resume" in again.stderr

    resumed = run_cli("train", str(recipe), f"output.dir={run}", "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    final = load_file(run / "checkpoints" / "last" / "trainable.safetensors")
    reference = load_file(tmp_path / "straight" / "checkpoints" / "last" / "trainable.safetensors")
    assert final.keys() == reference.keys()
    for key in final:  # same data order, augmentation, dropout and optimizer state: the same weights
        assert torch.equal(final[key], reference[key]), key
    steps = [e["step"] for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if e["split"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert (run / "curves.png").stat().st_size > 0
    recorded = (run / "recipe.yaml").read_text()
    assert recorded.startswith("# resolved by stadapt") and "bottleneck: 32" in recorded and "lr: 0.001" in recorded

    result = run_cli("eval", str(run), "--views", "2x3", "-q", "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "eval.json").read_text())
    assert report["listed"] == 7 and report["videos"] == 6 and report["skipped"] == 1
    assert report["skipped_videos"][0]["path"].endswith("broken.mp4")
    assert (report["views"], report["temporal_views"], report["spatial_views"]) == ("2x3", 2, 3)
    assert report["fusion"] == "mean of per-view softmax probabilities"
    assert report["list_sha256"] == file_sha256(dataset / "val.txt")
    assert report["checkpoint_sha256"] == file_sha256(run / "checkpoints" / "last" / "trainable.safetensors")
    assert report["step"] == 4
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert math.isfinite(report[key]) and 0 <= report[key] <= 1
    assert report["top5"] == 1.0  # 2 classes: the true one is always in the top k
    assert sum(row["videos"] for row in report["per_class"].values()) == 6
    assert sum(map(sum, report["confusion"])) == 6
    assert "top-1" in result.stdout and "moving right" in result.stdout
    assert (run / "eval.confusion.png").stat().st_size > 0


def test_eval_without_argument_takes_the_latest_run(dataset: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, dataset)
    trained = run_cli("train", str(recipe), "optim.steps=2", "name=only", "-q", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "runs" / "only" / "checkpoints" / "last").is_dir()
    result = run_cli("eval", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "runs" / "only" / "eval.json").read_text())
    assert report["views"] == "1x1" and report["videos"] == 6 and report["step"] == 2


def test_recipe_with_three_mistakes_is_one_message(dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = write_recipe(tmp_path, dataset).read_text()
    text = text.replace("  lr: 1.0e-3", "  lr: fast").replace("  bottleneck: 32", "  bottlenek: 32")
    text = text.replace(json.dumps(str(dataset)), json.dumps(str(tmp_path / "nowhere")))
    bad.write_text(text)
    result = run_cli("train", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "has 3 problems" in result.stderr
    for key in ("optim.lr", "adapter.bottlenek", "data.root"):
        assert key in result.stderr
    assert "did you mean 'bottleneck'" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started


def test_bad_override_and_missing_recipe(tmp_path: Path, dataset: Path) -> None:
    recipe = write_recipe(tmp_path, dataset)
    result = run_cli("train", str(recipe), "optim.steps=many")
    assert result.returncode == 2 and "optim.steps" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "not found" in result.stderr


def test_prepare_synthetic_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    result = run_cli("prepare-data", "synthetic", "--out", str(tmp_path), "-q")
    assert result.returncode == 2 and "not empty" in result.stderr and "--overwrite" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_training_survives_broken_videos_and_logs_them(dataset: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((dataset / "videos" / "train" / "00_0000.mp4").read_bytes()[:500])
    listing = tmp_path / "train with broken.txt"
    listing.write_text((dataset / "train.txt").read_text() + f"{empty} 0\n{cut} 1\n")
    recipe = write_recipe(tmp_path, dataset)
    # 4 steps x 4 clips = 16 draws from 10 videos: every video, both broken ones included, is drawn
    result = run_cli("train", str(recipe), f"data.train_list={listing}", f"output.dir={tmp_path / 'run'}", "-q")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    bad = [e for e in events if e["split"] == "data"]
    assert {e["path"] for e in bad} == {str(empty), str(cut)}
    assert all(e["event"] == "bad_video_replaced" and "cannot decode" in e["error"] for e in bad)
    last_train = [e for e in events if e["split"] == "train"][-1]
    assert last_train["step"] == 4 and last_train["bad_videos"] == len(bad)
    assert f"cannot decode {empty}" in result.stderr and "replaced by another video" in result.stderr  # a warning


def test_eval_chunks_views_and_writes_per_video_predictions(dataset: Path, tmp_path: Path) -> None:
    import csv

    recipe = write_recipe(tmp_path, dataset)
    run = tmp_path / "run"
    assert run_cli("train", str(recipe), "optim.steps=2", f"output.dir={run}", "-q").returncode == 0
    whole = run_cli("eval", str(run), "--views", "3x2", "--out", str(tmp_path / "whole.json"), "-q")
    assert whole.returncode == 0, whole.stderr
    chunked = run_cli("eval", str(run), "--views", "3x2", "--max-clips", "4", "--out", str(tmp_path / "chunk.json"),
                      "-q")
    assert chunked.returncode == 0, chunked.stderr
    rows = list(csv.DictReader((tmp_path / "chunk.predictions.csv").open()))
    assert len(rows) == 7 and [int(r["index"]) for r in rows] == list(range(7))  # every listed video, in order
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 1 and skipped[0]["path"].endswith("broken.mp4") and "cannot decode" in skipped[0]["error"]
    ok = [r for r in rows if r["status"] == "ok"]
    report = json.loads((tmp_path / "chunk.json").read_text())
    assert report["views"] == "3x2" and report["videos"] == len(ok) == 6
    assert sum(int(r["correct"]) for r in ok) == round(report["top1"] * 6)
    assert all(r["prediction_name"] == r["top5"].split("|")[0] for r in ok)
    # chunking the views changes the memory, not the answer
    whole_rows = list(csv.DictReader((tmp_path / "whole.predictions.csv").open()))
    for a, b in zip(rows, whole_rows, strict=True):
        assert a["prediction"] == b["prediction"]
        assert abs(float(a["probability"] or 0) - float(b["probability"] or 0)) < 1e-5


def test_predict_prints_parseable_top_k_and_reports_bad_videos(dataset: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, dataset)
    run = tmp_path / "run"
    assert run_cli("train", str(recipe), "optim.steps=2", f"output.dir={run}", "-q").returncode == 0
    videos = [dataset / "videos" / "val" / "00_0000.mp4", dataset / "videos" / "val" / "01_0001.mp4"]
    result = run_cli("predict", *map(str, videos), "--checkpoint", str(run), "--top-k", "2", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["video"] for line in lines] == [str(v) for v in videos]
    for line in lines:
        assert [t["class"] for t in line["top"]] and len(line["top"]) == 2
        assert {t["class"] for t in line["top"]} == {"moving right", "moving left"}
        assert abs(sum(t["probability"] for t in line["top"]) - 1) < 1e-4  # 2 classes: top-2 covers all
        assert line["top"][0]["probability"] >= line["top"][1]["probability"]
    # the same probabilities as stadapt eval's per-video predictions for those videos (1x1 views)
    evaluated = run_cli("eval", str(run), "--views", "1x1", "-q")
    assert evaluated.returncode == 0, evaluated.stderr
    import csv

    rows = {r["path"]: r for r in csv.DictReader((run / "eval.predictions.csv").open())}
    for video, line in zip(videos, lines, strict=True):
        row = rows[str(video)]
        assert row["prediction_name"] == line["top"][0]["class"]
        assert abs(float(row["probability"]) - line["top"][0]["probability"]) < 1e-4
    broken = run_cli("predict", str(dataset / "videos" / "broken.mp4"), str(videos[0]), "--checkpoint", str(run))
    assert broken.returncode == 1 and "error: cannot decode" in broken.stdout and str(videos[0]) in broken.stdout
    assert "Traceback" not in broken.stderr
