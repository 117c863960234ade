"""`stadapt predict VIDEO...`: top-k classes with probabilities, from a checkpoint or an ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def predict(
    videos: list[Path] = typer.Argument(..., help="Video files."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A run or checkpoint directory, or "
                                                               "hf-hub:ORG/NAME[@REV]; default: the latest "
                                                               "run under ./runs."),
    onnx: Path = typer.Option(None, "--onnx", help="An exported model (`stadapt export --onnx`) instead."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="How many classes to show per video."),
    views: str = typer.Option(None, "--views", help="TxS views to average; default: the training recipe's."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (checkpoints only)."),
    backbone_weights: str = typer.Option(None, "--backbone-weights", help="Where the backbone weights are now."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per video, one per line."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (the run's: bf16 autocast and a 16-bit frozen backbone on GPUs that "
                                       "trained so; float32 on the CPU), fp32, bf16, fp16 (CUDA); checkpoints only."),
) -> None:
    """Predict the classes of video files: the top-k classes and their probabilities (mean of per-view
    softmax). An undecodable video gets an error line; the others are still predicted."""
    from stadapt.predict import predict_videos

    results = predict_videos(videos, checkpoint=checkpoint, onnx=onnx, top_k=top_k, views=views, device=device,
                             backbone_weights=backbone_weights, precision=precision)
    for result in results:
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False))
        elif "error" in result:
            typer.echo(f"{result['video']}\n  error: {result['error']}")
        else:
            lines = [f"  {100 * t['probability']:5.1f}%  {t['class']}" for t in result["top"]]
            typer.echo("\n".join([result["video"], *lines]))
    if any("error" in r for r in results):
        raise typer.Exit(1)
