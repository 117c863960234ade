"""`stadapt train RECIPE [key=value ...]`: train (or --resume) the run a recipe describes."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.logs import quiet_option


def train(
    recipe: Path = typer.Argument(..., help="A recipe YAML file, e.g. recipes/synthetic_tiny.yaml."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                          help="Recipe overrides, e.g. optim.lr=1e-3 data.root=/data/k400."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the recipe's output.dir from its "
                                                        "last checkpoint (same recipe required)."),
    auto_resume: bool = typer.Option(False, "--auto-resume",
                                     help="Continue the run if output.dir holds one, else start it (for jobs that "
                                          "may be preempted and restarted with the same command)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the run in output.dir and start again (only what stadapt wrote; "
                                        "a folder that holds other files is refused)."),
    stop_after: int = typer.Option(None, "--stop-after", min=1, metavar="STEPS",
                                   help="Stop after this many steps (with a checkpoint), e.g. to fit a job's time "
                                        "limit; continue later with --resume."),
    quiet: bool = quiet_option(help="No progress bar; the console shows warnings only."),
) -> None:
    """Train ST-Adapters (or a baseline) on a frozen image backbone, as the recipe says.

    Multi-GPU: `torchrun --nproc_per_node N stadapt train RECIPE` (optim.batch_size is the global
    batch). SIGTERM or Ctrl-C stop after the current step with a checkpoint; --resume continues."""
    from stadapt.errors import StadaptError
    from stadapt.recipe import describe_source, load_recipe

    if (resume or auto_resume) and overwrite:
        raise StadaptError("--resume/--auto-resume and --overwrite contradict each other", "pass one of them")
    loaded = load_recipe(recipe, overrides or [])
    from stadapt.fileio import check_writable

    assert loaded.output.dir is not None  # load_recipe fills it in: runs/NAME
    check_writable(loaded.output.dir)  # before the model is built: a read-only output.dir is refused at once
    if "wandb" in loaded.train.loggers:  # refused before anything is built or written
        from stadapt.training.reporting import check_wandb

        check_wandb()
    import signal

    from stadapt.runtime.distributed import world_from_env
    from stadapt.training.loop import train as run_training

    result = run_training(loaded, source=describe_source(str(recipe), overrides or []), resume=resume,
                          auto_resume=auto_resume, overwrite=overwrite, progress=not quiet, stop_after=stop_after)
    main = world_from_env().main
    if not result.finished:
        why = f"interrupted by {result.interrupted}" if result.interrupted else "stopped"
        if main:
            typer.echo(f"{why} at step {result.steps} of {result.total_steps}; continue with: "
                       f"stadapt train {recipe} {' '.join(overrides or [])} --resume".replace("  ", " "))
        if result.interrupted:  # the conventional status of a job a signal ended
            name = result.interrupted
            raise typer.Exit(128 + int(getattr(signal, name, signal.SIGTERM)))
        return
    if not main:
        return
    val = result.final_val.to_dict() if result.final_val else {}
    top1 = val.get("top1")
    summary = (
        f"trained {result.steps} steps in {result.seconds:.0f}s; "
        f"val top-1 {'-' if top1 is None else f'{100 * top1:.1f}%'} ({val.get('videos', 0)} videos, "
        f"views {val.get('views', '-')})\n"
        f"run: {result.run_dir}  (evaluate: stadapt eval {result.run_dir} --views 1x3)"
    )
    typer.echo(summary)
    from stadapt.training.reporting import append_train_log

    append_train_log(Path(result.run_dir), summary)
