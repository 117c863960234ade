"""`stadapt import-checkpoint`: convert a reference ST-Adapter checkpoint into a stadapt checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer


def import_checkpoint(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="The checkpoint file, e.g. checkpoint-11.pth."),
    backbone_weights: str = typer.Option(..., "--backbone-weights",
                                         help="The backbone it was trained on: a local file (e.g. OpenAI's "
                                              "ViT-B-16.pt) or a pretrained tag where a network exists."),
    backbone: str = typer.Option("clip:ViT-B-16", "--backbone", help="PLUGIN:VARIANT, see `stadapt backbones`."),
    out: Path = typer.Option(..., "--out", help="The stadapt checkpoint directory to write."),
    fmt: str = typer.Option("official", "--format", help="Checkpoint format: official (linziyi96/st-adapter)."),
    num_frames: int = typer.Option(8, "--num-frames", min=1, help="Frames per clip the model was trained on."),
    classes: Path = typer.Option(None, "--classes", help="classes.txt: one class name a line, index = line."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    dataset: str = typer.Option("k400", "--dataset",
                                help="What it was trained on, for the paper's test input: k400 (stride 128/frames, "
                                     "3x1 views) or ssv2 (segment sampling, 1x3 views)."),
    sampling: str = typer.Option(None, "--sampling", help="stride or segment, instead of the data set's."),
    stride: int = typer.Option(None, "--stride", min=1, help="Frame stride, instead of the data set's."),
    views: str = typer.Option(None, "--views", help="TxS test views, instead of the data set's (e.g. 3x1)."),
    option: list[str] = typer.Option(None, "--option", metavar="KEY=VALUE",
                                     help="A backbone build option (repeatable), as backbone.options in a recipe, "
                                          "e.g. quick_gelu=false. Without it the official format's activation, "
                                          "QuickGELU (OpenAI CLIP's), is used where the weights do not say it."),
) -> None:
    """Import a checkpoint of another implementation; `stadapt.load_model(OUT)` then loads it. The input
    settings (frame sampling, stride, test views) are recorded in it: eval and predict use them."""
    from stadapt.errors import StadaptError
    from stadapt.runtime.views import parse_views

    if fmt != "official":
        raise StadaptError(f"unknown checkpoint format '{fmt}'", "the supported format is: official")
    names = _read_classes(classes) if classes is not None else None
    from stadapt.recipe.overrides import parse_override

    options = {".".join(keys): value for keys, value in (parse_override(text) for text in option or [])}

    from stadapt.checkpoints.files import refuse_unless_replaceable
    from stadapt.checkpoints.format import read_checkpoint
    from stadapt.tools.interop.official import import_official

    refuse_unless_replaceable(out)  # a user's folder or file at --out: refused before any work, --overwrite or not

    written = import_official(checkpoint, backbone=backbone, backbone_weights=backbone_weights, out=out,
                              num_frames=num_frames, classes=names, overwrite=overwrite, dataset=dataset,
                              sampling=sampling, stride=stride, views=parse_views(views) if views else None,
                              backbone_options=options, notify=lambda line: typer.echo(line, err=True))
    meta, _ = read_checkpoint(written)
    model, counts, spec = meta["model"], meta["parameters"], meta["input"]
    adapter = model["adapter"]
    blocks = adapter["blocks"]
    typer.echo(
        f"imported {checkpoint} -> {written}\n"
        f"  backbone   {model['backbone']} {model['backbone_options']}\n"
        f"  adapters   {'+'.join(adapter['positions'])} in {len(blocks)} blocks, bottleneck {adapter['bottleneck']}, "
        f"kernel {'x'.join(map(str, adapter['kernel']))}\n"
        f"  classes    {model['num_classes']}\n"
        f"  input      {spec['frames']} frames, {spec['sampling']} sampling"
        f"{'' if spec['sampling'] == 'segment' else ' stride ' + str(spec['stride'])}, "
        f"views {spec['temporal_views']}x{spec['spatial_views']}, {spec['image_size']} px\n"
        f"  parameters {counts['total']:,} total, {counts['trainable']:,} trainable\n"
        f"load it with: stadapt.load_model({str(written)!r})"
    )


def _read_classes(path: Path) -> list[str]:
    from stadapt.data.textfile import read_lines
    from stadapt.errors import StadaptError

    lines = read_lines(path, "class list", "pass a UTF-8 text file, one class a line")
    names = [line.strip() for line in lines if line.strip()]
    if len(set(names)) != len(names):
        raise StadaptError(f"class list {path} names a class twice")
    return names
