"""`stadapt quickstart`: synthetic data, ST-Adapter vs linear probe, on the CPU, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.logs import quiet_option


def quickstart(
    out: Path = typer.Option(Path("."), "--out", help="Where the data (DIR/data/synthetic) and runs (DIR/runs) go."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data set and of training."),
    methods: str | None = typer.Option(
        None, "--methods", metavar="A,B,...",
        help="Train these installed tuning methods instead (comma-separated, e.g. st_adapter,aim,linear), each "
             "with its default settings on the same data, and print one table of them (`stadapt methods` lists "
             "the installed ones)."),
    heads: str | None = typer.Option(
        None, "--heads", metavar="H,...",
        help="Train each method with each of these classifier heads (linear, text: the class names' frozen text "
             "embeddings, text-trained: a linear head started from them); a text head adds the backbone's "
             "zero-shot score as the first row."),
    quiet: bool = quiet_option(help="No progress bars; the console shows warnings only."),
) -> None:
    """Train a tiny frozen image model with ST-Adapters and as a linear probe on synthetic motion
    clips, evaluate both, and print them side by side (also written to ./quickstart.json).
    Re-running reuses the data set and replaces the two quickstart runs. With --methods, the named
    methods instead, side by side in one table; with --heads, each with each classifier head."""
    from stadapt.tools.quickstart import format_summary, run_quickstart

    if methods is None and heads is None:
        summary = run_quickstart(out, seed=seed, progress=not quiet)
        typer.echo(format_summary(summary))
        return
    from stadapt.tools.quickstart.methods import format_methods, parse_heads, parse_methods

    summary = run_quickstart(out, seed=seed, progress=not quiet,
                             methods=parse_methods(methods) if methods is not None else None,
                             heads=parse_heads(heads) if heads is not None else None)
    typer.echo(format_methods(summary))
