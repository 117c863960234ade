"""Which frame indices a clip uses: pure functions of the frame count (no I/O), easy to test by hand.

Two schemes from the paper's reference setup:
- `StrideSampler` (K400, UCF-101, HMDB-51): `frames` indices `stride` apart, a random start in
  training, evenly spaced starts at test; short videos repeat the last valid frame index.
- `SegmentSampler` (SSv2 "dynamic"): the video is cut into `frames` equal segments, one random frame
  per segment in training, segment centres (or evenly offset points for several views) at test.

Integer arithmetic replaces the float formulas wherever both give the same value mathematically, so
boundaries (`int(3.0)` computed as 2.999...) cannot flip an index.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from stadapt.errors import DataError

SAMPLERS = ("stride", "segment")


@runtime_checkable
class FrameSampler(Protocol):
    """Chooses the frame indices of a clip of `frames` frames from a video of n frames."""

    frames: int

    def train(self, num_video_frames: int, rng: np.random.Generator) -> list[int]: ...

    def test(self, num_video_frames: int, views: int) -> list[list[int]]: ...


def _check_count(n: int, what: str) -> int:
    n = int(n)
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    return n


class StrideSampler:
    """`frames` indices `stride` apart; span = (frames - 1) * stride + 1 frames."""

    def __init__(self, frames: int, stride: int) -> None:
        self.frames = _check_count(frames, "frames")
        self.stride = _check_count(stride, "stride")

    @property
    def span(self) -> int:
        return (self.frames - 1) * self.stride + 1

    def __repr__(self) -> str:
        return f"StrideSampler(frames={self.frames}, stride={self.stride})"

    def _clip(self, start: int, n: int) -> list[int]:
        return [min(start + i * self.stride, n - 1) for i in range(self.frames)]

    def train(self, num_video_frames: int, rng: np.random.Generator) -> list[int]:
        n = _check_count(num_video_frames, "num_video_frames")
        start = int(rng.integers(0, max(0, n - self.span) + 1))
        return self._clip(start, n)

    def test(self, num_video_frames: int, views: int) -> list[list[int]]:
        """Starts int((k + 0.5) * (max_start + 1) / views): one view is the centred clip."""
        n = _check_count(num_video_frames, "num_video_frames")
        views = _check_count(views, "views")
        positions = max(0, n - self.span) + 1
        return [self._clip(((2 * k + 1) * positions) // (2 * views), n) for k in range(views)]


class SegmentSampler:
    """SSv2 "dynamic" sampling: segment k of T covers frames [k*n/T, (k+1)*n/T)."""

    def __init__(self, frames: int) -> None:
        self.frames = _check_count(frames, "frames")

    def __repr__(self) -> str:
        return f"SegmentSampler(frames={self.frames})"

    def train(self, num_video_frames: int, rng: np.random.Generator) -> list[int]:
        n = _check_count(num_video_frames, "num_video_frames")
        t = self.frames
        out = []
        for k in range(t):
            lo = -((-k * n) // t)  # ceil(k*n/T): the first integer in the segment
            hi = -((-(k + 1) * n) // t)  # ceil((k+1)*n/T): one past the last
            out.append(int(rng.integers(lo, hi)) if hi > lo else (k * n) // t)
        return out

    def test(self, num_video_frames: int, views: int) -> list[list[int]]:
        """View v of V takes int(k*n/T + (v + 0.5)/V * n/T) in segment k: 1 view = segment centres."""
        n = _check_count(num_video_frames, "num_video_frames")
        views = _check_count(views, "views")
        t = self.frames
        return [
            [min(((2 * k * views + 2 * v + 1) * n) // (2 * views * t), n - 1) for k in range(t)]
            for v in range(views)
        ]


def make_sampler(kind: str, frames: int, stride: int) -> FrameSampler:
    """A sampler by name, as recipes spell it; `stride` is ignored by "segment"."""
    if kind == "stride":
        return StrideSampler(frames, stride)
    if kind == "segment":
        return SegmentSampler(frames)
    raise DataError(f"unknown frame sampler {kind!r}", f"choose one of: {', '.join(SAMPLERS)}")
