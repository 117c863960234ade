"""The video decoders a recipe can name, whether one can run here, and what their readers share.

`data.decoder` is `pyav` (stadapt.data.pyav_reader, always installed) or `torchcodec`
(stadapt.data.torchcodec_reader, the `stadapt[torchcodec]` extra, which needs the system FFmpeg
libraries); `data.decode_device: cuda` decodes with NVDEC (torchcodec only). `check_decoder` refuses,
in one line and before any DataLoader worker starts, a choice that cannot run here. Both readers check
a file the same way before decoding it, and name the same fix when a video is broken. Nothing here
imports PyAV or torchcodec.
"""

from __future__ import annotations

from pathlib import Path

DECODERS = ("pyav", "torchcodec")
DECODE_DEVICES = ("cpu", "cuda")
DECODE_HINT = "re-download or re-encode the video, or prepare the data again so it goes to quarantine.txt"
_TORCHCODEC_FIX = ("pip install 'stadapt[torchcodec]' (it needs the system FFmpeg libraries, e.g. "
                   "apt-get install ffmpeg), or set data.decoder: pyav")


def exception_reason(exc: BaseException) -> str:
    """PyAV repeats the path in str(exc); its strerror alone reads better inside our message."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be a video before any decoder looks at it, or None."""
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a regular file"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode here (not installed, or its FFmpeg libraries do not load), or None."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except (ImportError, OSError, RuntimeError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def check_decoder(decoder: str, device: str = "cpu") -> None:
    """Refuse, in one line, a decoder or decode device that cannot run here (before any worker starts)."""
    from stadapt.errors import DecoderUnavailableError

    if decoder not in DECODERS:
        raise DecoderUnavailableError(f"unknown video decoder {decoder!r}", f"choose one of {', '.join(DECODERS)}")
    if device not in DECODE_DEVICES:
        raise DecoderUnavailableError(f"unknown decode device {device!r}", "choose cpu or cuda")
    if decoder == "pyav":
        if device != "cpu":
            raise DecoderUnavailableError("PyAV decodes on the CPU only",
                                          "set data.decoder: torchcodec for data.decode_device: cuda (NVDEC)")
        return
    problem = torchcodec_problem()
    if problem is not None:
        raise DecoderUnavailableError(f"data.decoder: torchcodec cannot be loaded ({problem})", _TORCHCODEC_FIX)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DecoderUnavailableError("data.decode_device: cuda, but no CUDA GPU is available here",
                                          "set data.decode_device: cpu")
