"""`stadapt eval [RUN_OR_CHECKPOINT] --views TxS`: multi-view testing with a report."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    target: Path = typer.Argument(None, help="A run directory or a checkpoint directory; default: the latest "
                                             "run under ./runs."),
    views: str = typer.Option(None, "--views", help="TxS: temporal x spatial views (S = 1 centre or 3 crops), "
                                                    "e.g. 1x3, 3x1; default: the recipe's data.views."),
    data_list: Path = typer.Option(None, "--list", help="A 'path label' list to evaluate; default: the run's "
                                                        "validation list."),
    root: Path = typer.Option(None, "--root", help="The prepared data directory (classes.txt); default: the run's."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Videos per forward pass (each with all views)."),
    workers: int = typer.Option(None, "--workers", min=0, help="DataLoader workers; default: the recipe's."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    backbone_weights: str = typer.Option(None, "--backbone-weights",
                                         help="Where the backbone weights are now, if they moved."),
    out: Path = typer.Option(None, "--out", help="Where to write the JSON report; default: RUN/eval.json."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate a trained model: softmax per view, averaged; top-1, top-5, per-class accuracy."""
    from stadapt.evaluate import format_table, run_eval

    report, written = run_eval(target, views=views, data_list=data_list, root=root, batch_size=batch_size,
                               workers=workers, device=device, backbone_weights=backbone_weights, out=out,
                               progress=not quiet)
    typer.echo(format_table(report))
    typer.echo(f"\nwrote {written}")
