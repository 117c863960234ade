"""`stadapt merge`: fold a method's linear modules into the backbone's weights (ZeroI2V, LoRA, DoRA)."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.evaluate import WHICH_HELP


def merge(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", show_default=False,
                                      help="A run or checkpoint directory, or hf-hub:ORG/NAME[@REV]."),
    out: Path = typer.Option(..., "--out", help="The merged checkpoint directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    which: str = typer.Option(None, "--which", help=WHICH_HELP),
    backbone_weights: str = typer.Option(None, "--backbone-weights",
                                         help="Where the backbone weights are now, if they moved."),
) -> None:
    """Merge a checkpoint's tuning method into its backbone: the merged model gives the same logits (checked,
    <= 1e-4, on a probe clip after loading it back) at the bare backbone's cost, with the merged backbone
    written beside it. `stadapt methods` says which methods merge."""
    from stadapt.runs.lookup import resolve_target
    from stadapt.tools.merge import merge_checkpoint

    ckpt, _ = resolve_target(checkpoint, which)
    result = merge_checkpoint(ckpt, out=out, overwrite=overwrite, backbone_weights=backbone_weights)
    typer.echo(f"merged tuning={result.tuning} into the backbone: {result.parameters_before:,} -> "
               f"{result.parameters_after:,} parameters; logits max |diff| {result.max_abs_diff:.1e} on a probe "
               f"clip; wrote {result.out}")
