"""`stadapt predict`: top-k classes of videos (files, folders, patterns, lists), from a checkpoint or an
exported ONNX model, printed or written as CSV / JSONL with class names.

Videos go through the one multi-view loop (stadapt.inference.loop) as in evaluation: decoded by DataLoader
workers in batches with the model's InputSpec (frame sampling, test views, crop and normalisation as the
checkpoint, or the graph's metadata, records them), views fused as the mean of per-view softmax
probabilities (of each label's sigmoid for a SigLIP text head: `loop.fusion_for`). A video that cannot be
decoded gets an error entry instead of a prediction; the others are still predicted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stadapt.errors import StadaptError
from stadapt.inference.loop import Predictions


def _topk(probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    order = np.argsort(-probs)[: min(k, len(probs))]
    return [{"class": classes[i], "index": int(i), "probability": round(float(probs[i]), 6)} for i in order]


def predict_videos(
    videos: list[Path],
    *,
    checkpoint: Path | None = None,
    onnx: Path | None = None,
    top_k: int = 5,
    views: str | None = None,
    device: str = "auto",
    backbone_weights: str | None = None,
    precision: str = "auto",
    which: str | None = None,
    batch_size: int = 4,
    workers: int | None = None,
    max_clips: int | None = None,
    progress: bool = False,
    labels: str | None = None,
) -> list[dict[str, Any]]:
    """One dict per video, in input order: `{"video", "top": [{"class", "index", "probability"}, ...],
    "precision"}` or `{"video", "error"}`. Clips are made as evaluation makes them, from the model's InputSpec;
    a checkpoint's videos go through DataLoader workers in batches and run in `precision` ("auto": the run's
    on this device, float32 on the CPU); of a run, `which` checkpoint (None: best when present). `labels` ('a,b'
    or a file): answer over them instead of the trained classes (a run with a frozen text head)."""
    from stadapt.runtime.views import parse_views

    if onnx is not None and checkpoint is not None:
        raise StadaptError("give --checkpoint or --onnx, not both", "an exported model carries its own classes")
    if onnx is not None and labels is not None:
        raise StadaptError("--labels needs a checkpoint with a frozen text head, not an ONNX model",
                           "pass --checkpoint RUN instead of --onnx")
    view_override = parse_views(views) if views else None
    if onnx is None:
        return _predict_checkpoint(videos, checkpoint, top_k=top_k, views=view_override, device=device,
                                   backbone_weights=backbone_weights, precision=precision, which=which,
                                   batch_size=batch_size, workers=workers, max_clips=max_clips, progress=progress,
                                   labels=labels)
    if precision not in ("auto", "fp32"):
        raise StadaptError(f"--precision {precision} applies to checkpoints; an ONNX model runs as exported",
                           "leave --precision out with --onnx")
    return _predict_onnx(videos, Path(onnx), top_k=top_k, views=view_override, batch_size=batch_size,
                         workers=workers, max_clips=max_clips, progress=progress)


def _predict_checkpoint(videos: list[Path], target: Path | None, *, top_k: int, views: tuple[int, int] | None,
                        device: str, backbone_weights: str | None, precision: str, which: str | None,
                        batch_size: int, workers: int | None, max_clips: int | None,
                        progress: bool, labels: str | None = None) -> list[dict[str, Any]]:
    """predict_videos of a checkpoint, in the precision it was loaded in."""
    from stadapt.inference.loading import load_for_inference
    from stadapt.inference.loop import default_workers, infer_dataset, videos_dataset
    from stadapt.inference.relabel import relabel
    from stadapt.runs.lookup import resolve_target
    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.precision import resolve_precision

    checkpoint, _ = resolve_target(target, which)
    loaded = load_for_inference(checkpoint, backbone_weights=backbone_weights, device=resolve_device(device),
                                precision=precision)
    if labels is not None:
        relabel(loaded, labels)
    pred = infer_dataset(loaded, videos_dataset(videos, loaded.input_spec.with_views(views)), batch_size=batch_size,
                         num_workers=default_workers(len(videos)) if workers is None else workers,
                         device=loaded.device, precision=resolve_precision(loaded.loaded_from.precision, loaded.device),
                         progress=progress, desc="predict", max_clips=max_clips)
    return video_results(videos, pred, loaded.classes, top_k, loaded.loaded_from.precision)


def _predict_onnx(videos: list[Path], path: Path, *, top_k: int, views: tuple[int, int] | None, batch_size: int,
                  workers: int | None, max_clips: int | None, progress: bool) -> list[dict[str, Any]]:
    """predict_videos of an exported model, run by onnxruntime on the CPU."""
    from stadapt.inference.loop import default_workers, infer_dataset, videos_dataset

    run, spec, classes = _onnx_runner(path)
    pred = infer_dataset(run, videos_dataset(videos, spec.with_views(views)), batch_size=batch_size,
                         num_workers=default_workers(len(videos)) if workers is None else workers,
                         device=torch.device("cpu"), progress=progress, desc="predict", max_clips=max_clips)
    return video_results(videos, pred, classes, top_k, "fp32")


def video_results(videos: list[Path], pred: Predictions, classes: list[str], top_k: int,
             precision: str) -> list[dict[str, Any]]:
    """One result per video, in input order: its top-k classes, or the error of a video that did not decode."""
    results: list[dict[str, Any]] = [{} for _ in videos]
    for failed in pred.skipped:
        results[failed["index"]] = {"video": str(videos[failed["index"]]), "error": failed["error"]}
    for index, video_probs in zip(pred.indices.tolist(), pred.probs.numpy(), strict=True):
        results[index] = {"video": str(videos[index]), "top": _topk(video_probs, classes, top_k),
                          "precision": precision}
    return results


OUT_FORMATS = (".csv", ".jsonl")


def predictions_text(results: list[dict[str, Any]], suffix: str) -> str:
    """The predictions as JSONL (one `predict --json` object a line) or CSV (one row per video: rank-1
    class and probability, the top-k as `class:probability|...`, or the error)."""
    import csv
    import io

    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "video", "status", "class", "probability", "top", "error"])
    for index, row in enumerate(results):
        if "error" in row:
            writer.writerow([index, row["video"], "error", "", "", "", row["error"]])
            continue
        top = row["top"]
        writer.writerow([index, row["video"], "ok", top[0]["class"], f"{top[0]['probability']:.6f}",
                         "|".join(f"{t['class']}:{t['probability']:.6f}" for t in top), ""])
    return buffer.getvalue()


def write_predictions(results: list[dict[str, Any]], out: Path, *, overwrite: bool = False,
                      check_only: bool = False) -> Path:
    """Write the predictions to `out` (.csv or .jsonl, by its extension), atomically; an existing file is
    replaced only with `overwrite`. `check_only`: refuse a bad `out` now, write nothing."""
    from stadapt.fileio import atomic_write_text

    suffix = out.suffix.lower()
    if suffix not in OUT_FORMATS:
        raise StadaptError(f"--out {out}: unknown format {suffix or '(no extension)'}",
                           f"name the file with one of: {', '.join(OUT_FORMATS)}")
    if out.exists() and not overwrite:
        raise StadaptError(f"{out} already exists", "pass --overwrite to replace it, or --out elsewhere")
    if not out.parent.is_dir():
        raise StadaptError(f"the folder {out.parent} does not exist", "create it, or pass --out elsewhere")
    if not check_only:
        atomic_write_text(out, predictions_text(results, suffix))
    return out


class _OnnxRun:
    """clips -> logits of an exported graph, run by onnxruntime; `sigmoid`: its views fuse by each label's
    sigmoid (the graph's recorded fusion, read by `loop.fusion_for` as it reads a model's head)."""

    def __init__(self, session: Any, uint8: bool, sigmoid: bool) -> None:
        self.session, self.uint8, self.sigmoid = session, uint8, sigmoid
        self.name = session.get_inputs()[0].name

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        feed = (clips.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy() if self.uint8
                else clips.numpy().astype(np.float32))
        return torch.from_numpy(self.session.run(None, {self.name: feed})[0])


def _onnx_runner(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any, list[str]]:
    """(clips -> logits, InputSpec, classes) of an exported model, from its metadata (stadapt.inference.onnx_meta)."""
    from stadapt.extras import require
    from stadapt.inference.loop import SIGMOID_FUSION
    from stadapt.inference.onnx_meta import read_onnx_metadata

    require("onnx", what="stadapt predict with an .onnx model")
    onnxruntime = require("onnxruntime", what="stadapt predict with an .onnx model")
    meta = read_onnx_metadata(path)
    spec = meta.spec
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    uint8 = meta.input_dtype == "uint8"  # `export --input uint8`: (B, T, S, S, 3) frames, normalised inside
    if uint8:  # clips in 0..255 instead of normalised: the graph does the normalisation
        spec = replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0 / 255.0,) * 3)
    return _OnnxRun(session, uint8, meta.fusion == SIGMOID_FUSION), spec, meta.classes
