"""`stadapt export --onnx`: a trained model as an ONNX graph, checked against PyTorch.

By default the ONNX model takes `video` (batch, 3, T, S, S) float32, already normalised the way the
backbone expects (the mean/std are in the metadata); with `input_dtype="uint8"` it takes (batch, T, S, S,
3) uint8 RGB frames and normalises inside (stadapt.tools.export.uint8). It returns `logits` (batch,
num_classes). The batch dimension is dynamic; T and S are fixed by the checkpoint. Everything needed to
use the file (class names, normalisation, frame sampling, input layout, which exporter wrote it) is in
`metadata_props` (written and read by stadapt.inference.onnx_meta), so `stadapt predict --onnx` needs no
checkpoint.

The graph comes from PyTorch's dynamo exporter, or from the TorchScript exporter when that fails
(stadapt.tools.export.graph). Weights above 2 GiB (protobuf's limit: ViT-H) go to one external data file,
`OUT.data` beside `OUT.onnx`. Everything is written into a staging folder beside `out`, checked and
optionally verified on real clips with onnxruntime there, and only then renamed into place.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stadapt.errors import DiskFullError, StadaptError, first_line
from stadapt.fileio import fsync_dir, make_temp_dir
from stadapt.inference.onnx_meta import add_exporter, by_stadapt, onnx_metadata, stamp
from stadapt.tools.export.graph import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportedGraph,
    export_graph,
    is_disk_full,
)
from stadapt.tools.export.uint8 import Uint8Frames, frames_from_unit_clip

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_onnx", "is_disk_full", "verify_onnx"]

INPUT_DTYPES = ("float32", "uint8")
MAX_PROTOBUF_BYTES = 2**31 - 2**24  # a single-file ONNX model must stay below protobuf's 2 GiB, with margin
DATA_SUFFIX = ".data"
VERIFY_BATCH_SIZES = (1, 2)


def data_file(out: Path) -> Path:
    """Where the weights of `out` go when they are stored outside the graph: `OUT.data` beside it."""
    return out.with_name(out.name + DATA_SUFFIX)


def refuse_existing(out: Path, overwrite: bool) -> None:
    """An existing export (the graph or its data file) is replaced only with --overwrite, and only when
    stadapt wrote it: a user's file at either path is never replaced."""
    from stadapt.fileio import claim_outputs

    claim_outputs((out, data_file(out)), overwrite=overwrite, ours=lambda path: _export_by_stadapt(out, path))


def _export_by_stadapt(out: Path, path: Path) -> bool:
    """Whether `path` (the graph `out` or its data file) is what a stadapt export wrote: a graph stadapt
    produced, and a data file such a graph names."""
    import onnx

    try:
        proto = onnx.load(str(out), load_external_data=False)
    except Exception:  # a damaged or foreign file is the user's
        return False
    return by_stadapt(proto) and (path == out or _names_data_file(out, path.name))


def input_config(spec: Any) -> dict[str, Any]:
    """How clips for this model are made (the checkpoint's InputSpec, kept under "spec"), as the metadata spells it."""
    return {"frames": spec.frames, "sampling": spec.sampling, "stride": spec.stride, "views": spec.views_text,
            "size": spec.image_size, "mean": [float(v) for v in spec.mean], "std": [float(v) for v in spec.std],
            "interpolation": spec.interpolation, "spec": spec}


def default_verify_videos(checkpoint: Path, limit: int = 4) -> list[Path]:
    """Up to `limit` videos of the validation list recorded in the checkpoint's recipe."""
    from stadapt.checkpoints.format import read_checkpoint
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
    from dataclasses import replace

    from stadapt.data.views import video_views

    spec = replace(config["spec"], mean=tuple(config["mean"]), std=tuple(config["std"]))  # a caller may set them
    return video_views(Path(path), spec, (1, 1))[0]


def disk_full_error(out: Path, exc: BaseException) -> DiskFullError:
    """The one-line refusal for an export that ran out of disk space while writing `out`."""
    kept = "the existing file is unchanged" if out.exists() else "no file was written there"
    reason = exc.reason if isinstance(exc, DiskFullError) else first_line(exc)
    return DiskFullError(out, reason, f"{kept}, the checkpoint is untouched",
                         "free some space there, or pass --out on another disk")


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _as_clips(item: Any, config: dict[str, Any], input_dtype: str = "float32") -> list[torch.Tensor]:
    """Model inputs from a video path, one clip array, or a batch of them: normalised (3, T, S, S) float
    clips, or (T, S, S, 3) uint8 frames for a uint8 graph."""
    uint8 = input_dtype == "uint8"
    if isinstance(item, (str, os.PathLike)):
        if not uint8:
            return [decode_clip(Path(item), config)]
        return [frames_from_unit_clip(decode_clip(Path(item), {**config, "mean": [0.0] * 3, "std": [1.0] * 3}))]
    array = np.asarray(item)
    if uint8 and array.dtype != np.uint8:
        raise StadaptError(f"a verification clip is {array.dtype}, the uint8 graph takes uint8 frames")
    clip = torch.from_numpy(np.ascontiguousarray(array)) if uint8 else torch.as_tensor(array, dtype=torch.float32)
    frames, size = config["frames"], config["size"]
    expected = (frames, size, size, 3) if uint8 else (3, frames, size, size)
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
    input_dtype: str = "float32",
) -> dict[str, Any]:
    """Compare the ONNX model under onnxruntime with the PyTorch model (the module that was exported) on
    real clips, in batches of 1 and 2 (so the dynamic batch dimension is exercised); raises StadaptError
    above `tolerance`.

    `clips` are video paths (decoded with the checkpoint's sampler and test transform: centre clip,
    centre crop) or arrays: normalised (3, T, S, S) float clips, or (T, S, S, 3) uint8 frames for a uint8
    graph (`input_dtype`). Videos that cannot be decoded are skipped and listed.
    """
    from stadapt.errors import VideoDecodeError

    tensors: list[torch.Tensor] = []
    skipped: list[dict[str, str]] = []
    for item in clips:
        try:
            tensors.extend(_as_clips(item, config, input_dtype))
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
    opset: int = DEFAULT_OPSET,
    verify_clips: Sequence[Any] | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    input_dtype: str = "float32",
    external_data_above: int = MAX_PROTOBUF_BYTES,
    exporter: str = "auto",
) -> dict[str, Any]:
    """Export a checkpoint directory to an ONNX model at `out`.

    `input_dtype="uint8"` makes a graph that takes (batch, T, S, S, 3) uint8 RGB frames and normalises
    inside. Weights of more than `external_data_above` bytes (default: what one protobuf file can hold)
    go to `OUT.data` beside the graph. `exporter`: auto (dynamo, TorchScript when that fails), dynamo or
    torchscript. With `verify_clips` (video paths or clip arrays) the exported
    model is run in onnxruntime and compared with PyTorch before anything is put in place; a difference
    above `tolerance` raises StadaptError and writes nothing. Returns a summary: out, bytes, data_file,
    data_bytes, exporter, fallback_reason, opset, input_dtype, metadata and (when verified) `verification`.
    """
    from stadapt.checkpoints.load import load_checkpoint
    from stadapt.inference.loop import fusion_for

    checkpoint, out = Path(checkpoint), Path(out)
    if input_dtype not in INPUT_DTYPES:
        raise StadaptError(f"unknown input type {input_dtype!r}", f"choose one of: {', '.join(INPUT_DTYPES)}")
    refuse_existing(out, overwrite)
    loaded = load_checkpoint(checkpoint, backbone_weights=backbone_weights, device="cpu", precision="fp32")
    meta, config = loaded.meta, input_config(loaded.input_spec)
    model = loaded.float().eval()
    if hasattr(model, "backbone_dtype"):
        model.backbone_dtype = torch.float32
    exported = Uint8Frames(model, config["mean"], config["std"]).eval() if input_dtype == "uint8" else model
    param_bytes = sum(t.numel() * 4 for t in [*model.parameters(), *model.buffers()])
    metadata = onnx_metadata(loaded.input_spec, meta, checkpoint, input_dtype, fusion_for(model)[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _write_onnx(exported, out, config, metadata, opset, verify_clips, tolerance,
                           external=param_bytes > external_data_above, exporter=exporter)
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(out, exc) from None
        raise


def _write_onnx(model: torch.nn.Module, out: Path, config: dict[str, Any], metadata: dict[str, str], opset: int,
                verify_clips: Sequence[Any] | None, tolerance: float, *, external: bool,
                exporter: str = "auto") -> dict[str, Any]:
    """Export into a staging folder beside `out`, stamp the metadata, check, verify, then move the graph
    (and its data file) into place. A failure anywhere leaves `out` as it was and no staging behind."""
    uint8 = metadata["input_dtype"] == "uint8"
    frames, size = config["frames"], config["size"]
    example = (torch.zeros(2, frames, size, size, 3, dtype=torch.uint8) if uint8
               else torch.zeros(2, 3, frames, size, size))
    stage = make_temp_dir(out.parent, out.name)
    try:
        staged = stage / out.name
        graph = _stage_graph(model, example, stage, staged, opset, metadata, external=external, exporter=exporter)
        _check(staged)
        verification = None
        if verify_clips is not None:
            verification = verify_onnx(staged, model, verify_clips, config, tolerance=tolerance,
                                       input_dtype=metadata["input_dtype"])
        produced = _opset_of(staged)
        _commit(stage, out, external=external)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    data = data_file(out) if external else None
    return {"out": out, "bytes": out.stat().st_size, "data_file": data,
            "data_bytes": data.stat().st_size if data is not None else 0, "exporter": graph.exporter,
            "fallback_reason": graph.fallback_reason, "opset": produced, "input_dtype": metadata["input_dtype"],
            "metadata": metadata, "verification": verification}


def _stage_graph(model: torch.nn.Module, example: torch.Tensor, stage: Path, staged: Path, opset: int,
                 metadata: dict[str, str], *, external: bool, exporter: str = "auto") -> ExportedGraph:
    """The exporter's graph re-saved at `staged` with stadapt's metadata (which exporter wrote it, and why
    not the dynamo one, included) and its weights inline or in one data file `OUT.data` beside it."""
    import onnx

    raw = stage / "raw" / staged.name
    raw.parent.mkdir()
    graph = export_graph(model, example, raw, opset, exporter)
    add_exporter(metadata, graph.exporter, graph.fallback_reason)
    proto = onnx.load(str(raw))  # with whatever external data the exporter wrote beside it
    stamp(proto, metadata)
    onnx.save_model(proto, str(staged), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=staged.name + DATA_SUFFIX)
    shutil.rmtree(raw.parent)
    return graph


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises several types
        raise StadaptError(f"the exported ONNX model does not pass onnx.checker ({first_line(exc)})",
                           "try another --opset") from None


def _opset_of(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((int(entry.version) for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), 0)


def _names_data_file(path: Path, name: str) -> bool:
    """Whether the ONNX model at `path` keeps weights in the file `name` beside it (False if unreadable)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # a damaged or foreign file names nothing we wrote
        return False
    return any(entry.key == "location" and entry.value == name
               for tensor in proto.graph.initializer if tensor.data_location == onnx.TensorProto.EXTERNAL
               for entry in tensor.external_data)


def _commit(stage: Path, out: Path, *, external: bool) -> None:
    """Move the staged graph (and its data file) into place. The graph goes last and is what a reader
    opens, so no reader ever sees a graph without its weights; a graph being replaced is moved aside
    first, so none pairs an old graph with new weights. A data file only the replaced graph used goes."""
    data, staged = data_file(out), stage / out.name
    old_data = out.exists() and _names_data_file(out, data.name)
    for path in ([staged.with_name(data.name)] if external else []) + [staged]:
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    aside = stage / ".replaced"
    if out.exists():
        os.replace(out, aside)
    try:
        if external:
            os.replace(staged.with_name(data.name), data)
        elif old_data:
            data.unlink(missing_ok=True)
        os.replace(staged, out)
    except BaseException:
        if aside.exists() and not out.exists():
            os.replace(aside, out)
        raise
    fsync_dir(out.parent)
