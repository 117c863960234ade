"""`stadapt recipe show|schema`: a recipe as a run would see it, and its JSON Schema for editors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from stadapt.recipe import Recipe

app = typer.Typer(help="Inspect recipes: the fully resolved values (base: chains, overrides) and the schema.",
                  no_args_is_help=True)


@app.command("show", context_settings={"allow_interspersed_args": True})
def show(
    recipe: Path = typer.Argument(..., help="A recipe YAML file, e.g. recipes/k400_vitb_16f.yaml."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Recipe overrides, as for train."),
    classes: int = typer.Option(None, "--classes", min=1,
                                help="Classifier outputs for the counts; default: the lines of data.root's "
                                     "classes.txt, else 400."),
    no_params: bool = typer.Option(False, "--no-params", help="Skip the parameter counts (no model is built)."),
) -> None:
    """Print the fully resolved recipe (every field, its base: chain merged, overrides applied) and the
    model's parameter counts under its tuning (built on the meta device: no weights, instant; a text head's
    tower is built without weights on the CPU, as its plugin builds it)."""
    from stadapt.recipe import describe_source, load_recipe
    from stadapt.recipe.dump import resolved_yaml

    loaded = load_recipe(recipe, overrides or [], check_files=False)
    typer.echo(f"# {describe_source(str(recipe), overrides or [])}, resolved")
    typer.echo(resolved_yaml(loaded), nl=False)
    if not no_params:
        typer.echo(_parameter_lines(loaded, classes))


def _class_count(root: str) -> int | None:
    """Lines of `root/classes.txt` (None where the data set is not prepared yet)."""
    from stadapt.data.textfile import read_lines
    from stadapt.errors import DataError

    try:
        return len([line for line in read_lines(Path(root) / "classes.txt", "class file") if line.strip()])
    except DataError:
        return None


def _parameter_lines(recipe: Recipe, classes: int | None) -> str:
    """Parameter counts of the recipe's model as YAML comments, so the output stays a valid recipe."""
    from stadapt.runtime.build import model_config
    from stadapt.tools.bench.params import model_parameter_counts

    source = "--classes"
    if classes is None:
        classes = _class_count(recipe.data.root)
        source = f"{recipe.data.root}/classes.txt"
        if classes is None:
            classes, source = 400, "default: data.root has no classes.txt yet"
    built, parts, counts = model_parameter_counts(model_config(recipe, classes))
    share = 100 * counts["trainable"] / counts["total"]
    # a method may train backbone parameters (fine-tuning, AIM's final norm) or inject its own into the
    # backbone (PEFT's LoRA): the backbone's count says how many of its parameters train
    trained = sum(p.numel() for p in built.model.backbone.parameters() if p.requires_grad)
    backbone = f"{parts['backbone']:,}" + (f" ({trained:,} train)" if trained else "")
    return "\n".join([
        (f"# parameters ({built.plugin.name}:{built.variant.name}, {classes} classes from {source}, "
         f"tuning {recipe.tuning}):"),
        f"#   backbone {backbone}  adapters {parts['adapters']:,}  head {parts['head']:,}",
        f"#   total {counts['total']:,}  trainable {counts['trainable']:,} ({share:.2f}%)",
    ])


def _schema_by_stadapt(path: Path) -> bool:
    """Whether `path` is a recipe schema stadapt wrote: a JSON Schema titled Recipe with a `base` property."""
    from stadapt.fileio import json_by_stadapt

    schema = json_by_stadapt(path, "$schema", "title", "properties")
    return schema is not None and schema["title"] == "Recipe" and "base" in (schema["properties"] or {})


@app.command("schema")
def schema(
    out: Path = typer.Option(None, "--out", help="Write the schema to this file (default: print it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Write the recipe's JSON Schema (pydantic's, plus `base:`), for editors: e.g. YAML language
    servers with `# yaml-language-server: $schema=stadapt-recipe.schema.json` on a recipe's first line."""
    import json

    from stadapt.fileio import atomic_write_text, claim_outputs
    from stadapt.recipe.dump import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    claim_outputs([out], overwrite=overwrite, ours=_schema_by_stadapt)
    atomic_write_text(out, text)
    typer.echo(f"wrote {out}", err=True)
