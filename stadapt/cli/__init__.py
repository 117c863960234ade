"""The `stadapt` command: a thin Typer layer over the library, one small module per subcommand.

Subcommand modules import torch and plugins inside their functions, so `stadapt --help` is instant.
User errors (StadaptError) print one line and exit non-zero without a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import typer

from stadapt import __version__
from stadapt.cli import (
    backbones,
    bench,
    bench_data,
    bench_train,
    compare,
    evaluate,
    export,
    extract_features,
    import_checkpoint,
    logs,
    merge,
    methods,
    predict,
    prepare_data,
    push,
    quickstart,
    recipe,
    train,
    transfer,
    visualize,
    zero_shot,
)
from stadapt.errors import StadaptError

app = typer.Typer(
    name="stadapt",
    help="Adapt frozen image foundation models to video with ST-Adapters (Pan et al., NeurIPS 2022).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stadapt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages too."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Show warnings and errors only."),
) -> None:
    """Adapt frozen image foundation models to video with ST-Adapters."""
    if verbose or quiet:
        logs.set_level(logging.DEBUG if verbose else logging.WARNING)


app.command("quickstart")(quickstart.quickstart)
app.add_typer(prepare_data.app, name="prepare-data")
app.command("train", context_settings={"allow_interspersed_args": True})(train.train)
app.command("eval")(evaluate.evaluate)
app.command("bench")(bench.bench)
app.command("bench-data")(bench_data.bench_data)
app.command("bench-pipeline")(bench_data.bench_pipeline)
app.command("bench-train")(bench_train.bench_train)
app.command("compare")(compare.compare)
app.command("export")(export.export)
app.command("merge")(merge.merge)
app.command("predict")(predict.predict)
app.command("zero-shot")(zero_shot.zero_shot)
app.command("extract-features")(extract_features.extract_features)
app.command("visualize")(visualize.visualize)
app.command("finetune-transfer", context_settings={"allow_interspersed_args": True})(transfer.finetune_transfer)
app.command("backbones")(backbones.backbones)
app.command("methods")(methods.methods)
app.command("import-checkpoint")(import_checkpoint.import_checkpoint)
app.command("push")(push.push)
app.add_typer(recipe.app, name="recipe")


# what the OS says when a place cannot take a file: the user's to fix, so one line (a write stadapt knows of
# says more, through stadapt.fileio; this catches the rest)
_PLACE_ERRNOS = {errno.EACCES: "check the path, or choose one you may read and write",
                 errno.EPERM: "check the path, or choose one you may read and write",
                 errno.EROFS: "choose an output place on a writable file system",
                 errno.ENOSPC: "free some space and run the command again",
                 errno.EDQUOT: "free some space (your quota is full) and run the command again"}


def main() -> None:
    """Console-script entry point."""
    logs.install()
    try:
        app()
    except StadaptError as exc:
        print(f"stadapt: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        if exc.errno not in _PLACE_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"stadapt: error: {where}{(exc.strerror or os.strerror(exc.errno)).lower()}; "
              f"{_PLACE_ERRNOS[exc.errno]}", file=sys.stderr)
        raise SystemExit(2) from None
