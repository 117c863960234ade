"""Issue 23.14: a 4000x3000 video is decoded at the size the model needs (the decoder scales it down while
converting to RGB), so predict's memory is bounded by the clip the model sees, not by 36 MB frames; videos
of ordinary sizes decode and give their views exactly as without a bound."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, train_synthetic_run
from test_push_hub import RECIPE

from stadapt.data.dataset import VideoClipDataset
from stadapt.data.encode import write_video
from stadapt.data.input_spec import InputSpec
from stadapt.data.prepared import VideoEntry
from stadapt.data.pyav_reader import VideoReader
from stadapt.data.sampling import make_sampler
from stadapt.data.transforms import TestTransform, TrainTransform
from stadapt.data.views import test_dataset


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4000x3000 H.264 video of 10 frames: a block moving right over a flat background (cheap to encode)."""
    frames = np.full((10, 3000, 4000, 3), 96, dtype=np.uint8)
    for t in range(10):
        frames[t, 1000:2000, 400 * t : 400 * t + 1200] = (220, 60, 30)
    return write_video(tmp_path_factory.mktemp("big") / "big.mp4", frames,
                       options={"crf": "23", "preset": "ultrafast"})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_synthetic_run(tmp_path_factory.mktemp("large"), RECIPE)


def test_big_video_predicts_from_frames_bounded_by_the_model(run: Path, big: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """predict of a 4000x3000 video: the frames the reader hands on have a short side of 2 x the model's 32 px
    (they were 3000x4000, 36 MB each: 2.7 GB of peak memory in predict for a ViT-B recipe)."""
    shapes: list[tuple[int, ...]] = []
    read = VideoReader.read

    def spy(self: VideoReader, indices: list[int], **kwargs: bool) -> np.ndarray:
        frames = read(self, indices, **kwargs)
        shapes.append(frames.shape)
        return frames

    monkeypatch.setattr(VideoReader, "read", spy)
    result = run_cli("predict", str(big), "--checkpoint", str(run), "--json", "--views", "2x3")
    assert result.returncode == 0, result.stderr
    top = json.loads(result.stdout.splitlines()[0])["top"]
    assert math.isclose(sum(entry["probability"] for entry in top), 1.0, abs_tol=1e-4)
    assert shapes and all(shape[1:] == (64, 85, 3) for shape in shapes), shapes


@pytest.mark.parametrize("size", [(240, 320), (256, 340), (360, 640)])
def test_ordinary_videos_give_the_views_of_the_unbounded_path(tmp_path: Path, size: tuple[int, int]) -> None:
    """For a 224 crop the bound is 448: 320x240, 340x256 and 640x360 videos decode and give their test
    views bit for bit as a transform without a bound does."""
    height, width = size
    frames = np.random.default_rng(height).integers(0, 256, (12, height, width, 3), dtype=np.uint8)
    path = write_video(tmp_path / "v.mp4", frames)
    spec = InputSpec(frames=4, sampling="stride", stride=2, views=(2, 3), image_size=224,
                     mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28), interpolation="bicubic")
    bounded = test_dataset([VideoEntry(path, 0)], spec)

    class Unbounded(TestTransform):
        decode_short_side = None  # type: ignore[assignment]  # what every transform was before the bound

    unbounded = VideoClipDataset([VideoEntry(path, 0)], make_sampler("stride", 4, 2),
                                 Unbounded(224, spec.mean, spec.std, spatial_views=3), train=False,
                                 temporal_views=2, on_device=True)
    assert bounded.transform.decode_short_side == 448
    ours, theirs = bounded[0], unbounded[0]
    assert torch.equal(ours["video"], theirs["video"]) and torch.equal(ours["params"], theirs["params"])
    with VideoReader(path, max_short_side=448) as reader:
        assert reader.size == (width, height)


def test_bounds_keep_twice_the_resolution_each_crop_resizes_from() -> None:
    """jitter resizes the short side to at most 224 x 1.15; resized's smallest box (8 % of a square frame,
    aspect 4/3) must still be >= 2 x 224 px on its shorter side at the bound (1829)."""
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    assert TrainTransform(224, mean, std, scale=(1.0, 1.15)).decode_short_side == 516
    bound = TrainTransform(224, mean, std, crop="resized", area=(0.08, 1.0)).decode_short_side
    assert bound == 1829
    box = math.sqrt(0.08 * bound * bound)
    assert min(box * math.sqrt(3 / 4), box / math.sqrt(4 / 3)) >= 448


def test_the_reader_scales_while_converting(big: Path) -> None:
    """The reader's size is the scaled one, aspect kept; what it returns is the frame, scaled (its mean
    colour stays where the full frame's is)."""
    with VideoReader(big, max_short_side=300) as small, VideoReader(big) as full:
        assert small.size == (400, 300) and full.size == (4000, 3000)
        scaled, whole = small.read([3]), full.read([3])
    assert scaled.shape == (1, 300, 400, 3)
    assert np.abs(scaled.astype(float).mean((1, 2)) - whole.astype(float).mean((1, 2))).max() < 2.0
