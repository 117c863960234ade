"""`stadapt predict`: top-k classes of video files, from a checkpoint or an exported ONNX model.

Clips are taken the way evaluation takes them (the training recipe's frame sampling, the backbone's
test crop), views are fused as the mean of per-view softmax probabilities. A video that cannot be
decoded gets an error entry instead of a prediction; the others are still predicted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stadapt.errors import StadaptError


def _topk(probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    order = np.argsort(-probs)[:k]
    return [{"class": classes[i], "index": int(i), "probability": round(float(probs[i]), 6)} for i in order]


def _clip_views(path: Path, *, frames: int, sampling: str, stride: int, views: tuple[int, int], size: int,
                mean: Any, std: Any, interpolation: str) -> torch.Tensor:
    """(V, 3, T, S, S) normalised views of one video, as evaluation makes them."""
    from stadapt.data.dataset import VideoClipDataset
    from stadapt.data.prepared import VideoEntry
    from stadapt.data.sampling import make_sampler
    from stadapt.data.transforms import TestTransform

    transform = TestTransform(size, mean, std, spatial_views=views[1], interpolation=interpolation)
    dataset = VideoClipDataset([VideoEntry(path, 0)], make_sampler(sampling, frames, stride), transform, train=False,
                               temporal_views=views[0])
    item = dataset[0]
    if item["video"] is None:
        raise _Undecodable(item["error"])
    return item["video"]


class _Undecodable(Exception):
    pass


def predict_videos(
    videos: list[Path],
    *,
    checkpoint: Path | None = None,
    onnx: Path | None = None,
    top_k: int = 5,
    views: str | None = None,
    device: str = "auto",
    backbone_weights: str | None = None,
) -> list[dict[str, Any]]:
    """One dict per video: `{"video", "top": [{"class", "index", "probability"}, ...]}` or `{"video", "error"}`."""
    from stadapt.engine.setup import parse_views

    if onnx is not None and checkpoint is not None:
        raise StadaptError("give --checkpoint or --onnx, not both", "an exported model carries its own classes")
    if onnx is not None:
        run, config = _onnx_runner(Path(onnx))
    else:
        run, config = _torch_runner(checkpoint, device=device, backbone_weights=backbone_weights)
    view_pair = parse_views(views or config["views"])
    results: list[dict[str, Any]] = []
    for video in videos:
        try:
            clips = _clip_views(Path(video), views=view_pair, **{k: config[k] for k in (
                "frames", "sampling", "stride", "size", "mean", "std", "interpolation")})
        except _Undecodable as exc:
            results.append({"video": str(video), "error": str(exc)})
            continue
        probs = run(clips).mean(axis=0)
        results.append({"video": str(video), "top": _topk(probs, config["classes"], min(top_k, len(probs)))})
    return results


def _torch_runner(target: Path | None, *, device: str, backbone_weights: str | None):
    from stadapt.api import load_model
    from stadapt.checkpoint import checkpoint_variant, read_checkpoint
    from stadapt.engine.rundir import resolve_target
    from stadapt.engine.setup import resolve_device

    checkpoint, _ = resolve_target(target)
    meta, _ = read_checkpoint(checkpoint)
    torch_device = resolve_device(device)
    model = load_model(checkpoint, backbone_weights=backbone_weights, device=torch_device).eval()
    variant = checkpoint_variant(meta)
    data = (meta.get("recipe") or {}).get("data") or {}
    config = {
        "classes": list(meta["classes"]), "frames": int(meta["model"]["num_frames"]),
        "sampling": data.get("sampling", "stride"), "stride": int(data.get("stride", 16)),
        "views": data.get("views", "1x1"), "size": variant.image_size, "mean": variant.mean, "std": variant.std,
        "interpolation": variant.interpolation,
    }

    @torch.inference_mode()
    def run(clips: torch.Tensor) -> np.ndarray:
        return model(clips.to(torch_device)).float().softmax(dim=-1).cpu().numpy()

    return run, config


def _onnx_runner(path: Path):
    from stadapt.extras import require

    onnx = require("onnx", what="stadapt predict with an .onnx model")
    onnxruntime = require("onnxruntime", what="stadapt predict with an .onnx model")

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
    config = {
        "classes": json.loads(props["classes"]), "frames": int(props["num_frames"]),
        "sampling": props.get("sampling", "stride"), "stride": int(props.get("stride", 16)),
        "views": props.get("views", "1x1"), "size": int(props["image_size"]), "mean": json.loads(props["mean"]),
        "std": json.loads(props["std"]), "interpolation": props.get("interpolation", "bicubic"),
    }
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    uint8 = props.get("input_dtype") == "uint8"  # `export --input uint8`: (B, T, S, S, 3) frames, normalised inside
    if uint8:  # clips in 0..255 instead of normalised: the graph does the normalisation
        config["mean"], config["std"] = [0.0] * 3, [1.0 / 255.0] * 3

    def run(clips: torch.Tensor) -> np.ndarray:
        feed = (clips.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy() if uint8
                else clips.numpy().astype(np.float32))
        logits = session.run(None, {name: feed})[0]
        return torch.from_numpy(logits).softmax(dim=-1).numpy()

    return run, config
