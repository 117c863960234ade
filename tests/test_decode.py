"""The seeking decoder against a full decode, on tiny real videos in every container and codec that
the data sets ship: mp4/H.264 (with B-frames), webm/VP9, avi/MPEG-4 and XVID, mkv, variable frame
rate, rotated phone videos, odd sizes, very short videos, and truncated downloads."""

import numpy as np
import pytest

from stadapt.data.encode import write_video
from stadapt.data.pyav_reader import VideoReader
from stadapt.errors import VideoDecodeError


def distinct_frames(n: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Frames that differ from each other everywhere, so a frame off by one cannot compare equal."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        frames[t] = rng.integers(0, 255, (1, 1, 3))
        frames[t, :, (t * 3) % width] = 255
        frames[t, (t * 2) % height, :] = 0
    return frames


VFR_TIMES = list(np.cumsum(np.random.default_rng(1).uniform(0.02, 0.2, 40)))

CASES = {
    # name: (file, frames, write_video keyword arguments, whether timestamps allow seeking)
    "h264_bframes": ("a.mp4", distinct_frames(60), {"options": {"g": "7", "bf": "3", "crf": "18"}}, True),
    "vp9": ("b.webm", distinct_frames(40), {"codec": "libvpx-vp9", "options": {"g": "9"}}, True),
    "mpeg4_avi": ("c.avi", distinct_frames(40), {"codec": "mpeg4", "options": {"g": "8"}}, True),
    # packed B-frames in AVI: decoded timestamps do not match the demuxed ones; the reader must
    # notice and decode from the start
    "xvid_bframes": ("d.avi", distinct_frames(40), {"codec": "mpeg4", "codec_tag": "XVID",
                                                    "options": {"g": "8", "bf": "2"}}, False),
    "h264_mkv": ("e.mkv", distinct_frames(40), {"options": {"g": "5"}}, True),
    "vfr": ("f.mp4", distinct_frames(40), {"timestamps": VFR_TIMES, "options": {"g": "6", "bf": "2"}}, True),
    "odd_vp9": ("g.webm", distinct_frames(20, 37, 51), {"codec": "libvpx-vp9", "options": {"g": "6"}}, True),
    "odd_mpeg4": ("h.avi", distinct_frames(20, 37, 51), {"codec": "mpeg4"}, True),
    "short": ("i.mp4", distinct_frames(3), {}, True),
}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("codecs")
    return {name: write_video(root / file, frames, **kwargs) for name, (file, frames, kwargs, _) in CASES.items()}


def full_decode(path) -> np.ndarray:
    with VideoReader(path, seek=False) as reader:
        assert not reader.seeking
        return reader.read(range(reader.num_frames))


@pytest.mark.parametrize("name", list(CASES))
def test_seeking_returns_exactly_the_frames_of_a_full_decode(library, name):
    path = library[name]
    frames = CASES[name][1]
    full = full_decode(path)
    assert len(full) == len(frames) and full.shape[1:3] == frames.shape[1:3]
    rng = np.random.default_rng(7)
    n = len(full)
    index_sets = [[0], [n - 1], list(range(n)), list(range(n))[::-1], [n + 4, 0, n - 1, n + 1],
                  *[list(rng.integers(0, n + 3, rng.integers(1, 12))) for _ in range(15)]]
    with VideoReader(path) as reader:
        assert reader.num_frames == n
        for indices in index_sets:  # one reader, many reads: each read positions itself
            got = reader.read(indices)
            assert np.array_equal(got, full[[min(i, n - 1) for i in indices]]), indices
        assert reader.seeking == CASES[name][3]
    # the decoded frames are the written ones, in order (lossy, so compare loosely)
    assert np.abs(full.astype(int) - frames.astype(int)).mean() < 12


class CountingReader(VideoReader):
    """Records the keyframes decode passes start at and how many frames are converted to RGB."""

    def __init__(self, *args, **kwargs):
        self.starts: list[int] = []
        self.converted = 0
        super().__init__(*args, **kwargs)

    def _seek(self, key, wanted_pts):
        self.starts.append(key)
        return super()._seek(key, wanted_pts)

    def _to_rgb(self, frame):
        self.converted += 1
        return super()._to_rgb(frame)


def test_reads_start_at_the_keyframe_before_the_first_needed_frame_and_convert_only_needed(library):
    with CountingReader(library["h264_bframes"]) as reader:
        keyframes = reader.table.keyframes
        assert len(keyframes) > 4 and keyframes[0] == 0
        late = keyframes[3] + 1
        reader.read([late, late + 2, late])
        assert reader.starts == [keyframes[3]] and reader.converted == 2
        # two frames far apart: a second seek instead of decoding through the keyframes in between
        reader.starts.clear()
        reader.read([1, keyframes[-1]])
        assert reader.starts == [0, keyframes[-1]]


def test_rotation_metadata_makes_frames_upright(tmp_path):
    frames = distinct_frames(12)
    frames[:, :12, :12] = 255  # a white top-left corner
    for degrees, k in ((90, 1), (-90, 3), (180, 2)):
        path = write_video(tmp_path / f"rot{degrees}.mp4", frames, rotation=degrees)
        with VideoReader(path) as reader:
            assert reader.rotation == (degrees % 360)
            got = reader.read([0, 5])
        expected = np.rot90(frames[[0, 5]], k=k, axes=(1, 2))
        assert got.shape == expected.shape
        assert reader.size == (expected.shape[2], expected.shape[1])
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 12


def test_variable_frame_rate_uses_the_container_timestamps(library):
    with VideoReader(library["vfr"]) as reader:
        assert reader.num_frames == 40
        steps = np.diff(reader.table.pts)
        assert steps.min() * 3 < steps.max()  # really variable: gaps differ by more than 3x


def test_short_videos_repeat_their_last_frame(library):
    full = full_decode(library["short"])
    with VideoReader(library["short"]) as reader:
        got = reader.read([0, 2, 4, 6, 8])
    assert np.array_equal(got, full[[0, 2, 2, 2, 2]])


def test_check_finds_truncated_downloads(library, tmp_path):
    for name in ("vp9", "mpeg4_avi"):
        path = library[name]
        with VideoReader(path) as reader:
            reader.check()  # intact files pass
        cut = tmp_path / f"cut_{path.name}"
        data = path.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with VideoReader(cut) as reader:
            assert 0 < reader.num_frames < 40
            with pytest.raises(VideoDecodeError, match="truncated or damaged: the header declares"):
                reader.check()
            with pytest.raises(VideoDecodeError, match="truncated or damaged: the header declares"):
                reader.read([0])  # no clip of it either, not even of the frames that are there (issue 23.4)
    cut = tmp_path / "cut.mp4"  # an mp4 cut short loses its index: it does not even open
    cut.write_bytes(library["h264_bframes"].read_bytes()[:3000])
    with pytest.raises(VideoDecodeError, match="not a readable video container"):
        VideoReader(cut)


def test_content_decides_not_the_extension(library, tmp_path):
    renamed = tmp_path / "really_webm.mp4"
    renamed.write_bytes(library["vp9"].read_bytes())
    with VideoReader(renamed) as reader:
        reader.check()
        assert np.array_equal(reader.read([3]), full_decode(library["vp9"])[[3]])
