"""Decoding with torchcodec (`data.decoder: torchcodec`, the `stadapt[torchcodec]` extra): the same frames
and the same failures as PyAV's reader (stadapt.data.pyav_reader), on the CPU or with NVDEC.

Optional: `pip install 'stadapt[torchcodec]'`, which needs the system FFmpeg libraries; where it cannot
load, `check_decoder` (stadapt.data.decoders) says so in one line before anything else starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stadapt.data.decoders import DECODE_HINT, check_decoder, exception_reason, file_problem
from stadapt.errors import VideoDecodeError


class TorchCodecReader:
    """One video file read by torchcodec: the same `num_frames`, `fps`, `size` and `read(indices)` as
    `VideoReader`, frame i being the i-th in presentation order (torchcodec's exact seek mode scans the
    file once, as VideoReader's frame table does). `device="cuda"` decodes with NVDEC; frames come back
    to the host as uint8 (H, W, 3) arrays either way.
    """

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = Path(path)
        check_decoder("torchcodec", device)
        problem = file_problem(self.path)
        if problem:
            raise self._error(problem)
        from torchcodec.decoders import VideoDecoder

        self._decoder: Any = None
        try:
            self._decoder = VideoDecoder(str(self.path), device=device, seek_mode="exact",
                                         dimension_order="NHWC")
            meta = self._decoder.metadata
            self.num_frames = int(meta.num_frames or 0)
            self.fps = float(meta.average_fps or 0.0)
            self.size = (int(meta.width or 0), int(meta.height or 0))
            declared = int(getattr(meta, "num_frames_from_header", None) or 0)
        except (RuntimeError, ValueError, OSError) as exc:
            raise self._error(f"not a readable video ({exception_reason(exc)})") from None
        if self.num_frames <= 0:
            raise self._error("the video stream has no frames")
        if declared and self.num_frames < declared - 1:  # the same slack as VideoReader's frame table
            raise self._error(f"truncated or damaged: the header declares {declared} frames but only "
                              f"{self.num_frames} are present")

    def _error(self, reason: str) -> VideoDecodeError:
        return VideoDecodeError(f"cannot decode {self.path}: {reason}", DECODE_HINT)

    def __enter__(self) -> TorchCodecReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._decoder = None  # torchcodec frees the file with the decoder object

    def read(self, indices: Sequence[int], *, strict: bool = False) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (len, H, W, 3) uint8 RGB; indices past the
        end give the last frame (with `strict=True`, a `VideoDecodeError`), as `VideoReader.read`. A file
        that holds fewer frames than its header declares is refused when it opens."""
        wanted = [int(i) for i in indices]
        if not wanted:
            width, height = self.size
            return np.empty((0, height, width, 3), dtype=np.uint8)
        if min(wanted) < 0:
            raise ValueError(f"frame indices must be >= 0, got {min(wanted)}")
        last = self.num_frames - 1
        if strict and max(wanted) > last:
            raise self._error(f"frame {max(wanted)} of {self.num_frames} could not be decoded "
                              f"(the file ends early or is damaged)")
        needed = sorted({min(i, last) for i in wanted})
        try:
            frames = self._decoder.get_frames_at(indices=needed).data
        except (RuntimeError, ValueError, IndexError) as exc:
            raise self._error(f"decoding failed ({exception_reason(exc)})") from None
        array = frames.cpu().numpy()
        row = {index: r for r, index in enumerate(needed)}
        return np.ascontiguousarray(array[[row[min(i, last)] for i in wanted]])

    def check(self) -> None:
        """Raise `VideoDecodeError` unless the first and the last frame decode."""
        self.read([0, self.num_frames - 1], strict=True)
