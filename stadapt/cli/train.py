"""`stadapt train RECIPE [key=value ...]`: train (or --resume) the run a recipe describes."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    recipe: Path = typer.Argument(..., help="A recipe YAML file, e.g. recipes/synthetic_tiny.yaml."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...",
                                          help="Recipe overrides, e.g. optim.lr=1e-3 data.root=/data/k400."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the recipe's output.dir from its "
                                                        "last checkpoint (same recipe required)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run in output.dir and start again."),
    stop_after: int = typer.Option(None, "--stop-after", min=1, metavar="STEPS",
                                   help="Stop after this many steps (with a checkpoint), e.g. to fit a job's time "
                                        "limit; continue later with --resume."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train ST-Adapters (or a linear probe) on a frozen image backbone, as the recipe says."""
    from stadapt.errors import StadaptError
    from stadapt.recipe import describe_source, load_recipe

    if resume and overwrite:
        raise StadaptError("--resume and --overwrite contradict each other", "pass one of them")
    loaded = load_recipe(recipe, overrides or [])
    from stadapt.engine.loop import train as run_training

    result = run_training(loaded, source=describe_source(str(recipe), overrides or []), resume=resume,
                          overwrite=overwrite, progress=not quiet, stop_after=stop_after)
    if not result.extra["finished"]:
        typer.echo(f"stopped at step {result.steps} of {result.extra['total_steps']}; continue with: "
                   f"stadapt train {recipe} {' '.join(overrides or [])} --resume".replace("  ", " "))
        return
    val = result.final_val or {}
    top1 = val.get("top1")
    typer.echo(
        f"trained {result.steps} steps in {result.seconds:.0f}s; "
        f"val top-1 {'-' if top1 is None else f'{100 * top1:.1f}%'} ({val.get('videos', 0)} videos, "
        f"views {val.get('views', '-')})\n"
        f"run: {result.run_dir}  (evaluate: stadapt eval {result.run_dir} --views 1x3)"
    )
