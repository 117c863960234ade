"""`stadapt methods`: the installed tuning methods, their trainable parameters on a backbone, and whether
they merge."""

from __future__ import annotations

import json

import typer


def methods(
    backbone: str = typer.Option("clip:tiny", "--backbone", metavar="PLUGIN:VARIANT",
                                 help="Count each method's trainable parameters on this backbone (on the meta "
                                      "device: instant, no weights)."),
    classes: int = typer.Option(400, "--classes", min=1, help="Classifier outputs."),
    frames: int = typer.Option(8, "--frames", min=1, help="Frames per clip."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the installed tuning methods (what a recipe's `tuning:` selects), one line each: trainable
    parameters on a backbone with the method's default settings, whether it merges into the backbone, and
    what it trains."""
    from stadapt.tools.methods import format_methods, method_rows

    rows = method_rows(backbone, num_classes=classes, frames=frames)
    typer.echo(json.dumps({"backbone": backbone, "methods": rows}, indent=2) if as_json
               else format_methods(rows, backbone, classes))
