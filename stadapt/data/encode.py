"""Writing small video files with PyAV (synthetic data sets, test fixtures)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

# crf 12: quality far above what a test or a synthetic class needs; mbtree=0: reproducible bytes (write_video)
X264_OPTIONS: Mapping[str, str] = {"crf": "12", "preset": "veryfast", "x264-params": "mbtree=0"}


def write_video(
    path: str | Path,
    frames: np.ndarray,
    *,
    fps: int = 12,
    codec: str = "libx264",
    options: Mapping[str, str] | None = None,
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    timestamps: Sequence[float] | None = None,
    codec_tag: str | None = None,
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames into `path`; the container follows the suffix.

    H.264 in yuv420p needs even sides. The default options keep quality high (crf 12) so that
    compression artefacts stay far below the signal that a test or a synthetic class carries.
    `rotation` stores a display matrix (counterclockwise degrees, as phones do), `timestamps` gives
    each frame's time in seconds (variable frame rate), `codec_tag` sets the FourCC (e.g. "XVID").

    The same frames give the same bytes: the default options turn off x264's macroblock-tree rate
    control, which on the synthetic set's 48x48 frames reads memory it never wrote (valgrind: "conditional jump
    depends on uninitialised value" inside x264_encoder_encode, gone with mbtree=0), so its quantisers,
    and the file, followed whatever the heap held: a data set written twice differed.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    if codec == "libx264" and options is None:
        options = X264_OPTIONS
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        if not isinstance(stream, av.VideoStream):  # PyAV types a codec given by name as any kind of stream
            raise ValueError(f"{codec} is not a video codec")
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = dict(options)
        if codec_tag:
            stream.codec_tag = codec_tag
        if rotation:
            stream.set_display_rotation(rotation)
        if timestamps is not None:
            if len(timestamps) != len(frames):
                raise ValueError(f"{len(timestamps)} timestamps for {len(frames)} frames")
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for n, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if timestamps is not None:
                frame.pts, frame.time_base = round(timestamps[n] * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
