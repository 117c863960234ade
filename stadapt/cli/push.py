"""`stadapt push RUN_OR_CHECKPOINT --repo ORG/NAME`: a checkpoint and its model card to the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.evaluate import WHICH_HELP


def push(
    target: Path = typer.Argument(None, help="A run directory or a checkpoint directory; default: the latest run "
                                             "under ./runs."),
    repo: str = typer.Option(..., "--repo", help="The hub model repository, ORG/NAME (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    to_dir: Path = typer.Option(None, "--to-dir", help="Write exactly what would be uploaded into this folder "
                                                       "instead (new or empty, or an earlier --to-dir output)."),
    which: str = typer.Option(None, "--which", help=WHICH_HELP),
) -> None:
    """Upload a checkpoint (stadapt.json, trainable.safetensors), the eval.json of that checkpoint and a generated
    model card (README.md: backbone and weights source, adapters, classes, evaluation, recipe, how to load it)
    to the Hugging Face hub; then `stadapt.load_model("hf-hub:ORG/NAME")` and every --checkpoint take it."""
    from stadapt.tools.push import bundle, check_repo_id, upload, write_dir

    repo = check_repo_id(repo)
    if to_dir is not None:
        from stadapt.fileio import check_writable

        check_writable(to_dir)  # before the bundle is built and its notes printed
    files, report = bundle(target, repo, which)
    if report is None:
        typer.echo("note: no eval.json for this checkpoint, so the card states no evaluation (run `stadapt eval` "
                   "first to include it)", err=True)
    listing = ", ".join(f"{name} ({len(data) / 1e6:.2f} MB)" for name, data in files.items())
    if to_dir is not None:
        written = write_dir(files, to_dir, repo)
        typer.echo(f"wrote {written}: {listing}; what `stadapt push --repo {repo}` uploads")
        return
    url = upload(files, repo, private=private)
    typer.echo(f"uploaded {listing} to {url}\nload it with: stadapt.load_model(\"hf-hub:{repo}\")")
