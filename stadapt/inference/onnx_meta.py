"""The stadapt metadata of an exported ONNX graph: what `stadapt export --onnx` writes into its
`metadata_props` (`onnx_metadata`, `stamp`) and what `stadapt predict --onnx` reads back (`read_onnx_metadata`).

Both sides live here, so the keys, their spelling and the reading of graphs exported before the InputSpec
was recorded stay in step. Every value is a string: JSON for lists and the InputSpec, decimal for numbers.

    classes, num_classes        the class names (JSON list) and their count
    mean, std, image_size,      the input's normalisation and size, frames per clip, frame sampling and
    num_frames, interpolation,  test views, one by one (what graphs before `input_spec` carried)
    sampling, stride, views
    input_spec                  the checkpoint's InputSpec (JSON), what a reader uses when present
    input_dtype, input_layout   "float32" (normalised clips) or "uint8" (frames, normalised inside)
    fusion                      how a video's views are fused (a SigLIP text head's: each label's sigmoid)
    backbone, stadapt_version,  provenance: the backbone, the stadapt that wrote it, the checkpoint, the
    checkpoint, exporter,       exporter (and why not the dynamo one)
    exporter_fallback_reason

The graph's producer is "stadapt" with stadapt's version: what tells an export stadapt wrote from a user's file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stadapt.data.input_spec import InputSpec, input_spec_from_record
from stadapt.errors import StadaptError
from stadapt.inference.loop import FUSION

PRODUCER = "stadapt"
INPUT_LAYOUT = "B,3,T,H,W normalised RGB"
UINT8_LAYOUT = "B,T,H,W,3 uint8 RGB 0-255, H=W=image_size; normalised inside"
REQUIRED = ("classes", "mean", "std", "image_size", "num_frames")  # what every stadapt export wrote


def onnx_metadata(spec: InputSpec, meta: dict[str, Any], checkpoint: Path, input_dtype: str,
                  fusion: str = FUSION) -> dict[str, str]:
    """What a consumer needs beside the graph: classes, normalisation, sampling, input layout, the views'
    fusion, provenance (`meta`: the checkpoint's stadapt.json)."""
    from stadapt import __version__

    classes = list(meta.get("classes") or [])
    return {
        "classes": json.dumps(classes),
        "num_classes": str(len(classes)),
        "mean": json.dumps([float(v) for v in spec.mean]),
        "std": json.dumps([float(v) for v in spec.std]),
        "image_size": str(spec.image_size),
        "num_frames": str(spec.frames),
        "interpolation": spec.interpolation,
        "sampling": spec.sampling,
        "stride": str(spec.stride),
        "views": spec.views_text,
        "input_spec": json.dumps(spec.to_dict()),
        "backbone": str(meta["model"]["backbone"]),
        "stadapt_version": __version__,
        "checkpoint": str(checkpoint.resolve()),
        "input_dtype": input_dtype,
        "input_layout": UINT8_LAYOUT if input_dtype == "uint8" else INPUT_LAYOUT,
        "fusion": fusion,
    }


def add_exporter(metadata: dict[str, str], exporter: str, fallback_reason: str | None) -> None:
    """Record in `metadata` which exporter made the graph, and why not the dynamo one when it fell back."""
    metadata["exporter"] = exporter
    if fallback_reason is not None:
        metadata["exporter_fallback_reason"] = fallback_reason


def stamp(proto: Any, metadata: dict[str, str]) -> None:
    """Make `metadata` the graph's `metadata_props` (replacing the exporter's) and stadapt its producer."""
    from stadapt import __version__

    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = PRODUCER, __version__


def by_stadapt(proto: Any) -> bool:
    """Whether a loaded ONNX graph was written by stadapt."""
    return bool(proto.producer_name == PRODUCER)


@dataclass(frozen=True)
class OnnxMeta:
    """What predicting with an exported graph needs: how its clips are made, its classes, its input type."""

    spec: InputSpec
    classes: list[str]
    input_dtype: str  # "float32": normalised (B, 3, T, S, S) clips; "uint8": (B, T, S, S, 3) frames
    fusion: str = FUSION  # the views' fusion (graphs exported before it was recorded: softmax, as they were)


def read_onnx_metadata(path: Path) -> OnnxMeta:
    """The stadapt metadata of the ONNX graph at `path` (its weights are not read); a missing file, one
    onnx cannot read or one without stadapt's metadata is refused in one line."""
    from stadapt.extras import require

    onnx = require("onnx", what="stadapt predict with an .onnx model")
    if not path.is_file():
        raise StadaptError(f"ONNX model {path} does not exist", "make one with `stadapt export --onnx`")
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as exc:  # onnx raises several types for a damaged file
        raise StadaptError(f"{path} is not a readable ONNX model ({exc})", "export it again") from None
    missing = [k for k in REQUIRED if k not in props]
    if missing:
        raise StadaptError(f"{path} lacks the stadapt metadata {', '.join(missing)}",
                           "export it with `stadapt export --onnx`")
    if "input_spec" in props:
        spec = InputSpec.from_dict(json.loads(props["input_spec"]))
    else:  # exported before the InputSpec was recorded: the settings it wrote one by one
        spec = input_spec_from_record({
            "frames": props["num_frames"], "image_size": props["image_size"], "mean": json.loads(props["mean"]),
            "std": json.loads(props["std"]),
            **{key: props[key] for key in ("sampling", "stride", "views", "interpolation") if key in props}})
    return OnnxMeta(spec=spec, classes=json.loads(props["classes"]), input_dtype=props.get("input_dtype", "float32"),
                    fusion=props.get("fusion", FUSION))
