"""`stadapt import-checkpoint`: convert a checkpoint of another implementation (the reference ST-Adapter's,
AIM's, ZeroI2V's) into a stadapt checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer


def import_checkpoint(
    checkpoint_arg: Path = typer.Argument(None, metavar="CHECKPOINT", show_default=False,
                                          help="The checkpoint file (or --checkpoint)."),
    checkpoint_opt: Path = typer.Option(None, "--checkpoint", help="The checkpoint file, e.g. checkpoint-11.pth."),
    backbone_weights: str = typer.Option(None, "--backbone-weights",
                                         help="official: the backbone it was trained on, a local file (e.g. "
                                              "OpenAI's ViT-B-16.pt) or a pretrained tag where a network exists. "
                                              "aim, zeroi2v: not taken (the checkpoint holds its CLIP tower)."),
    backbone: str = typer.Option(None, "--backbone", help="PLUGIN:VARIANT, see `stadapt backbones`. official: "
                                                          "clip:ViT-B-16 unless given; aim, zeroi2v: from the "
                                                          "tensors' shapes."),
    out: Path = typer.Option(..., "--out", help="The stadapt checkpoint directory to write."),
    fmt: str = typer.Option("official", "--format",
                            help="Checkpoint format: official (linziyi96/st-adapter), aim "
                                 "(taoyang1122/adapt-image-models) or zeroi2v (leexinhao/ZeroI2V: a training "
                                 "checkpoint or weight_reparam.py's merged weights)."),
    num_frames: int = typer.Option(None, "--num-frames", "--frames", min=1,
                                   help="Frames per clip the model was trained on (official: 8 unless given; "
                                        "aim, zeroi2v: its temporal embedding's)."),
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
                                          "e.g. quick_gelu=false. Without it the formats' activation, "
                                          "QuickGELU (OpenAI CLIP's), is used where the weights do not say it. "
                                          "aim also takes adapter_scale=VALUE where its config does not say it; "
                                          "zeroi2v adapter_scale, shift_div, long_shift_div, long_shift_right "
                                          "and adapter_dropout."),
) -> None:
    """Import a checkpoint of another implementation; `stadapt.load_model(OUT)` then loads it. The input
    settings (frame sampling, stride, test views) are recorded in it: eval and predict use them."""
    from stadapt.errors import StadaptError
    from stadapt.runtime.views import parse_views

    if fmt not in FORMATS:
        raise StadaptError(f"unknown checkpoint format '{fmt}'", f"the supported formats are: {', '.join(FORMATS)}")
    checkpoint = _one_checkpoint(checkpoint_arg, checkpoint_opt)
    names = _read_classes(classes) if classes is not None else None
    from stadapt.recipe.overrides import parse_override

    options = {".".join(keys): value for keys, value in (parse_override(text) for text in option or [])}

    from stadapt.checkpoints.files import refuse_unless_replaceable

    refuse_unless_replaceable(out)  # a user's folder or file at --out: refused before any work, --overwrite or not
    test_views = parse_views(views) if views else None

    def notify(line: str) -> None:
        typer.echo(line, err=True)

    if fmt in ("aim", "zeroi2v"):
        from stadapt.tools.interop.aim import import_aim
        from stadapt.tools.interop.zeroi2v import import_zeroi2v

        if backbone_weights is not None:
            raise StadaptError(f"--backbone-weights is not taken with --format {fmt}",
                               "leave it out: the checkpoint holds its whole CLIP tower")
        importer = import_aim if fmt == "aim" else import_zeroi2v
        written = importer(checkpoint, out=out, backbone=backbone, num_frames=num_frames, classes=names,
                           overwrite=overwrite, dataset=dataset, sampling=sampling, stride=stride, views=test_views,
                           options=options, notify=notify)
    else:
        from stadapt.tools.interop.official import import_official

        if backbone_weights is None:
            raise StadaptError("--format official needs --backbone-weights",
                               "pass the backbone it was trained on, e.g. --backbone-weights ViT-B-16.pt")
        written = import_official(checkpoint, backbone=backbone or "clip:ViT-B-16",
                                  backbone_weights=backbone_weights, out=out, num_frames=num_frames or 8,
                                  classes=names, overwrite=overwrite, dataset=dataset, sampling=sampling,
                                  stride=stride, views=test_views, backbone_options=options, notify=notify)
    typer.echo(_summary(checkpoint, written))


FORMATS = ("official", "aim", "zeroi2v")


def _one_checkpoint(positional: Path | None, option: Path | None) -> Path:
    """The checkpoint file, given as the argument or as --checkpoint (not both)."""
    from stadapt.errors import StadaptError

    if positional is not None and option is not None:
        raise StadaptError("the checkpoint is given twice (argument and --checkpoint)", "give it once")
    if positional is None and option is None:
        raise StadaptError("no checkpoint given", "pass the checkpoint file: stadapt import-checkpoint FILE --out DIR")
    return positional if positional is not None else option  # type: ignore[return-value]


def _summary(checkpoint: Path, written: Path) -> str:
    """What was imported, from the written checkpoint: the method and its settings, classes, input settings and
    parameter counts."""
    from stadapt.checkpoints.format import read_checkpoint

    meta, _ = read_checkpoint(written)
    model, counts, spec = meta["model"], meta["parameters"], meta["input"]
    settings = model.get("adapter") or {}
    adapters = f"{model.get('tuning')}: " + (", ".join(f"{k} {v}" for k, v in settings.items()) or "no settings")
    return (
        f"imported {checkpoint} -> {written}\n"
        f"  backbone   {model['backbone']} {model['backbone_options']}\n"
        f"  method     {adapters}\n"
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
