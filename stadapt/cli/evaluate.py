"""`stadapt eval [RUN_OR_CHECKPOINT] --views TxS`: multi-view testing with a report."""

from __future__ import annotations

from pathlib import Path

import typer

WHICH_HELP = ("Of a run: best (its best validation top-1) or last (the newest); default: best when the run "
              "keeps one, else last (the choice is printed).")


def evaluate(
    target: Path = typer.Argument(None, help="A run or checkpoint directory, or hf-hub:ORG/NAME[@REV]; default: "
                                             "the latest "
                                             "run under ./runs."),
    views: str = typer.Option(None, "--views", help="TxS: temporal x spatial views (S = 1: the centre crop; S > 1: "
                                                    "crops spread along the long side), e.g. 1x3, 3x1; default: "
                                                    "the recipe's data.views."),
    data_list: Path = typer.Option(None, "--list", help="A 'path label' list to evaluate; default: the run's "
                                                        "validation list."),
    root: Path = typer.Option(None, "--root", help="The prepared data directory (classes.txt); default: the run's."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Videos decoded per batch (each with all views)."),
    max_clips: int = typer.Option(None, "--max-clips", min=1,
                                  help="At most this many clips (views) per forward pass, to bound memory; "
                                       "default: a whole batch."),
    workers: int = typer.Option(None, "--workers", min=0, help="DataLoader workers; default: the recipe's."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    backbone_weights: str = typer.Option(None, "--backbone-weights",
                                         help="Where the backbone weights are now, if they moved."),
    out: Path = typer.Option(None, "--out", help="Where to write the JSON report (+ OUT.predictions.csv, "
                                                 "OUT.confusion.png); default: RUN/eval.json."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a report stadapt wrote at --out (the default "
                                                              "RUN/eval.json is always replaced)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (the run's: bf16 autocast and a 16-bit frozen backbone on GPUs that "
                                       "trained so; float32 on the CPU), fp32, bf16, fp16 (CUDA)."),
    which: str = typer.Option(None, "--which", help=WHICH_HELP),
    labels: str = typer.Option(None, "--labels", help="Evaluate over another label set, a file with one label a "
                                                      "line that the list's labels index into: a run trained "
                                                      "with a frozen text head (model.head.type: text)."),
) -> None:
    """Evaluate a trained model: softmax per view, averaged; top-1, top-5, per-class accuracy; writes
    eval.json, eval.predictions.csv and eval.confusion.png. Under torchrun the videos are split over
    the processes."""
    from stadapt.cli.interrupt import interrupt_says
    from stadapt.inference.evaluate import format_table, report_paths, run_eval
    from stadapt.runtime.distributed import shutdown, world_from_env

    report_path = _report_path(target, which, out)
    try:
        with interrupt_says(report_paths(report_path) if report_path else [],
                            f"the report{f', {report_path},' if report_path else ''} is written once every video "
                            "is done"):
            report, written = run_eval(target, views=views, data_list=data_list, root=root, batch_size=batch_size,
                                       workers=workers, device=device, backbone_weights=backbone_weights, out=out,
                                       progress=not quiet, max_clips=max_clips, precision=precision, which=which,
                                       overwrite=overwrite, labels=labels)
    finally:
        shutdown(world_from_env())
    if world_from_env().main:
        typer.echo(format_table(report))
        typer.echo(f"\nwrote {written} (+ {written.with_suffix('.predictions.csv').name}, "
                   f"{written.with_suffix('.confusion.png').name})")


def _report_path(target: Path | None, which: str | None, out: Path | None) -> Path | None:
    """Where this eval writes its report (run_eval's rule), for the line a Ctrl-C prints; None where the
    target is refused (run_eval then says why)."""
    from stadapt.checkpoints.hub import output_home
    from stadapt.errors import StadaptError
    from stadapt.runs.lookup import resolve_target

    if out is not None:
        return out
    try:
        checkpoint, run = resolve_target(target, which, announce=False)
    except StadaptError:
        return None
    return (run if run is not None else output_home(checkpoint)) / "eval.json"
