"""`stadapt extract-features`: one pooled feature vector per video (optionally per-frame features) of a
checkpoint's model, to safetensors or .npy with the video paths in input order.

A row is `VideoClassifier.forward_features` (after the adapted blocks, the mean over time and the final
norm) of the video's test views, averaged over the views; per-frame features are
`VideoClassifier.frame_features`, (views, frames, width) per video, pooled by `VideoClassifier.pool`. Videos go
through the one multi-view loop (stadapt.inference.loop): decoded by DataLoader workers, run in batches in the
run's precision. A video that does not decode gets no row: it is listed (stderr, and `bad_videos` in the
output's metadata), never replaced.

    FILE.safetensors   tensors `features` (N, D) float32 [and `frame_features` (N, V, T, D)]; metadata
                       (strings): format, videos (JSON list, one per row), bad_videos, checkpoint, step,
                       input (the InputSpec), precision
    FILE.npy           the features; FILE.frames.npy the per-frame features; FILE.json the same metadata
                       and `files`, the sha256 of each .npy (what lets --overwrite know stadapt wrote them)
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stadapt.errors import StadaptError

FORMAT = "stadapt-features"
SUFFIXES = (".safetensors", ".npy")


@dataclass
class Features:
    """The features of the readable videos (rows in input order) and the videos that could not be read."""

    videos: list[str]
    pooled: torch.Tensor  # (N, D) float32
    frames: torch.Tensor | None  # (N, V, T, D) float32, when asked for
    bad_videos: list[dict[str, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def extract_features(videos: list[Path], checkpoint: Path | None, *, which: str | None = None,
                     per_frame: bool = False, views: str | None = None, device: str = "auto",
                     backbone_weights: str | None = None, precision: str = "auto", batch_size: int = 4,
                     workers: int | None = None, progress: bool = False) -> Features:
    """The Features of `videos` under a checkpoint (a run: `which` checkpoint, None = best when present)."""
    from stadapt.inference.loading import load_for_inference
    from stadapt.inference.loop import default_workers, run_views, videos_dataset, view_batches
    from stadapt.runs.lookup import resolve_target
    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.precision import resolve_precision
    from stadapt.runtime.views import parse_views

    target, _ = resolve_target(checkpoint, which)
    loaded = load_for_inference(target, backbone_weights=backbone_weights, device=resolve_device(device),
                                precision=precision)
    spec = loaded.input_spec.with_views(parse_views(views) if views else None)
    run_precision = resolve_precision(loaded.loaded_from.precision, loaded.device)
    rows: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    bad: dict[int, str] = {}
    for batch in view_batches(videos_dataset(videos, spec), batch_size=batch_size,
                              num_workers=default_workers(len(videos)) if workers is None else workers,
                              device=loaded.device, progress=progress, desc="features"):
        bad.update({failed["index"]: failed["error"] for failed in batch.skipped})
        if batch.views is None:
            continue
        with torch.no_grad():
            frames = run_views(loaded.frame_features, batch.views, precision=run_precision)  # (B, V, T, D)
            with run_precision.autocast(loaded.device):  # the pooling in the same precision as the blocks
                pooled = loaded.pool(frames.flatten(0, 1)).float().reshape(*frames.shape[:2], -1).mean(dim=1)
            per_video = frames.float() if per_frame else None
        for row, index in enumerate(batch.indices.tolist()):
            rows[index] = (pooled[row].cpu(), per_video[row].cpu() if per_video is not None else None)
    order = sorted(rows)
    width = loaded.backbone.feature_width  # what forward_features gives (a text head has no `fc`)
    meta = {"format": FORMAT, "checkpoint": str(loaded.loaded_from.path.resolve()), "step": loaded.meta.get("step"),
            "input": spec.to_dict(), "precision": loaded.loaded_from.precision,
            "pooling": "mean over views of forward_features"}
    return Features(
        videos=[str(videos[i]) for i in order],
        pooled=torch.stack([rows[i][0] for i in order]) if order else torch.zeros(0, width),
        frames=torch.stack([rows[i][1] for i in order]) if per_frame and order else None,  # type: ignore[misc]
        bad_videos=[{"video": str(videos[i]), "error": bad[i]} for i in sorted(bad)],
        meta=meta,
    )


def output_paths(out: Path, *, per_frame: bool) -> list[Path]:
    """Every file written for --out: the file itself, and for .npy its JSON (and the per-frame .npy)."""
    if out.suffix.lower() != ".npy":
        return [out]
    return [out, out.with_suffix(".json")] + ([out.with_suffix(".frames.npy")] if per_frame else [])


def check_out(out: Path, *, overwrite: bool, per_frame: bool = False) -> None:
    """Refuse an --out that cannot be written, before any work: unknown suffix, missing folder, or a file at
    any of its paths that stadapt did not write, or that it did without `overwrite`."""
    from stadapt.fileio import claim_outputs

    if out.suffix.lower() not in SUFFIXES:
        raise StadaptError(f"--out {out}: unknown format {out.suffix or '(no extension)'}",
                           f"name the file with one of: {', '.join(SUFFIXES)}")
    claim_outputs(output_paths(out, per_frame=per_frame), overwrite=overwrite, ours=written_by_stadapt)
    if not out.parent.is_dir():
        raise StadaptError(f"the folder {out.parent} does not exist", "create it, or pass --out elsewhere")


def written_by_stadapt(path: Path) -> bool:
    """Whether `path` is a features file stadapt wrote: the format in its safetensors metadata or JSON; an .npy
    counts when the JSON it belongs to is stadapt's and records its digest (or, written before digests were
    recorded, when it is an .npy file at all)."""
    from stadapt.fileio import json_by_stadapt

    name = path.name.lower()
    if name.endswith(".npy"):
        owners = [path.with_suffix(".json")]  # FILE.npy's; FILE.frames.npy's is FILE.json
        if name.endswith(".frames.npy"):
            owners.append(path.with_name(path.name[: -len(".frames.npy")] + ".json"))
        return any(_npy_recorded(path, json_by_stadapt(owner, "format")) for owner in owners)
    if name.endswith(".json"):
        meta = json_by_stadapt(path, "format")
        return meta is not None and meta["format"] == FORMAT
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except Exception:  # unreadable or not safetensors: the user's file
        return False


def _npy_recorded(path: Path, meta: dict | None) -> bool:
    if meta is None or meta["format"] != FORMAT:
        return False
    digests = meta.get("files")
    if isinstance(digests, dict):
        return digests.get(path.name) == _sha256(path)
    return _starts_with(path, b"\x93NUMPY")


def _sha256(path: Path) -> str | None:
    from stadapt.data.prepared import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def write_features(features: Features, out: Path) -> list[Path]:
    """Write the features (see the module docstring), each file atomically; returns the files written."""
    from safetensors.torch import save

    from stadapt.fileio import atomic_write_bytes, atomic_write_text

    meta = {**features.meta, "videos": features.videos, "bad_videos": features.bad_videos}
    if out.suffix.lower() == ".safetensors":
        tensors = {"features": features.pooled.contiguous()}
        if features.frames is not None:
            tensors["frame_features"] = features.frames.contiguous()
        text = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in meta.items()}
        atomic_write_bytes(out, save(tensors, metadata=text))
        return [out]
    arrays = {out: _npy(features.pooled)}
    if features.frames is not None:
        arrays[out.with_suffix(".frames.npy")] = _npy(features.frames)
    meta["files"] = {path.name: hashlib.sha256(data).hexdigest() for path, data in arrays.items()}
    for path, data in arrays.items():
        atomic_write_bytes(path, data)
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return [out, out.with_suffix(".json"), *list(arrays)[1:]]


def _npy(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, tensor.numpy(), allow_pickle=False)
    return buffer.getvalue()
