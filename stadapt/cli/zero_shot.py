"""`stadapt zero-shot VIDEOS... --backbone PLUGIN:VARIANT --labels ...`: classify videos by label texts with an
image-text backbone's own text tower, no training; predict's output over files, eval's report over a list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def zero_shot(
    videos: list[str] = typer.Argument(None, help="Video files, folders (their videos, recursively), glob "
                                                  "patterns ('clips/*.mp4') or lists (one `path [label]` a line); "
                                                  "or none with --data and --list."),
    backbone: str = typer.Option(..., "--backbone", help="An image-text backbone, PLUGIN:VARIANT (e.g. "
                                                         "clip:ViT-B-16, clip:ViT-B-16-SigLIP)."),
    weights: str = typer.Option(None, "--weights", help="Its pretrained tag (e.g. openai) or a local file holding "
                                                        "both towers (a full open_clip state dict)."),
    labels: str = typer.Option(None, "--labels", help="The labels, 'a,b,c', or a file with one label a line; "
                                                      "with --data: one per class of classes.txt (default: "
                                                      "classes.txt's names)."),
    templates: list[str] = typer.Option(None, "--template", help="A prompt with {} where the label goes; "
                                                                 "repeat it to average several (prompt "
                                                                 "ensembling). Default: 'a video of {}.'"),
    views: str = typer.Option("1x1", "--views", help="TxS test views whose probabilities are averaged."),
    frames: int = typer.Option(8, "--frames", min=1, help="Frames per clip, averaged into the video embedding."),
    sampling: str = typer.Option("segment", "--sampling", help="segment (frames spread over the whole video) "
                                                               "or stride (--stride apart)."),
    stride: int = typer.Option(4, "--stride", min=1, help="With --sampling stride: frames between samples."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="How many labels to show per video."),
    data: Path = typer.Option(None, "--data", "--root", help="A prepared data directory: score --list on it and "
                                                             "write eval's report instead of predictions."),
    data_list: Path = typer.Option(None, "--list", help="With --data: the 'path label' list to score."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per video, one per line."),
    out: Path = typer.Option(None, "--out", help="Write the predictions to FILE.csv or FILE.jsonl (predict's "
                                                 "format); with --data, the report FILE.json (default: eval.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a file stadapt wrote at --out."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Videos per batch (each with all its views)."),
    workers: int = typer.Option(None, "--workers", min=0, help="DataLoader workers decoding videos; default: "
                                                               "none for one video, else up to 4."),
    max_clips: int = typer.Option(None, "--max-clips", min=1, help="At most this many clips per forward pass."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Zero-shot classification: each video's embedding (the mean of its frames' image embeddings) against
    the text embeddings of the labels filled into the templates; softmax over the labels (SigLIP: a sigmoid
    per label), averaged over the views. No training: the backbone's own image and text towers."""
    from stadapt.data.inputs import expand_inputs
    from stadapt.inference.zero_shot import load_zero_shot, read_labels, zero_shot_spec
    from stadapt.runtime.views import parse_views

    _check_inputs(videos, data, data_list, labels)
    found: list[Path] = expand_inputs(videos) if data is None else []  # inputs named before any model is built
    label_list = read_labels(labels) if labels is not None else _classes(data)
    outputs = _claim(out, overwrite, data is not None)  # refuse a bad --out before any work
    model = load_zero_shot(backbone, weights, label_list, templates or [], device=device,
                           text_cache=_claim_text_cache(outputs[0]) if outputs else None)
    spec = zero_shot_spec(model, frames=frames, sampling=sampling, stride=stride, views=parse_views(views))
    run = {"batch_size": batch_size, "workers": workers, "max_clips": max_clips, "progress": not quiet}
    if data is not None:
        _evaluate(model, spec, data, data_list, outputs[0], run)
    else:
        _predict(model, spec, found, outputs[0] if outputs else None, overwrite, as_json, top_k, run)


def _check_inputs(videos: list[str] | None, data: Path | None, data_list: Path | None, labels: str | None) -> None:
    """Videos or a prepared list, not both, not neither; labels for videos."""
    from stadapt.errors import StadaptError

    if data is not None and videos:
        raise StadaptError("give videos or --data with --list, not both", "drop the videos or --data")
    if data is None and data_list is not None:
        raise StadaptError("--list needs --data, the prepared data directory it belongs to", "add --data ROOT")
    if data is None and not videos:
        raise StadaptError("no videos given", "name video files, folders or lists, or --data ROOT --list FILE")
    if data is not None and data_list is None:
        raise StadaptError("--data needs --list, the 'path label' list to score", "add --list test.txt")
    if data is None and labels is None:
        raise StadaptError("no labels given", "pass --labels 'label one,label two' or a file with one label a line")


def _classes(data: Path | None) -> list[str]:
    """The class names of a prepared data directory: its default labels."""
    from stadapt.data.prepared import open_prepared

    assert data is not None
    return open_prepared(data).classes


def _claim(out: Path | None, overwrite: bool, report: bool) -> list[Path]:
    """The files this command writes, checked before any work: predictions at --out, or eval's report (default
    ./eval.json) with its predictions CSV and confusion PNG. A file stadapt did not write is never replaced."""
    from stadapt.errors import StadaptError
    from stadapt.fileio import claim_outputs
    from stadapt.inference.evaluate import report_by_stadapt, report_paths
    from stadapt.inference.predict import write_predictions

    if report:
        out = Path("eval.json") if out is None else out
        if out.suffix.lower() != ".json":
            raise StadaptError(f"--out {out}: with --data the report is JSON", "name it FILE.json")
        claim_outputs(report_paths(out), overwrite=overwrite, ours=report_by_stadapt)
        return [out]
    if out is None:
        return []
    from stadapt.cli.predict import predictions_by_stadapt

    write_predictions([], out, overwrite=True, check_only=True)
    claim_outputs([out], overwrite=overwrite, ours=predictions_by_stadapt)
    return [out]


def _claim_text_cache(out: Path) -> Path:
    """OUT.text.safetensors, where the label set's text embeddings are kept for the next run: a file stadapt
    did not write there is refused before any work; one it wrote is read, or replaced for other labels."""
    from stadapt.fileio import claim_outputs
    from stadapt.model.text_cache import text_cache_by_stadapt, text_cache_path

    cache = text_cache_path(out)
    claim_outputs([cache], overwrite=True, ours=text_cache_by_stadapt)
    return cache


def _evaluate(model: Any, spec: Any, data: Path, data_list: Path | None, out: Path, run: dict[str, Any]) -> None:
    """eval's report of the list, and eval's table."""
    from stadapt.cli.interrupt import interrupt_says
    from stadapt.inference.evaluate import format_table, report_paths
    from stadapt.inference.zero_shot import zero_shot_eval

    assert data_list is not None
    with interrupt_says(report_paths(out), f"the report, {out}, is written once every video is done"):
        report = zero_shot_eval(data, data_list, model, spec, out, **run)
    typer.echo(format_table(report))
    typer.echo(f"\nwrote {out} (+ {out.with_suffix('.predictions.csv').name}, "
               f"{out.with_suffix('.confusion.png').name})")


def _predict(model: Any, spec: Any, found: list[Path], out: Path | None, overwrite: bool, as_json: bool, top_k: int,
             run: dict[str, Any]) -> None:
    """predict's output for the videos: printed, as JSON lines, or written to --out (CSV / JSONL)."""
    from stadapt.cli.interrupt import interrupt_says
    from stadapt.cli.predict import show_predictions
    from stadapt.inference.predict import write_predictions
    from stadapt.inference.zero_shot import zero_shot_videos

    with interrupt_says([out] if out is not None else [], "the predictions are written once every video is done"):
        results = zero_shot_videos(found, model, spec, top_k=top_k, **run)
        if out is not None:
            write_predictions(results, out, overwrite=overwrite)
    show_predictions(results, out, as_json)
