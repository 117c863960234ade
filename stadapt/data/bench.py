"""`stadapt bench-data`: how many clips per second one data-loading worker produces, with the seeking
decoder and with the whole-video decode of the reference implementation, side by side in one run.

Both decoders read the same clips from the same files, interleaved clip by clip so that machine
noise hits both alike, and the frames they return are compared (they must be identical).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stadapt.errors import DataError

# K400 as downloaded: 10 s at 30 fps, 320x240 (the common resized copies), a keyframe every 2.5 s.
K400_LIKE = {"frames": 300, "width": 320, "height": 240, "fps": 30, "gop": 75}


def decode_whole_video(path: str | Path) -> np.ndarray:
    """The reference implementation's way: decode every frame and convert every frame to RGB (the
    caller then indexes the clip's frames out of the result)."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise DataError(f"{path}: no frame decodes")
    return np.stack(frames)


def k400_like_frames(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    """A textured scene under a moving camera with sensor noise: costs an H.264 decoder about what real
    footage costs (flat synthetic colours would decode unrealistically fast)."""
    tile = rng.integers(0, 256, (height // 8 + 40, width // 8 + 40, 3)).astype(np.float32)
    scene = np.kron(tile, np.ones((8, 8, 1), np.float32))
    k = 9  # box blur: smooth blobs instead of blocks
    c = np.pad(scene, ((k, 0), (k, 0), (0, 0))).cumsum(0).cumsum(1)
    scene = (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)
    span_y, span_x = scene.shape[0] - height, scene.shape[1] - width
    phase = rng.uniform(0, 2 * np.pi, 2)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        y = int((span_y - 1) * (0.5 + 0.5 * np.sin(t / 45 + phase[0])))
        x = int((span_x - 1) * (0.5 + 0.5 * np.cos(t / 60 + phase[1])))
        view = scene[y : y + height, x : x + width] + rng.normal(0, 5, (height, width, 3))
        out[t] = np.clip(view, 0, 255)
    return out


def write_k400_like(out: Path, count: int, *, seed: int = 0, progress: bool = True) -> Path:
    """Write `count` K400-like H.264 clips and a prepared layout (one class) into `out`; reused if present."""
    from tqdm import tqdm

    from stadapt.data.encode import write_video
    from stadapt.data.prepared import claim_out_dir, open_prepared, write_prepared

    out = Path(out)
    if (out / "manifest.json").is_file():
        try:
            manifest = open_prepared(out).manifest or {}
        except DataError:
            manifest = {}
        if manifest.get("bench_videos") == {**K400_LIKE, "count": count, "seed": seed}:
            return out
    claim_out_dir(out, overwrite=True, owned=("videos",))
    rows = []
    spec = K400_LIKE
    for n in tqdm(range(count), desc="writing K400-like clips", unit="video", disable=not progress):
        frames = k400_like_frames(np.random.default_rng([seed, n]), spec["frames"], spec["width"], spec["height"])
        name = f"videos/clip_{n:03d}.mp4"
        write_video(out / name, frames, fps=spec["fps"],
                    options={"crf": "23", "preset": "veryfast", "g": str(spec["gop"]),
                             "keyint_min": str(spec["gop"]), "sc_threshold": "0"})
        rows.append((name, 0))
    write_prepared(out, ["clip"], {"train": rows}, source="stadapt bench-data --synthetic",
                   extra={"bench_videos": {**spec, "count": count, "seed": seed}})
    return out


@dataclass
class DecoderResult:
    name: str
    seconds: list[float] = field(default_factory=list)  # per clip

    @property
    def clips_per_s(self) -> float:
        return len(self.seconds) / sum(self.seconds) if self.seconds else 0.0

    @property
    def ms_per_clip(self) -> float:
        return 1000 * float(np.median(self.seconds)) if self.seconds else 0.0


def bench_decoders(
    paths: Sequence[Path],
    sample: Callable[[int, np.random.Generator], list[int]],
    *,
    clips: int,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Time `clips` clips (cycling over `paths`) with both decoders, interleaved; compare their frames."""
    from tqdm import tqdm

    from stadapt.data.pyav_reader import VideoReader

    def seeking(path: Path, rng: np.random.Generator) -> np.ndarray:
        with VideoReader(path) as reader:
            return reader.read(sample(reader.num_frames, rng))

    def whole(path: Path, rng: np.random.Generator) -> np.ndarray:
        frames = decode_whole_video(path)
        return frames[[min(i, len(frames) - 1) for i in sample(len(frames), rng)]]

    results = {"seeking": DecoderResult("seeking"), "whole_video": DecoderResult("whole_video")}
    decoders = {"seeking": seeking, "whole_video": whole}
    mismatches = 0
    seeking(paths[0], np.random.default_rng(0))  # warm-up: imports, codec initialisation
    for n in tqdm(range(clips), desc="decoding clips", unit="clip", disable=not progress):
        path = paths[n % len(paths)]
        out = {}
        order = list(decoders) if n % 2 == 0 else list(decoders)[::-1]  # alternate who goes first
        for name in order:
            rng = np.random.default_rng([seed, n])
            tick = time.perf_counter()
            out[name] = decoders[name](path, rng)
            results[name].seconds.append(time.perf_counter() - tick)
        mismatches += int(not np.array_equal(out["seeking"], out["whole_video"]))
    seek, whole_r = results["seeking"], results["whole_video"]
    return {
        "clips": clips,
        "videos": len(paths),
        "identical_frames": mismatches == 0,
        "mismatched_clips": mismatches,
        "decoders": {name: {"clips_per_s": r.clips_per_s, "median_ms_per_clip": r.ms_per_clip}
                     for name, r in results.items()},
        "speedup": seek.clips_per_s / whole_r.clips_per_s if whole_r.clips_per_s else None,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }


def format_report(report: dict[str, Any]) -> str:
    rows = [("decoder", "clips/s per worker", "median ms/clip")]
    labels = {"seeking": "seeking (stadapt)", "whole_video": "whole video (reference)"}
    for name, r in report["decoders"].items():
        rows.append((labels[name], f"{r['clips_per_s']:.1f}", f"{r['median_ms_per_clip']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.append(f"speed-up: {report['speedup']:.1f}x over {report['clips']} clips from {report['videos']} videos "
                 f"({report['clip']}); frames identical: {'yes' if report['identical_frames'] else 'NO'}")
    return "\n".join(lines)
