"""A truncated video whose index sits at the front (issue 23.4) is a bad video everywhere, with a reason;
a genuinely short video still works.

An mp4 written with `movflags=faststart` keeps its index (moov) before the frames, so a download cut short
still opens and still declares every frame: only the frames are missing. Before, reads padded the clip with
the last decodable frame and every command reported the video as fine. Now eval skips and counts it,
predict and extract-features list it as bad, and training replaces it and logs why. A 5-frame video under
an 8-frame clip is short, not damaged: the sampler repeats its last frame index, and nothing is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import run_cli

from stadapt.data.encode import write_video
from stadapt.data.synthetic import SyntheticSpec, write_synthetic

RECIPE = """\
backbone: {{name: clip:tiny, weights: synthetic}}
adapter: {{bottleneck: 16}}
data: {{root: {root}, frames: 8, stride: 1, views: 1x1, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 6, steps: 2, warmup_steps: 0}}
train: {{device: cpu, val_every: 0, loggers: [], log_every: 1}}
"""


def write_cut_faststart(path: Path, frames: int = 100) -> Path:
    """An H.264 mp4 with its index at the front, of which only the first quarter of the bytes is kept."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for image in rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 4])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path, Path]:
    """(the run, its training output, the cut video, a 5-frame video): both listed in train and val."""
    base = tmp_path_factory.mktemp("truncated")
    root = base / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=2, frames=10,
                                        size=32, clutter=4))
    cut = write_cut_faststart(root / "videos" / "cut.mp4")
    short = write_video(root / "videos" / "short.mp4", np.random.default_rng(1).integers(0, 255, (5, 32, 32, 3),
                                                                                          dtype=np.uint8))
    for split in ("train", "val"):
        with (root / f"{split}.txt").open("a") as f:
            f.write("videos/cut.mp4 0\nvideos/short.mp4 1\n")
    recipe = base / "tiny.yaml"
    recipe.write_text(RECIPE.format(root=json.dumps(str(root))))
    done = run_cli("train", str(recipe), f"output.dir={base / 'run'}", "-q")
    assert done.returncode == 0, done.stderr
    return base / "run", done.stdout + done.stderr, cut, short


def _log_events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_replaces_the_cut_video_and_logs_why(trained: tuple[Path, str, Path, Path]) -> None:
    run, printed, cut, short = trained
    for text in (printed, (run / "train.log").read_text()):
        (warning,) = [line for line in text.splitlines() if str(cut) in line]
        assert warning.startswith("warning: cannot decode") and "the header declares 100 frames" in warning
        assert warning.endswith("(replaced by another video)")
    events = [e for e in _log_events(run) if e.get("event") == "bad_video_replaced"]
    assert {e["path"] for e in events} == {str(cut)}  # the short video trained; only the cut one was replaced


def test_eval_skips_and_counts_the_cut_video(trained: tuple[Path, str, Path, Path], tmp_path: Path) -> None:
    run, _, cut, short = trained
    done = run_cli("eval", str(run), "--out", str(tmp_path / "eval.json"), "-q")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["videos"] == 5 and report["skipped"] == 1  # 4 synthetic + the short one evaluated
    (skipped,) = report["skipped_videos"]
    assert skipped["path"] == str(cut) and "the header declares 100 frames" in skipped["error"]


def test_predict_and_extract_features_list_the_cut_video_as_bad(trained: tuple[Path, str, Path, Path],
                                                               tmp_path: Path) -> None:
    run, _, cut, short = trained
    done = run_cli("predict", str(cut), str(short), "--checkpoint", str(run), "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = {line["video"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert "truncated or damaged" in lines[str(cut)]["error"] and "top" in lines[str(short)]
    out = tmp_path / "features.npy"
    done = run_cli("extract-features", str(cut), str(short), "--checkpoint", str(run), "--out", str(out), "-q")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["videos"] == [str(short)]
    assert [b["video"] for b in meta["bad_videos"]] == [str(cut)] and "truncated" in meta["bad_videos"][0]["error"]
