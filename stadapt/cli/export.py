"""`stadapt export --onnx`: a trained model as one self-contained ONNX file, optionally verified."""

from __future__ import annotations

from pathlib import Path

import typer


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
    opset: int = typer.Option(17, "--opset", min=13, help="The ONNX opset to export to."),
    backbone_weights: str = typer.Option(None, "--backbone-weights",
                                         help="Where the backbone weights are now, if they moved."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
) -> None:
    """Export a trained model as one self-contained ONNX file: input `video` (batch, 3, T, S, S), normalised,
    dynamic batch; output `logits`; class names, normalisation and frame sampling in its metadata."""
    from stadapt.errors import StadaptError

    if not onnx:
        raise StadaptError("say which format to export to", "only --onnx exists for now: stadapt export --onnx")
    from stadapt.extras import require

    for package in ("onnx", "onnxscript") + (("onnxruntime",) if verify else ()):
        require(package, what="stadapt export")
    from stadapt.engine.rundir import resolve_target
    from stadapt.export.onnx import default_verify_videos, export_onnx
    from stadapt.hub import output_home

    ckpt, run = resolve_target(checkpoint)
    target = out if out is not None else (run if run is not None else output_home(ckpt)) / "model.onnx"
    if target.exists() and not overwrite:
        raise StadaptError(f"{target} already exists", "choose another --out or pass --overwrite to replace it")
    clips = None
    if verify:
        clips = list(videos) if videos else default_verify_videos(ckpt)
    elif videos:
        raise StadaptError("--video only selects clips for --verify", "add --verify")
    if not quiet:
        typer.echo(f"exporting {ckpt} to ONNX (opset {opset})" + (f", verifying on {len(clips)} video(s)"
                                                                 if clips is not None else ""), err=True)
    result = export_onnx(ckpt, target, backbone_weights=backbone_weights, opset=opset, verify_clips=clips,
                         tolerance=tolerance, overwrite=overwrite)
    typer.echo(f"wrote {result['out']} ({result['bytes'] / 1e6:.1f} MB, {result['exporter']} exporter, "
               f"opset {opset}; input video (batch, 3, {result['metadata']['num_frames']}, "
               f"{result['metadata']['image_size']}, {result['metadata']['image_size']}), output logits "
               f"(batch, {result['metadata']['num_classes']}))")
    check = result["verification"]
    if check is not None:
        skipped = f"; {len(check['skipped'])} video(s) could not be decoded" if check["skipped"] else ""
        typer.echo(f"verified with onnxruntime: max |ONNX - PyTorch| = {check['max_abs_diff']:.3g} "
                   f"<= tolerance {check['tolerance']:g} on {check['clips']} clip(s), batch sizes "
                   f"{', '.join(map(str, check['batch_sizes']))}{skipped}")
