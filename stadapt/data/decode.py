"""Decoding a video file by the decoder a recipe names: `open_video` gives the reader.

`data.decoder: pyav` (the default) is the seeking PyAV reader (stadapt.data.pyav_reader), which can bound
the size of the frames it returns; `torchcodec` is torchcodec's (stadapt.data.torchcodec_reader), on the
CPU or, with `data.decode_device: cuda`, NVDEC. Both give the same frames for the same indices and fail
the same way (`VideoDecodeError`); which decoders can run here is stadapt.data.decoders' to say.
"""

from __future__ import annotations

from pathlib import Path

from stadapt.data.decoders import check_decoder
from stadapt.data.pyav_reader import VideoReader
from stadapt.data.torchcodec_reader import TorchCodecReader


def open_video(path: str | Path, decoder: str = "pyav", device: str = "cpu", *,
               max_short_side: int | None = None) -> VideoReader | TorchCodecReader:
    """A reader of `path` by the decoder a recipe names (`data.decoder`, `data.decode_device`).

    `max_short_side` (what the transform needs, `stadapt.data.transforms.decode_short_side`) bounds the
    frames PyAV returns; torchcodec returns frames at their coded size (the transform resizes them all
    the same, at the cost of the memory of full-size frames)."""
    if decoder == "pyav" and device == "cpu":
        return VideoReader(path, max_short_side=max_short_side)
    check_decoder(decoder, device)
    return TorchCodecReader(path, device=device)
