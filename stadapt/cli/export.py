"""`stadapt export --onnx`: a trained model as an ONNX graph (its weights beside it above 2 GiB), optionally
verified against PyTorch in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from stadapt.cli.evaluate import WHICH_HELP

DEFAULT_OPSET = 18  # stadapt.tools.export.graph.DEFAULT_OPSET, kept here so `--help` imports no torch


def export(
    onnx: bool = typer.Option(False, "--onnx", help="Export to ONNX (the only format for now; required)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A run or checkpoint directory, or "
                                                               "hf-hub:ORG/NAME[@REV]; "
                                                               "default: the latest run under ./runs."),
    out: Path = typer.Option(None, "--out", help="The .onnx file to write; default: RUN/model.onnx (or "
                                                 "CHECKPOINT/model.onnx for a checkpoint outside a run)."),
    verify: bool = typer.Option(False, "--verify", help="Run the ONNX model in onnxruntime on real clips (batches "
                                                        "of 1 and 2) and compare with PyTorch before writing."),
    videos: list[Path] = typer.Option(None, "--video", help="A video to verify on (repeatable); default: up to 4 "
                                                            "videos of the run's validation list."),
    tolerance: float = typer.Option(1e-4, "--tolerance", min=0.0, help="The largest accepted |ONNX - PyTorch| "
                                                                       "logit difference for --verify."),
    input_dtype: str = typer.Option("float32", "--input", help="float32: input (batch, 3, T, S, S), normalised; "
                                    "uint8: input (batch, T, S, S, 3) RGB frames 0-255 as decoders give them, "
                                    "already resized and cropped to S; the graph normalises them."),
    external_data: bool = typer.Option(False, "--external-data", help="Keep the weights in OUT.data beside the "
                                       "graph (always done above 2 GiB, the most one ONNX file can hold)."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", min=13, help="The ONNX opset to export to."),
    exporter: str = typer.Option("auto", "--exporter", help="auto: PyTorch's dynamo exporter, the TorchScript "
                                 "exporter only if that fails; dynamo or torchscript: that one only (TorchScript "
                                 "is several times faster on small models)."),
    backbone_weights: str = typer.Option(None, "--backbone-weights",
                                         help="Where the backbone weights are now, if they moved."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file (and its .data)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
    which: str = typer.Option(None, "--which", help=WHICH_HELP),
) -> None:
    """Export a trained model to ONNX: input `video` (batch dynamic; float32 normalised, or uint8 frames with
    --input uint8), output `logits`; class names, normalisation, frame sampling and the exporter used in its
    metadata. The dynamo exporter is used; the TorchScript exporter only if that fails (the output says why),
    or the one --exporter names."""
    from stadapt.errors import StadaptError

    if not onnx:
        raise StadaptError("say which format to export to", "only --onnx exists for now: stadapt export --onnx")
    from stadapt.extras import require

    for package in ("onnx", "onnxscript") + (("onnxruntime",) if verify else ()):
        require(package, what="stadapt export")
    from stadapt.checkpoints.hub import output_home
    from stadapt.runs.lookup import resolve_target
    from stadapt.tools.export.graph import EXPORTERS
    from stadapt.tools.export.onnx import (
        INPUT_DTYPES,
        default_verify_videos,
        export_onnx,
        refuse_existing,
    )

    if input_dtype not in INPUT_DTYPES:
        raise StadaptError(f"unknown --input {input_dtype!r}", f"choose one of: {', '.join(INPUT_DTYPES)}")
    if exporter not in EXPORTERS:
        raise StadaptError(f"unknown --exporter {exporter!r}", f"choose one of: {', '.join(EXPORTERS)}")
    ckpt, run = resolve_target(checkpoint, which)
    target = out if out is not None else (run if run is not None else output_home(ckpt)) / "model.onnx"
    refuse_existing(target, overwrite)
    clips = None
    if verify:
        clips = list(videos) if videos else default_verify_videos(ckpt)
    elif videos:
        raise StadaptError("--video only selects clips for --verify", "add --verify")
    if not quiet:
        typer.echo(f"exporting {ckpt} to ONNX (opset {opset}, {input_dtype} input)"
                   + (f", verifying on {len(clips)} video(s)" if clips is not None else ""), err=True)
    result = export_onnx(ckpt, target, backbone_weights=backbone_weights, opset=opset, verify_clips=clips,
                         tolerance=tolerance, overwrite=overwrite, input_dtype=input_dtype,
                         exporter=exporter, **({"external_data_above": 0} if external_data else {}))
    _report(result)


def _report(result: dict[str, Any]) -> None:
    """The result lines: the file(s), the exporter (and why not dynamo), the input and output, the check."""
    meta = result["metadata"]
    frames, size = meta["num_frames"], meta["image_size"]
    data = f", weights in {result['data_file']} ({result['data_bytes'] / 1e6:.1f} MB)" if result["data_file"] else ""
    shape = (f"(batch, {frames}, {size}, {size}, 3) uint8 RGB, normalised inside" if result["input_dtype"] == "uint8"
             else f"(batch, 3, {frames}, {size}, {size}) float32, normalised")
    typer.echo(f"wrote {result['out']} ({result['bytes'] / 1e6:.1f} MB{data}, {result['exporter']} exporter, "
               f"opset {result['opset']}; input video {shape}, output logits (batch, {meta['num_classes']}))")
    if result["fallback_reason"]:
        typer.echo(f"used the TorchScript exporter because {result['fallback_reason']}")
    check = result["verification"]
    if check is not None:
        skipped = f"; {len(check['skipped'])} video(s) could not be decoded" if check["skipped"] else ""
        typer.echo(f"verified with onnxruntime: max |ONNX - PyTorch| = {check['max_abs_diff']:.3g} "
                   f"<= tolerance {check['tolerance']:g} on {check['clips']} clip(s), batch sizes "
                   f"{', '.join(map(str, check['batch_sizes']))}{skipped}")
