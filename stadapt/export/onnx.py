"""`stadapt export --onnx`: a trained model as one self-contained ONNX file, checked against PyTorch.

The ONNX model takes `video` (batch, 3, T, S, S) float32, already normalised the way the backbone
expects (the mean/std are in the metadata), and returns `logits` (batch, num_classes). The batch
dimension is dynamic; T and S are fixed by the checkpoint. Everything needed to use the file
(class names, normalisation, frame sampling) is in `metadata_props`, so `stadapt predict --onnx`
needs no checkpoint.

Export uses PyTorch's TorchScript-based exporter (with nn.MultiheadAttention's fused fast path
switched off, which that exporter cannot translate); if it fails, the torch.export-based exporter
is tried. The file is written atomically (temp file + rename), after an optional verification on
real clips with onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stadapt.errors import DiskFullError, StadaptError, first_line
from stadapt.fileio import DISK_FULL_ERRNOS, atomic_output

INPUT_NAME = "video"
OUTPUT_NAME = "logits"
INPUT_LAYOUT = "B,3,T,H,W normalised RGB"
MAX_PROTOBUF_BYTES = 2**31 - 2**24  # a single-file ONNX model must stay below protobuf's 2 GiB, with margin
VERIFY_BATCH_SIZES = (1, 2)


def clip_config(meta: dict[str, Any]) -> dict[str, Any]:
    """How clips for this checkpoint are made: frames, sampling, stride, views, size, mean, std, interpolation."""
    from stadapt.checkpoint import checkpoint_variant

    variant = checkpoint_variant(meta)
    data = (meta.get("recipe") or {}).get("data") or {}
    return {
        "frames": int(meta["model"]["num_frames"]),
        "sampling": str(data.get("sampling", "stride")),
        "stride": int(data.get("stride", 16)),
        "views": str(data.get("views", "1x1")),
        "size": int(variant.image_size),
        "mean": [float(v) for v in variant.mean],
        "std": [float(v) for v in variant.std],
        "interpolation": str(variant.interpolation),
    }


def default_verify_videos(checkpoint: Path, limit: int = 4) -> list[Path]:
    """Up to `limit` videos of the validation list recorded in the checkpoint's recipe."""
    from stadapt.checkpoint import read_checkpoint
    from stadapt.data.prepared import open_prepared

    meta, _ = read_checkpoint(checkpoint)
    data = (meta.get("recipe") or {}).get("data") or {}
    if not data.get("root"):
        raise StadaptError(f"{checkpoint} records no training recipe, so there is no validation list to verify on",
                           "pass videos to verify on with --video PATH (repeatable)")
    prepared = open_prepared(data["root"])
    return [entry.path for entry in prepared.entries(data.get("val_list", "val.txt"))[:limit]]


def decode_clip(path: Path, config: dict[str, Any]) -> torch.Tensor:
    """One (3, T, S, S) normalised clip of a video: the centre temporal view, the centre crop."""
    from stadapt.data.dataset import VideoClipDataset
    from stadapt.data.prepared import VideoEntry
    from stadapt.data.sampling import make_sampler
    from stadapt.data.transforms import TestTransform
    from stadapt.errors import VideoDecodeError

    transform = TestTransform(config["size"], config["mean"], config["std"], spatial_views=1,
                              interpolation=config["interpolation"])
    sampler = make_sampler(config["sampling"], config["frames"], config["stride"])
    item = VideoClipDataset([VideoEntry(Path(path), 0)], sampler, transform, train=False, temporal_views=1)[0]
    if item["video"] is None:
        raise VideoDecodeError(item["error"])
    return item["video"][0]


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's fused eval fast path (aten::_native_multi_head_attention) has no ONNX
    translation in the TorchScript exporter; the ordinary path computes the same thing."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a full disk or quota, also when an exporter's C++ code only
    passes on the message: such a failure is not the exporter's, and another opset cannot help."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(os.strerror(code) in str(current) for code in DISK_FULL_ERRNOS):
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(out: Path, exc: BaseException) -> DiskFullError:
    """The one-line refusal for an export that ran out of disk space while writing `out`."""
    kept = "the existing file is unchanged" if out.exists() else "no file was written there"
    reason = exc.reason if isinstance(exc, DiskFullError) else first_line(exc)
    return DiskFullError(out, reason, f"{kept}, the checkpoint is untouched",
                         "free some space there, or pass --out on another disk")


def _export_graph(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> str:
    """Export to `path`; returns the exporter that worked ("torchscript" or "dynamo")."""
    errors = []
    with _mha_fastpath_off(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings say nothing the user can act on
        try:
            torch.onnx.export(
                model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
                do_constant_folding=True, dynamo=False,
            )
            return "torchscript"
        except Exception as exc:  # any exporter failure: try the other exporter
            if is_disk_full(exc):  # the exporter worked; the disk did not: the other one cannot help
                raise
            errors.append(f"TorchScript exporter: {first_line(exc)}")
        try:  # this exporter reports progress on stdout: keep stdout for results
            batch = torch.export.Dim("batch", min=1)
            with contextlib.redirect_stdout(sys.stderr):
                program = torch.onnx.export(
                    model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, external_data=False,
                )
                assert program is not None  # dynamo=True returns the program
                program.save(str(path), external_data=False)
            return "dynamo"
        except Exception as exc:
            if is_disk_full(exc):
                raise
            errors.append(f"torch.export exporter: {first_line(exc)}")
    raise StadaptError("the model could not be exported to ONNX (" + "; ".join(errors) + ")",
                       "try another --opset, or report this with the backbone name")


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _as_clips(item: Any, config: dict[str, Any]) -> list[torch.Tensor]:
    """(3, T, S, S) clips from a video path, a clip array, or a batch of clip arrays."""
    if isinstance(item, (str, os.PathLike)):
        return [decode_clip(Path(item), config)]
    clip = torch.as_tensor(np.asarray(item), dtype=torch.float32)
    expected = (3, config["frames"], config["size"], config["size"])
    if clip.dim() == 5 and tuple(clip.shape[1:]) == expected:
        return list(clip)
    if tuple(clip.shape) != expected:
        raise StadaptError(f"a verification clip has shape {tuple(clip.shape)}, the model takes {expected} "
                           f"(or a batch of them)")
    return [clip]


def verify_onnx(
    path: Path,
    model: torch.nn.Module,
    clips: Sequence[Any],
    config: dict[str, Any],
    *,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Compare the ONNX model under onnxruntime with the PyTorch model on real clips, in batches of 1
    and 2 (so the dynamic batch dimension is exercised); raises StadaptError above `tolerance`.

    `clips` are video paths (decoded with the checkpoint's sampler and test transform: centre clip,
    centre crop) or normalised (3, T, S, S) arrays. Videos that cannot be decoded are skipped and listed.
    """
    from stadapt.errors import VideoDecodeError

    tensors: list[torch.Tensor] = []
    skipped: list[dict[str, str]] = []
    for item in clips:
        try:
            tensors.extend(_as_clips(item, config))
        except VideoDecodeError as exc:
            skipped.append({"video": str(item), "error": str(exc)})
    if not tensors:
        raise StadaptError("no clip to verify the ONNX model on" + (
            f" ({len(skipped)} video(s) could not be decoded: {skipped[0]['error']})" if skipped else ""),
            "pass videos that decode with --video PATH")
    session = _session(path)
    batches = [[i] for i in range(len(tensors))]
    pairs = list(range(len(tensors))) + ([0] if len(tensors) % 2 else [])
    batches += [pairs[i : i + 2] for i in range(0, len(pairs), 2)]
    worst = 0.0
    shapes = set()
    with torch.no_grad():
        for batch in batches:
            video = torch.stack([tensors[i] for i in batch])
            expected = model(video).float().numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: video.numpy()})[0]
            if got.shape != expected.shape:
                raise StadaptError(f"the ONNX model returned logits of shape {got.shape} for a batch of "
                                   f"{len(batch)}, PyTorch {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
            shapes.add(len(batch))
    result = {"max_abs_diff": worst, "tolerance": float(tolerance), "clips": len(tensors),
              "batch_sizes": sorted(shapes), "skipped": skipped, "passed": worst <= tolerance}
    if not worst <= tolerance:  # also catches NaN
        raise StadaptError(f"the ONNX model differs from the PyTorch model by up to {worst:.3g} on "
                           f"{len(tensors)} clip(s), more than the tolerance {tolerance:g}",
                           "pass a larger --tolerance if that is acceptable, or try another --opset")
    return result


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    backbone_weights: str | Path | None = None,
    opset: int = 17,
    verify_clips: Sequence[Any] | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a checkpoint directory to one self-contained ONNX file at `out`.

    With `verify_clips` (video paths or normalised (3, T, S, S) arrays) the exported model is run in
    onnxruntime and compared with PyTorch before the file is put in place; a difference above
    `tolerance` raises StadaptError and writes nothing. Returns a summary: out, bytes, exporter,
    opset, metadata and (when verified) `verification`.
    """
    from stadapt import __version__
    from stadapt.api import load_model
    from stadapt.checkpoint import read_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not overwrite:
        raise StadaptError(f"{out} already exists", "choose another --out or pass --overwrite to replace it")
    if out.is_dir():
        raise StadaptError(f"{out} is a directory", "--out names the .onnx file to write")
    meta, _ = read_checkpoint(checkpoint)
    config = clip_config(meta)
    model = load_model(checkpoint, backbone_weights=backbone_weights, device="cpu").float().eval()
    if hasattr(model, "backbone_dtype"):
        model.backbone_dtype = torch.float32
    param_bytes = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * 4 for b in model.buffers())
    if param_bytes > MAX_PROTOBUF_BYTES:
        raise StadaptError(f"the model holds {param_bytes / 2**30:.1f} GiB of float32 weights; a self-contained "
                           "ONNX file is limited to 2 GiB", "this backbone is too large for a one-file export")
    classes = list(meta.get("classes") or [])
    metadata = {
        "classes": json.dumps(classes),
        "num_classes": str(len(classes)),
        "mean": json.dumps(config["mean"]),
        "std": json.dumps(config["std"]),
        "image_size": str(config["size"]),
        "num_frames": str(config["frames"]),
        "interpolation": config["interpolation"],
        "sampling": config["sampling"],
        "stride": str(config["stride"]),
        "views": config["views"],
        "backbone": str(meta["model"]["backbone"]),
        "stadapt_version": __version__,
        "checkpoint": str(checkpoint.resolve()),
        "input_layout": INPUT_LAYOUT,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _write_onnx(model, out, config, metadata, opset, verify_clips, tolerance)
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(out, exc) from None
        raise


def _write_onnx(model: torch.nn.Module, out: Path, config: dict[str, Any], metadata: dict[str, str], opset: int,
                verify_clips: Sequence[Any] | None, tolerance: float) -> dict[str, Any]:
    """Export into a staging file beside `out`, stamp the metadata, check, verify, then rename it into place."""
    import onnx

    from stadapt import __version__

    with atomic_output(out) as staging:  # the mode open() gives; replaces `out` only when all went well
        example = torch.zeros(2, 3, config["frames"], config["size"], config["size"])
        exporter = _export_graph(model, example, staging, opset)
        proto = onnx.load(str(staging))
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        proto.producer_name, proto.producer_version = "stadapt", __version__
        onnx.save_model(proto, str(staging), save_as_external_data=False)
        try:
            onnx.checker.check_model(str(staging), full_check=True)
        except Exception as exc:  # onnx raises several types
            raise StadaptError(f"the exported ONNX model does not pass onnx.checker ({first_line(exc)})",
                               "try another --opset") from None
        verification = None
        if verify_clips is not None:
            verification = verify_onnx(staging, model, verify_clips, config, tolerance=tolerance)
    return {"out": out, "bytes": out.stat().st_size, "exporter": exporter, "opset": opset, "metadata": metadata,
            "verification": verification}
