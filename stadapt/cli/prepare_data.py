"""`stadapt prepare-data FORMAT ...`: turn a data set into the prepared layout everything reads."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Write a data set in the prepared layout: classes.txt, 'path label' lists, manifest.json.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("synthetic")
def synthetic(
    out: Path = typer.Option(..., "--out", help="Directory to write (clips in videos/, lists, manifest)."),
    motions: str = typer.Option(",".join(("horizontal", "vertical", "scale")), "--motions",
                                help="Comma-separated motions, each a time-reversal pair of classes: "
                                     "horizontal, vertical, scale, rotation."),
    train_per_class: int = typer.Option(100, "--train-per-class", min=1, help="Training clips per class."),
    val_per_class: int = typer.Option(30, "--val-per-class", min=1, help="Validation clips per class."),
    frames: int = typer.Option(16, "--frames", min=2, help="Frames per clip."),
    size: int = typer.Option(48, "--size", min=16, help="Frame width and height in pixels (even)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same clips."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Small mp4 clips of objects moving over clutter, in time-reversal class pairs (moving left /
    right, up / down, growing / shrinking, rotating): a model that averages frames over time is at
    chance within each pair, so only temporal modelling can solve it."""
    from stadapt.data.synthetic import SyntheticSpec, prepare_synthetic

    spec = SyntheticSpec(motions=tuple(m.strip() for m in motions.split(",") if m.strip()),
                         train_per_class=train_per_class, val_per_class=val_per_class, frames=frames, size=size,
                         seed=seed)
    manifest = prepare_synthetic(out, spec, overwrite=overwrite, progress=not quiet)
    splits = ", ".join(f"{name} {info['count']}" for name, info in manifest["splits"].items())
    typer.echo(f"wrote {out}: {manifest['num_classes']} classes; {splits} clips")
