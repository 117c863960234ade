"""Synthetic motion videos: classes that only a model which reads time can tell apart.

Classes come in time-reversal pairs (moving right / moving left, growing / shrinking, ...). A clip of
the second class of a pair is a clip of the first class played backwards, and both are drawn from
one distribution of trajectories, so the *set* of frames carries no information about the class
within a pair: any model that averages per-frame features over time is at chance within a pair by
construction. One vivid object (random shape, colour, size, position and path) moves over a static
cluttered background of muted shapes.

Everything is a pure function of a seed, so a data set is reproducible byte for byte (the encoder's
options see to its part: stadapt.data.encode.write_video; tests/test_synthetic_reproducible.py) and the
same renderer makes the single frames that pretrain the quickstart's tiny image model.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stadapt.errors import DataError

# (motion, class played forwards, class played backwards)
MOTIONS: dict[str, tuple[str, str]] = {
    "horizontal": ("moving right", "moving left"),
    "vertical": ("moving down", "moving up"),
    "scale": ("growing", "shrinking"),
    "rotation": ("rotating clockwise", "rotating anticlockwise"),
}
DEFAULT_MOTIONS = ("horizontal", "vertical", "scale")
SHAPES = ("disc", "square", "triangle")
# symmetry order of each shape under rotation (a disc has none to see)
SYMMETRY = {"disc": 0, "square": 4, "triangle": 1}


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic data set looks like; recorded in its manifest."""

    motions: tuple[str, ...] = DEFAULT_MOTIONS
    train_per_class: int = 100
    val_per_class: int = 30
    frames: int = 16
    size: int = 48
    fps: int = 12
    clutter: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.motions if m not in MOTIONS]
        if unknown or not self.motions:
            raise DataError(f"unknown motion(s) {', '.join(unknown) or '(none)'}", f"choose from {', '.join(MOTIONS)}")
        if self.size < 16 or self.size % 2:
            raise DataError(f"video size {self.size} must be even and at least 16", "use e.g. --size 48")
        if self.frames < 2:
            raise DataError(f"{self.frames} frames cannot show motion", "use at least 2 (e.g. --frames 16)")
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise DataError("each class needs at least one training and one validation clip")

    @property
    def classes(self) -> list[str]:
        return [name for motion in self.motions for name in MOTIONS[motion]]


@dataclass(frozen=True)
class ObjectState:
    """Where the object is in one frame, in pixels and radians."""

    x: float
    y: float
    size: float
    angle: float


@dataclass(frozen=True)
class Scene:
    """Everything about a clip that does not move."""

    background: np.ndarray  # (H, W, 3) float32 in [0, 1]
    shape: str
    colour: np.ndarray  # (3,)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def _coverage(shape: str, xs: np.ndarray, ys: np.ndarray, state: ObjectState) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape (soft edge one pixel wide, so sub-pixel motion shows)."""
    c, s = math.cos(state.angle), math.sin(state.angle)
    dx, dy = xs - state.x, ys - state.y
    u, v = c * dx + s * dy, -s * dx + c * dy  # object frame: rotating the object by +angle (clockwise on screen)
    half = state.size / 2
    if shape == "disc":
        dist = np.sqrt(u * u + v * v) - half
    elif shape == "square":
        dist = np.maximum(np.abs(u), np.abs(v)) - half
    elif shape == "triangle":  # isosceles, apex pointing up in its own frame: only 360 degrees map it onto itself
        edges = [(0.0, 1.0, -half), (0.894, -0.447, -half * 0.5), (-0.894, -0.447, -half * 0.5)]
        dist = np.max([a * u + b * v + off for a, b, off in edges], axis=0)
    else:
        raise ValueError(shape)
    return np.clip(0.5 - dist, 0.0, 1.0)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def make_scene(rng: np.random.Generator, size: int, clutter: int, shapes: Sequence[str] = SHAPES) -> Scene:
    """A static background of muted clutter and a vivid object of random shape and colour."""
    xs, ys = _grid(size)
    base = rng.uniform(0.25, 0.6, size=3).astype(np.float32)
    image = np.broadcast_to(base, (size, size, 3)).copy()
    for _ in range(clutter):
        state = ObjectState(
            x=rng.uniform(0, size), y=rng.uniform(0, size),
            size=rng.uniform(0.12, 0.35) * size, angle=rng.uniform(0, 2 * math.pi),
        )
        muted = 0.5 * base + 0.5 * rng.uniform(0.1, 0.9, size=3).astype(np.float32)
        alpha = _coverage(str(rng.choice(SHAPES)), xs, ys, state)[..., None]
        image = image * (1 - alpha) + muted * alpha
    colour = _hsv(rng.uniform(), rng.uniform(0.8, 1.0), rng.uniform(0.85, 1.0))
    return Scene(background=image.astype(np.float32), shape=str(rng.choice(list(shapes))), colour=colour)


def render(scene: Scene, state: ObjectState) -> np.ndarray:
    """One (H, W, 3) uint8 frame."""
    size = scene.background.shape[0]
    xs, ys = _grid(size)
    alpha = _coverage(scene.shape, xs, ys, state)[..., None]
    image = scene.background * (1 - alpha) + scene.colour * alpha
    return (image * 255 + 0.5).astype(np.uint8)


def random_state(rng: np.random.Generator, size: int) -> ObjectState:
    """An object anywhere in the frame (for single-frame pretraining)."""
    obj = rng.uniform(0.2, 0.45) * size
    margin = obj / 2
    return ObjectState(rng.uniform(margin, size - margin), rng.uniform(margin, size - margin), obj,
                       rng.uniform(0, 2 * math.pi))


def trajectory(motion: str, rng: np.random.Generator, size: int) -> tuple[ObjectState, ObjectState]:
    """(start, end) of the forward class of `motion`; the object stays inside the frame throughout."""
    angle = rng.uniform(0, 2 * math.pi)
    if motion == "scale":
        small = rng.uniform(0.15, 0.22) * size
        large = small * rng.uniform(2.0, 2.6)
        x, y = (rng.uniform(large / 2, size - large / 2) for _ in range(2))
        return ObjectState(x, y, small, angle), ObjectState(x, y, large, angle)
    obj = rng.uniform(0.2, 0.3) * size
    if motion == "rotation":
        obj = rng.uniform(0.35, 0.5) * size
        x, y = (rng.uniform(obj / 2, size - obj / 2) for _ in range(2))
        turn = rng.uniform(0.5, 0.8) * math.pi
        return ObjectState(x, y, obj, angle), ObjectState(x, y, obj, angle + turn)
    lo, hi = obj / 2, size - obj / 2
    distance = rng.uniform(0.75, 1.0) * (hi - lo)
    a = rng.uniform(lo, hi - distance)
    across = rng.uniform(lo, hi)
    if motion == "horizontal":
        return ObjectState(a, across, obj, angle), ObjectState(a + distance, across, obj, angle)
    if motion == "vertical":
        return ObjectState(across, a, obj, angle), ObjectState(across, a + distance, obj, angle)
    raise ValueError(motion)


def _lerp(a: ObjectState, b: ObjectState, t: float) -> ObjectState:
    return ObjectState(*(p + (q - p) * t for p, q in zip(asdict(a).values(), asdict(b).values(), strict=True)))


def render_clip(spec: SyntheticSpec, label: int, seed: Sequence[int]) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of class `label` (class 2k+1 = class 2k played backwards)."""
    rng = np.random.default_rng(list(seed))
    motion = spec.motions[label // 2]
    shapes = ("square", "triangle") if motion == "rotation" else SHAPES
    scene = make_scene(rng, spec.size, spec.clutter, shapes)
    start, end = trajectory(motion, rng, spec.size)
    if label % 2:
        start, end = end, start
    steps = np.linspace(0.0, 1.0, spec.frames)
    return np.stack([render(scene, _lerp(start, end, float(t))) for t in steps])


def _video_name(split: str, label: int, number: int) -> str:
    return f"videos/{split}/{label:02d}_{number:04d}.mp4"


VIDEOS_RECORD = "videos.sha256"  # `DIGEST  NAME` of every video written: what a later --overwrite may remove


def planned_files(spec: SyntheticSpec) -> list[str]:
    """Every file `write_synthetic` writes for `spec`, relative to its --out."""
    videos = [_video_name(split, label, number)
              for split, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class))
              for label in range(len(spec.classes)) for number in range(per_class)]
    return ["classes.txt", "train.txt", "val.txt", "manifest.json", VIDEOS_RECORD, *videos]


def write_synthetic(out: str | Path, spec: SyntheticSpec, *, progress: Callable[[int], None] | None = None) -> dict:
    """Write the clips and the prepared layout (classes.txt, train.txt, val.txt, manifest.json) into `out`.

    Returns the manifest. Each clip's seed is (spec.seed, split, label, number), so adding clips or
    classes never changes the clips that were already there.
    """
    from stadapt.data.encode import write_video
    from stadapt.data.prepared import file_sha256, write_prepared
    from stadapt.fileio import atomic_write_text

    out = Path(out)
    splits: dict[str, list[tuple[str, int]]] = {}
    videos: dict[str, str] = {}
    for split_id, (split, per_class) in enumerate((("train", spec.train_per_class), ("val", spec.val_per_class))):
        rows = []
        for label in range(len(spec.classes)):
            for number in range(per_class):
                name = _video_name(split, label, number)
                frames = render_clip(spec, label, (spec.seed, split_id, label, number))
                write_video(out / name, frames, fps=spec.fps)
                videos[name] = file_sha256(out / name)
                rows.append((name, label))
                if progress is not None:
                    progress(1)
        splits[split] = rows
    atomic_write_text(out / VIDEOS_RECORD,
                      "".join(f"{digest}  {name}\n" for name, digest in sorted(videos.items())))
    extra = {
        "synthetic": {**asdict(spec), "motions": list(spec.motions)},
        "videos_sha256": hashlib.sha256((out / VIDEOS_RECORD).read_bytes()).hexdigest(),
    }
    return write_prepared(out, spec.classes, splits, source="synthetic", extra=extra)


def existing_spec(out: str | Path) -> dict[str, Any] | None:
    """The synthetic spec recorded in `out`'s manifest, if `out` holds a finished synthetic data set."""
    manifest = Path(out) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text()).get("synthetic")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def prepare_synthetic(out: str | Path, spec: SyntheticSpec, *, overwrite: bool = False, progress: bool = True) -> dict:
    """`write_synthetic` with the checks a command needs: never write into a non-empty directory
    unless asked, and then replace only what a previous preparation wrote (the videos its
    `videos.sha256` records, unchanged); show a progress bar."""
    from tqdm import tqdm

    from stadapt.data.prepared import claim_out_dir

    out = Path(out)
    claim_out_dir(out, overwrite=overwrite, owned=(VIDEOS_RECORD,), record=VIDEOS_RECORD, planned=planned_files(spec))
    total = len(spec.classes) * (spec.train_per_class + spec.val_per_class)
    with tqdm(total=total, desc="synthetic clips", unit="clip", disable=not progress, dynamic_ncols=True) as bar:
        return write_synthetic(out, spec, progress=bar.update)
