"""`stadapt predict`: top-k classes of videos (files, folders, patterns, lists), from a checkpoint or an
exported ONNX model, printed or written as CSV / JSONL with class names.

Clips are taken the way evaluation takes them (`stadapt.data.video_views` with the model's InputSpec:
frame sampling, test views, crop and normalisation as the checkpoint records them), views are fused as
the mean of per-view softmax probabilities; a checkpoint's videos are decoded by DataLoader workers and
run in batches (stadapt.inference.batched). A video that cannot be decoded gets an error entry instead of a
prediction; the others are still predicted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stadapt.errors import StadaptError


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
) -> list[dict[str, Any]]:
    """One dict per video, in input order: `{"video", "top": [{"class", "index", "probability"}, ...],
    "precision"}` or `{"video", "error"}`. Clips are made as evaluation makes them, from the model's InputSpec;
    a checkpoint's videos go through DataLoader workers in batches and run in `precision` ("auto": the run's
    on this device, float32 on the CPU); of a run, `which` checkpoint (None: best when present)."""
    from stadapt.runtime.views import parse_views

    if onnx is not None and checkpoint is not None:
        raise StadaptError("give --checkpoint or --onnx, not both", "an exported model carries its own classes")
    view_override = parse_views(views) if views else None
    if onnx is None:
        return _predict_checkpoint(videos, checkpoint, top_k=top_k, views=view_override, device=device,
                                   backbone_weights=backbone_weights, precision=precision, which=which,
                                   batch_size=batch_size, workers=workers, max_clips=max_clips, progress=progress)
    if precision not in ("auto", "fp32"):
        raise StadaptError(f"--precision {precision} applies to checkpoints; an ONNX model runs as exported",
                           "leave --precision out with --onnx")
    return _predict_onnx(videos, Path(onnx), top_k=top_k, views=view_override)


def _predict_checkpoint(videos: list[Path], target: Path | None, *, top_k: int, views: tuple[int, int] | None,
                        device: str, backbone_weights: str | None, precision: str, which: str | None,
                        batch_size: int, workers: int | None, max_clips: int | None,
                        progress: bool) -> list[dict[str, Any]]:
    """predict_videos of a checkpoint: batches of views from `stadapt.inference.batched`, softmax per view, mean."""
    from stadapt.inference.batched import in_chunks, view_batches
    from stadapt.inference.loading import load_for_inference
    from stadapt.runs.lookup import resolve_target
    from stadapt.runtime.device import resolve_device

    checkpoint, _ = resolve_target(target, which)
    loaded = load_for_inference(checkpoint, backbone_weights=backbone_weights, device=resolve_device(device),
                                precision=precision)
    spec = loaded.input_spec.with_views(views)
    results: list[dict[str, Any]] = [{} for _ in videos]
    for batch in view_batches(videos, spec, device=loaded.device, batch_size=batch_size, workers=workers,
                              progress=progress, desc="predict"):
        for failed in batch.failed:
            results[failed["index"]] = {"video": str(videos[failed["index"]]), "error": failed["error"]}
        if batch.views is None:
            continue
        with torch.inference_mode():
            probs = in_chunks(lambda clips: loaded(clips).float().softmax(dim=-1), batch.views, max_clips)
        for index, video_probs in zip(batch.indices, probs.mean(dim=1).cpu().numpy(), strict=True):
            results[index] = {"video": str(videos[index]), "top": _topk(video_probs, loaded.classes, top_k),
                              "precision": loaded.loaded_from.precision}
    return results


def _predict_onnx(videos: list[Path], path: Path, *, top_k: int,
                  views: tuple[int, int] | None) -> list[dict[str, Any]]:
    """predict_videos of an exported model, one video at a time through onnxruntime."""
    from stadapt.data.views import video_views
    from stadapt.errors import VideoDecodeError

    run, spec, classes = _onnx_runner(path)
    spec = spec.with_views(views)
    results: list[dict[str, Any]] = []
    for video in videos:
        try:
            clips = video_views(Path(video), spec)
        except VideoDecodeError as exc:
            results.append({"video": str(video), "error": str(exc)})
            continue
        probs = run(clips).mean(axis=0)
        results.append({"video": str(video), "top": _topk(probs, classes, top_k), "precision": "fp32"})
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


def _onnx_runner(path: Path):
    """(run clips -> probabilities, InputSpec, classes) of an exported model, from its metadata."""
    from stadapt.extras import require

    onnx = require("onnx", what="stadapt predict with an .onnx model")
    onnxruntime = require("onnxruntime", what="stadapt predict with an .onnx model")

    from stadapt.data.input_spec import InputSpec
    from stadapt.vocabulary import split_views

    if not path.is_file():
        raise StadaptError(f"ONNX model {path} does not exist", "make one with `stadapt export --onnx`")
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as exc:  # onnx raises several types for a damaged file
        raise StadaptError(f"{path} is not a readable ONNX model ({exc})", "export it again") from None
    missing = [k for k in ("classes", "mean", "std", "image_size", "num_frames") if k not in props]
    if missing:
        raise StadaptError(f"{path} lacks the stadapt metadata {', '.join(missing)}",
                           "export it with `stadapt export --onnx`")
    if "input_spec" in props:
        spec = InputSpec.from_dict(json.loads(props["input_spec"]))
    else:  # exported before the InputSpec was recorded: the fields it wrote one by one
        spec = InputSpec(frames=int(props["num_frames"]), sampling=props.get("sampling", "stride"),
                         stride=int(props.get("stride", 16)), views=split_views(props.get("views", "1x1")),
                         image_size=int(props["image_size"]), mean=tuple(json.loads(props["mean"])),
                         std=tuple(json.loads(props["std"])), interpolation=props.get("interpolation", "bicubic"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    uint8 = props.get("input_dtype") == "uint8"  # `export --input uint8`: (B, T, S, S, 3) frames, normalised inside
    if uint8:  # clips in 0..255 instead of normalised: the graph does the normalisation
        spec = replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0 / 255.0,) * 3)

    def run(clips: torch.Tensor) -> np.ndarray:
        feed = (clips.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy() if uint8
                else clips.numpy().astype(np.float32))
        logits = session.run(None, {name: feed})[0]
        return torch.from_numpy(logits).softmax(dim=-1).numpy()

    return run, spec, json.loads(props["classes"])
