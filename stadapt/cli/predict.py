"""`stadapt predict INPUTS...`: top-k classes with probabilities, from a checkpoint or an ONNX model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from stadapt.cli.evaluate import WHICH_HELP
from stadapt.cli.interrupt import interrupt_says


def predict(
    videos: list[str] = typer.Argument(..., help="Video files, folders (their videos, recursively), glob "
                                                 "patterns ('clips/*.mp4') or lists (one `path [label]` a line)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A run or checkpoint directory, or "
                                                               "hf-hub:ORG/NAME[@REV]; default: the latest "
                                                               "run under ./runs."),
    which: str = typer.Option(None, "--which", help=WHICH_HELP),
    onnx: Path = typer.Option(None, "--onnx", help="An exported model (`stadapt export --onnx`) instead."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="How many classes to show per video."),
    views: str = typer.Option(None, "--views", help="TxS views to average; default: the training recipe's."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (checkpoints only)."),
    backbone_weights: str = typer.Option(None, "--backbone-weights", help="Where the backbone weights are now."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per video, one per line."),
    out: Path = typer.Option(None, "--out", help="Write the predictions to FILE.csv or FILE.jsonl (with class "
                                                 "names) instead of printing them."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Videos per batch (each with all its views)."),
    workers: int = typer.Option(None, "--workers", min=0, help="DataLoader workers decoding videos; default: "
                                                               "none for one video, else up to 4."),
    max_clips: int = typer.Option(None, "--max-clips", min=1, help="At most this many clips per forward pass."),
    labels: str = typer.Option(None, "--labels", help="Answer over these labels, 'a,b,c' or a file with one label "
                                                      "a line, instead of the trained classes: a run trained "
                                                      "with a frozen text head (model.head.type: text)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (the run's: bf16 autocast and a 16-bit frozen backbone on GPUs that "
                                       "trained so; float32 on the CPU), fp32, bf16, fp16 (CUDA); checkpoints only."),
) -> None:
    """Predict the classes of videos: the top-k classes and their probabilities (mean of per-view
    softmax). An undecodable video gets an error line (exit status 1); the others are still predicted."""
    from stadapt.data.inputs import expand_inputs
    from stadapt.fileio import claim_outputs
    from stadapt.inference.predict import predict_videos, write_predictions

    found = expand_inputs(videos)
    if out is not None:  # refuse a bad --out before any work
        write_predictions([], out, overwrite=True, check_only=True)
        claim_outputs([out], overwrite=overwrite, ours=predictions_by_stadapt)
    with interrupt_says([out] if out is not None else [], "the predictions are written once every video is done"):
        results = predict_videos(found, checkpoint=checkpoint, onnx=onnx, top_k=top_k, views=views, device=device,
                                 backbone_weights=backbone_weights, precision=precision, which=which,
                                 batch_size=batch_size, workers=workers, max_clips=max_clips, progress=not quiet,
                                 labels=labels)
        if out is not None:
            write_predictions(results, out, overwrite=overwrite)
    show_predictions(results, out, as_json)


def show_predictions(results: list[dict[str, Any]], out: Path | None, as_json: bool) -> None:
    """predict's report: what was written to `out` (errors to stderr), or each video's top classes (as JSON
    lines with --json); exit status 1 when a video could not be predicted."""
    errors = sum("error" in r for r in results)
    if out is not None:
        typer.echo(f"wrote {out}: {len(results) - errors} video(s) predicted, {errors} error(s)")
        for result in results:
            if "error" in result:
                typer.echo(f"error: {result['error']}", err=True)
    for result in results if out is None else ():
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False))
        elif "error" in result:
            typer.echo(f"{result['video']}\n  error: {result['error']}")
        else:
            lines = [f"  {100 * t['probability']:5.1f}%  {t['class']}" for t in result["top"]]
            typer.echo("\n".join([result["video"], *lines]))
    if errors:
        raise typer.Exit(1)


def predictions_by_stadapt(path: Path) -> bool:
    """Whether `path` is a predictions file stadapt wrote: the CSV's header, or a JSON line per video."""
    from stadapt.fileio import first_line_is
    from stadapt.inference.predict import predictions_text

    if path.suffix.lower() == ".csv":
        return first_line_is(path, predictions_text([], ".csv").rstrip("\n"))
    try:
        with path.open("rb") as handle:
            row = json.loads(handle.readline() or b"{}")
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and "video" in row and ("top" in row or "error" in row)
