"""`stadapt finetune-transfer --from RUN --dataset ucf101|hmdb51 --root DIR`: K400 -> UCF/HMDB, all splits."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.logs import quiet_option


def finetune_transfer(
    source: Path = typer.Option(None, "--from", help="The Kinetics-400 run of any tuning method (or "
                                                     "checkpoint, or hf-hub:ORG/NAME) to start "
                                                     "from; default: the latest run under ./runs."),
    dataset: str = typer.Option(..., "--dataset", help="ucf101 or hmdb51."),
    root: Path = typer.Option(..., "--root", help="The data set as published (ucfTrainTestlist/ + UCF-101/, or "
                                                  "testTrainMulti_7030_splits/ + per-class folders)."),
    splits: str = typer.Option("1,2,3", "--splits", help="Official splits to run, e.g. 1,2,3 or 1."),
    out: Path = typer.Option(None, "--out", help="Directory for the prepared splits, runs and transfer.json; "
                                                 "default: runs/<source>_to_<dataset>."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                          help="Recipe overrides for every split, e.g. optim.micro_batch=16."),
    check: bool = typer.Option(False, "--check", help="Decode-check every video while preparing (quarantine)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Train every split again, replacing the split runs "
                                                              "that exist (without it, a re-run continues)."),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="Also score each split's test list zero-shot with "
                                                            "the source backbone's own text tower, before any "
                                                            "training on it (needs an image-text backbone), and, "
                                                            "for a source run with a frozen text head, with that "
                                                            "run over the target's class names."),
    labels: str = typer.Option(None, "--labels", metavar="FILE|a,b,...",
                               help="With --zero-shot: the classes as text, one a line in the data set's class "
                                    "order (e.g. 'apply eye makeup' for ApplyEyeMakeup); default: their names."),
    quiet: bool = quiet_option(help="No progress bars; the console shows warnings only."),
) -> None:
    """Transfer a Kinetics-400 model to UCF-101 or HMDB-51 as the paper does: new head, the source's
    tuning method started from what it trained (adapters at 1/10 learning rate and weight decay), 500 steps
    at batch 128, stride 8, 2x3 test views; prints per-split and mean top-1 and writes transfer.json.

    Re-running the same command picks up where it stopped: finished splits are read back, not retrained;
    an interrupted split continues from its last checkpoint; a changed setting is refused."""
    from stadapt.errors import StadaptError
    from stadapt.tools.transfer import finetune_transfer as run_transfer
    from stadapt.tools.transfer import format_summary

    try:
        chosen = [int(s) for s in splits.split(",") if s.strip()]
    except ValueError:
        raise StadaptError(f"--splits {splits!r} is not a comma-separated list of numbers",
                           "e.g. --splits 1,2,3") from None
    summary = run_transfer(source, dataset=dataset, root=root, splits=chosen, out=out, overrides=overrides or [],
                           check=check, progress=not quiet, overwrite=overwrite, zero_shot=zero_shot,
                           labels=labels)
    stopped = summary.get("interrupted")
    if stopped:
        import shlex
        import signal
        import sys

        again = [arg for arg in sys.argv[1:] if arg != "--overwrite"]  # --overwrite would start again
        typer.echo(f"interrupted by {stopped['by']} in split {stopped['split']} at step {stopped['step']} of "
                   f"{stopped['steps']}; re-run the command to continue: stadapt {shlex.join(again)}")
        raise typer.Exit(128 + int(getattr(signal, str(stopped["by"]), signal.SIGTERM)))
    typer.echo(format_summary(summary))
