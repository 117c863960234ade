"""`data.decoder: torchcodec`: the same frames as PyAV for the same clip where torchcodec loads (it needs
the system FFmpeg libraries: `pip install 'stadapt[torchcodec]'`), and one clear line where it does not."""

from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from stadapt.data.decode import open_video
from stadapt.data.decoders import check_decoder, torchcodec_problem
from stadapt.data.encode import write_video
from stadapt.data.pyav_reader import VideoReader
from stadapt.data.torchcodec_reader import TorchCodecReader
from stadapt.errors import DecoderUnavailableError, StadaptError

PROBLEM = torchcodec_problem()
needs_torchcodec = pytest.mark.skipif(PROBLEM is not None, reason=f"torchcodec cannot load here: {PROBLEM}")
without_torchcodec = pytest.mark.skipif(PROBLEM is None, reason="torchcodec loads here")


def _frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames that differ everywhere, so a frame off by one cannot compare equal."""
    rng = np.random.default_rng(0)
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        frames[t] = rng.integers(0, 255, (1, 1, 3))
        frames[t, :, (t * 3) % width] = 255
        frames[t, (t * 2) % height, :] = 0
    return frames


CASES = {
    "h264_bframes.mp4": {"options": {"g": "7", "bf": "3", "crf": "18"}},
    "vp9.webm": {"codec": "libvpx-vp9", "options": {"g": "9"}},
    "h264.mkv": {"options": {"g": "5"}},
}


@needs_torchcodec
@pytest.mark.parametrize("name", list(CASES))
def test_torchcodec_returns_the_frames_pyav_returns(tmp_path, name):
    path = write_video(tmp_path / name, _frames(40), **CASES[name])
    clips = [[0, 16, 32], [3, 5, 7, 9, 11, 13, 15, 17], [39, 39, 50, 2], list(range(40))]  # past the end: last
    with VideoReader(path) as pyav, TorchCodecReader(path) as codec:
        assert codec.num_frames == pyav.num_frames == 40 and codec.size == pyav.size
        for indices in clips:
            want, got = pyav.read(indices), codec.read(indices)
            assert got.dtype == np.uint8 and got.shape == want.shape
            assert np.array_equal(got, want), f"{indices}: max difference {np.abs(got.astype(int) - want).max()}"


@needs_torchcodec
def test_torchcodec_reader_refuses_broken_files_as_decode_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(StadaptError, match="empty file"):
        open_video(empty, "torchcodec")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(StadaptError, match="cannot decode"):
        open_video(garbage, "torchcodec")


@without_torchcodec
def test_choosing_torchcodec_where_it_cannot_load_is_one_clear_line(tmp_path):
    with pytest.raises(DecoderUnavailableError, match=r"torchcodec cannot be loaded .*stadapt\[torchcodec\]"):
        check_decoder("torchcodec")
    data = tmp_path / "data"
    made = run_cli("prepare-data", "synthetic", "--out", str(data), "--motions", "horizontal", "--train-per-class",
                   "1", "--val-per-class", "1", "--frames", "8", "--size", "32", "-q")
    assert made.returncode == 0, made.stderr
    run = tmp_path / "run"
    result = run_cli("train", "recipes/synthetic_tiny.yaml", f"data.root={data}", "data.decoder=torchcodec",
                     "optim.steps=2", "optim.warmup_steps=0", "optim.batch_size=2", f"output.dir={run}", "-q",
                     cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "torchcodec cannot be loaded" in lines[0] and "pip install 'stadapt[torchcodec]'" in lines[0]
    assert "system FFmpeg libraries" in lines[0] and "data.decoder: pyav" in lines[0]
    assert not run.exists(), "the refusal came after the run directory was made"


def test_decode_device_rules_are_recipe_errors(tmp_path):
    result = run_cli("train", "recipes/synthetic_tiny.yaml", f"data.root={tmp_path}", "data.decode_device=cuda",
                     cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data.decode_device" in result.stderr and "decoder: torchcodec" in result.stderr
    assert "num_workers: 0" in result.stderr
    with pytest.raises(DecoderUnavailableError, match="PyAV decodes on the CPU only"):
        check_decoder("pyav", "cuda")


def test_pyav_stays_the_default(tmp_path):
    path = write_video(tmp_path / "a.mp4", _frames(10))
    with open_video(path) as reader, VideoReader(path) as pyav:
        assert isinstance(reader, VideoReader)
        assert np.array_equal(reader.read([1, 4]), pyav.read([1, 4]))
