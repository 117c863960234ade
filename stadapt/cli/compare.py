"""`stadapt compare RUN...`: trained runs side by side (method, top-1/top-5, parameters, GFLOPs, clips/s, training
memory) in one table and one PNG."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from stadapt.cli.logs import quiet_option


def compare(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", help="Run folders (`stadapt train` wrote them)."),
    png: Path = typer.Option(Path("compare.png"), "--png", metavar="FILE",
                             help="The figure: top-1 against trainable parameters and against clips/s."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON instead of the table."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --png file stadapt wrote before."),
    which: str = typer.Option(None, "--which", help="best or last checkpoint of each run. Default: best when the "
                                                    "run keeps one, else last (what `stadapt eval` takes)."),
    device: str = typer.Option("auto", "--device", help="Where GFLOPs and clips/s are measured: auto, cpu, cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16 (autocast) for the timing."),
    batch: int = typer.Option(None, "--batch", min=1, help="Clips per timed forward pass. Default: 16 on CUDA, 2 on "
                                                           "the CPU."),
    timed: int = typer.Option(3, "--runs", min=1, help="Timed forward passes per run (the median is reported)."),
    measure_memory: bool = typer.Option(False, "--measure-memory",
                                        help="Measure each run's training memory here, as bench-train does (one "
                                             "step of its model config with its memory settings; a fresh process "
                                             "per run on the CPU), instead of the peak the run logged."),
    micro_batch: int = typer.Option(None, "--micro-batch", min=1,
                                    help="With --measure-memory: clips per step. Default: the run's micro-batch."),
    quiet: bool = quiet_option(help="No progress bar."),
) -> None:
    """Compare trained runs, one row each: method, backbone, frames, top-1 / top-5 (the run's eval.json; "-" when
    it was not evaluated), trainable and total parameters (its checkpoint), GFLOPs per clip and clips/s of its
    model measured here (random backbone weights, so no download), and the peak training memory the run logged.
    Writes a PNG of top-1 against trainable parameters and against clips/s (--png, default compare.png; an
    existing one only with --overwrite)."""
    from stadapt.errors import StadaptError
    from stadapt.fileio import claim_outputs, png_by_stadapt
    from stadapt.tools.compare import comparison_figure, format_comparison, measure_runs, read_runs
    from stadapt.vocabulary import PRECISIONS

    if precision not in PRECISIONS:
        raise StadaptError(f"unknown --precision {precision!r}", f"choose one of: {', '.join(PRECISIONS)}")
    rows = read_runs([str(run) for run in runs], which)  # bad input refused before anything is measured
    claim_outputs([png], overwrite=overwrite, ours=png_by_stadapt, where="--png")
    report = measure_runs(rows, device=device, precision=precision, batch=batch, runs=timed, progress=not quiet,
                          measure_memory=measure_memory, micro_batch=micro_batch)
    comparison_figure(report, png)
    report["png"] = str(png)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        typer.echo(f"wrote {png}", err=True)
    else:
        typer.echo(format_comparison(report))
        typer.echo(f"wrote {png}")
