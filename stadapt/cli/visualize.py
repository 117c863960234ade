"""`stadapt visualize VIDEO --checkpoint RUN`: [CLS] attention before and after adaptation, as a PNG."""

from __future__ import annotations

from pathlib import Path

import typer

from stadapt.cli.evaluate import WHICH_HELP


def visualize(
    video: Path = typer.Argument(..., help="The video file to show."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A run or checkpoint directory, or "
                                                               "hf-hub:ORG/NAME[@REV]; "
                                                               "default: the latest run under ./runs."),
    out: Path = typer.Option(None, "--out", help="The PNG to write; default: VIDEO_STEM.attention.png here."),
    backbone_weights: str = typer.Option(None, "--backbone-weights",
                                         help="Where the backbone weights are now, if they moved."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the PNG if it exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (the run's: bf16 autocast and a 16-bit frozen backbone on GPUs that "
                                       "trained so; float32 on the CPU), fp32, bf16, fp16 (CUDA)."),
    which: str = typer.Option(None, "--which", help=WHICH_HELP),
) -> None:
    """Show where the last block's [CLS] token looks, before adaptation (the plain image model: the
    backbone as its weights were loaded, without the tuning method) and after (the adapted model),
    overlaid on the clip's frames (the paper's Figure 1): rows = frame / before / after, one column per
    frame; the title names the predicted class. A method that changes the attention itself, or a merged
    checkpoint, is refused."""
    from stadapt.fileio import claim_outputs, png_by_stadapt
    from stadapt.tools.visualize import visualize as run_visualize

    target = out if out is not None else Path(f"{Path(video).stem}.attention.png")  # the library's default
    claim_outputs([target], overwrite=overwrite, ours=png_by_stadapt)

    written = run_visualize(video, checkpoint, out, backbone_weights=backbone_weights, device=device,
                            overwrite=overwrite, precision=precision, which=which)
    if not quiet:
        typer.echo(f"wrote {written}")
