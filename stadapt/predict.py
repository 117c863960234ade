"""`stadapt predict`: top-k classes of video files, from a checkpoint or an exported ONNX model.

Clips are taken the way evaluation takes them (`stadapt.data.video_views` with the model's InputSpec:
frame sampling, test views, crop and normalisation as the checkpoint records them), views are fused as
the mean of per-view softmax probabilities. A video that cannot be decoded gets an error entry instead of
a prediction; the others are still predicted.
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
    order = np.argsort(-probs)[:k]
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
) -> list[dict[str, Any]]:
    """One dict per video: `{"video", "top": [{"class", "index", "probability"}, ...], "precision"}` or
    `{"video", "error"}`. Clips come from `stadapt.data.video_views` with the model's InputSpec;
    a checkpoint runs in `precision` ("auto": the run's on this device, float32 on the CPU)."""
    from stadapt.data.views import video_views
    from stadapt.engine.setup import parse_views
    from stadapt.errors import VideoDecodeError

    if onnx is not None and checkpoint is not None:
        raise StadaptError("give --checkpoint or --onnx, not both", "an exported model carries its own classes")
    if onnx is not None:
        if precision not in ("auto", "fp32"):
            raise StadaptError(f"--precision {precision} applies to checkpoints; an ONNX model runs as exported",
                               "leave --precision out with --onnx")
        run, spec, classes = _onnx_runner(Path(onnx))
        used = "fp32"
    else:
        run, spec, classes, used = _torch_runner(checkpoint, device=device, backbone_weights=backbone_weights,
                                                 precision=precision)
    spec = spec.with_views(parse_views(views) if views else None)
    results: list[dict[str, Any]] = []
    for video in videos:
        try:
            clips = video_views(Path(video), spec)
        except VideoDecodeError as exc:
            results.append({"video": str(video), "error": str(exc)})
            continue
        probs = run(clips).mean(axis=0)
        results.append({"video": str(video), "top": _topk(probs, classes, min(top_k, len(probs))),
                        "precision": used})
    return results


def _torch_runner(target: Path | None, *, device: str, backbone_weights: str | None, precision: str):
    """(run clips -> probabilities, InputSpec, classes, precision) of a checkpoint, read once."""
    from stadapt.api import load_model
    from stadapt.engine.rundir import resolve_target
    from stadapt.engine.setup import resolve_device

    checkpoint, _ = resolve_target(target)
    loaded = load_model(checkpoint, backbone_weights=backbone_weights, device=resolve_device(device),
                        precision=precision)

    @torch.inference_mode()
    def run(clips: torch.Tensor) -> np.ndarray:
        return loaded(clips.to(loaded.device)).float().softmax(dim=-1).cpu().numpy()

    return run, loaded.input_spec, loaded.classes, loaded.precision


def _onnx_runner(path: Path):
    """(run clips -> probabilities, InputSpec, classes) of an exported model, from its metadata."""
    from stadapt.extras import require

    onnx = require("onnx", what="stadapt predict with an .onnx model")
    onnxruntime = require("onnxruntime", what="stadapt predict with an .onnx model")

    from stadapt.checkpoint import InputSpec

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
        temporal, spatial = (int(v) for v in props.get("views", "1x1").split("x"))
        spec = InputSpec(frames=int(props["num_frames"]), sampling=props.get("sampling", "stride"),
                         stride=int(props.get("stride", 16)), views=(temporal, spatial),
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
