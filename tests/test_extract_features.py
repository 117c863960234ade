"""`stadapt extract-features` (issue 18.2): one row per readable video, in input order, equal to
`forward_features` of the same clips; bad videos listed, never replaced; folders, globs and lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, train_synthetic_run
from safetensors import safe_open

RECIPE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
adapter: {{bottleneck: 16}}
data: {{root: {root}, frames: 4, stride: 2, views: 2x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 4, steps: 1, warmup_steps: 0}}
train: {{device: cpu, val_every: 0, loggers: []}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a one-step run with 2x1 test views, a folder of 4 of its videos and one corrupt one)."""
    base = tmp_path_factory.mktemp("features")
    run = train_synthetic_run(base, RECIPE)
    root = base / "data"
    folder = base / "clips"
    folder.mkdir()
    for video in sorted((root / "videos" / "val").glob("*.mp4")):
        shutil.copy(video, folder / video.name)
    (folder / "00_0000b_broken.mp4").write_bytes(b"not a video")  # sorts between the readable ones
    return run, folder


def _reference(run: Path, videos: list[Path]) -> torch.Tensor:
    """forward_features of each video's views (video_views, the one video->views function), mean over views."""
    import stadapt
    from stadapt.data import video_views

    loaded = stadapt.load_model(run / "checkpoints" / "last")
    with torch.inference_mode():
        return torch.stack([loaded.forward_features(video_views(v, loaded.input_spec)).mean(0)
                            for v in videos])


def test_rows_in_input_order_equal_forward_features(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, folder = trained
    readable = sorted(p for p in folder.glob("*.mp4") if "broken" not in p.name)
    listed = tmp_path / "some.txt"  # a prepared-style list, its own order: the last video first
    listed.write_text(f"{readable[-1]} 1\n{readable[0]}\n")
    out = tmp_path / "features.safetensors"
    done = run_cli("extract-features", str(listed), str(folder), "--checkpoint", str(run), "--out", str(out),
                   "--workers", "2", "--batch-size", "2", "--per-frame")
    assert done.returncode == 1, done.stderr  # one bad video: rows for the rest, exit status 1
    assert "00_0000b_broken.mp4" in done.stderr and "Traceback" not in done.stderr
    order = [readable[-1], readable[0], *readable]  # the list, then the folder's videos sorted; broken left out
    with safe_open(str(out), framework="pt") as handle:
        meta = handle.metadata()
        features, frames = handle.get_tensor("features"), handle.get_tensor("frame_features")
    assert json.loads(meta["videos"]) == [str(v) for v in order]
    assert [b["video"] for b in json.loads(meta["bad_videos"])] == [str(folder / "00_0000b_broken.mp4")]
    assert features.shape == (len(order), 128) and frames.shape == (len(order), 2, 4, 128)
    torch.testing.assert_close(features, _reference(run, order), atol=1e-5, rtol=1e-5)
    assert meta["precision"] == "fp32" and json.loads(meta["input"])["temporal_views"] == 2


def test_npy_output_with_a_glob_and_refusals(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, folder = trained
    out = tmp_path / "features.npy"
    done = run_cli("extract-features", str(folder / "01_*.mp4"), "--checkpoint", str(run), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    videos = sorted(folder.glob("01_*.mp4"))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["videos"] == [str(v) for v in videos] and meta["bad_videos"] == []
    np.testing.assert_allclose(np.load(out), _reference(run, videos).numpy(), atol=1e-5, rtol=1e-5)
    again = run_cli("extract-features", str(folder / "01_*.mp4"), "--checkpoint", str(run), "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr
    mine = tmp_path / "mine.safetensors"
    mine.write_text("the user's")
    refused = run_cli("extract-features", str(videos[0]), "--checkpoint", str(run), "--out", str(mine),
                      "--overwrite")
    assert refused.returncode == 2 and "not replaced" in refused.stderr and mine.read_text() == "the user's"
    empty = run_cli("extract-features", str(tmp_path / "none_*.mp4"), "--checkpoint", str(run), "--out",
                    str(tmp_path / "x.npy"))
    assert empty.returncode == 2 and "matches no file" in empty.stderr
