"""`stadapt extract-features INPUTS... --checkpoint C --out FILE`: pooled (and per-frame) video features."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.evaluate import WHICH_HELP


def extract_features(
    videos: list[str] = typer.Argument(..., help="Video files, folders (their videos, recursively), glob "
                                                 "patterns ('clips/*.mp4') or lists (one `path [label]` a line)."),
    out: Path = typer.Option(..., "--out", help="FILE.safetensors or FILE.npy (+ FILE.json with the video paths)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A run or checkpoint directory, or "
                                                               "hf-hub:ORG/NAME[@REV]; default: the latest "
                                                               "run under ./runs."),
    which: str = typer.Option(None, "--which", help=WHICH_HELP),
    per_frame: bool = typer.Option(False, "--per-frame", help="Also the per-frame features, (views, frames, "
                                                              "width) per video."),
    views: str = typer.Option(None, "--views", help="TxS views to average; default: the training recipe's."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Videos per batch (each with all its views)."),
    workers: int = typer.Option(None, "--workers", min=0, help="DataLoader workers decoding videos; default: "
                                                               "none for one video, else up to 4."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    backbone_weights: str = typer.Option(None, "--backbone-weights", help="Where the backbone weights are now."),
    precision: str = typer.Option("auto", "--precision", help="auto (the run's; float32 on the CPU), fp32, bf16, "
                                                              "fp16 (CUDA)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a features file stadapt wrote at --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """One pooled feature vector per video (the model's features before the head, averaged over the test
    views), rows in input order. A video that cannot be decoded gets no row: it is listed on stderr and in
    the file's metadata (exit status 1)."""
    from stadapt.data.inputs import expand_inputs
    from stadapt.inference.features import check_out, extract_features, write_features

    found = expand_inputs(videos)
    check_out(out, overwrite=overwrite, per_frame=per_frame)
    features = extract_features(found, checkpoint, which=which, per_frame=per_frame, views=views, device=device,
                                backbone_weights=backbone_weights, precision=precision, batch_size=batch_size,
                                workers=workers, progress=not quiet)
    for bad in features.bad_videos:
        typer.echo(f"skipped {bad['video']}: {bad['error']}", err=True)
    written = write_features(features, out)
    typer.echo(f"wrote {', '.join(map(str, written))}: {len(features.videos)} video(s) x "
               f"{features.pooled.shape[1]} features, {len(features.bad_videos)} skipped")
    if features.bad_videos:
        raise typer.Exit(1)
