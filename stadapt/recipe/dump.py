"""A recipe written out: the resolved YAML a run records, its provenance header, the JSON Schema.

`RUN/recipe.yaml` holds every field with absolute paths, so a run says exactly what it ran even when the
defaults change later; the JSON Schema (`stadapt recipe schema`) lets editors check recipes as they are
typed.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from stadapt.fileio import atomic_write_text
from stadapt.recipe.chain import BASE_KEY
from stadapt.recipe.files import resolve_paths
from stadapt.recipe.schema import Recipe
from stadapt.recipe.yamlio import RecipeDumper


def describe_source(source: str, overrides: Sequence[str] = ()) -> str:
    """Where a recipe came from, for the header of its resolved copy: the file and the overrides."""
    return f"{source} with {shlex.join(overrides)}" if overrides else source


def resolved_yaml(recipe: Recipe) -> str:
    """Every field of a resolved recipe as YAML (absolute paths), the body of RUN/recipe.yaml."""
    data = recipe.to_dict()
    resolve_paths(data, recipe.name)
    return yaml.dump(data, Dumper=RecipeDumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def recipe_json_schema() -> dict[str, Any]:
    """pydantic's JSON Schema of a recipe, plus the `base:` key that the loader reads before validation."""
    schema = Recipe.model_json_schema()
    schema["properties"] = {
        BASE_KEY: {"type": "string", "title": "Base",
                   "description": "A recipe file (relative to this one) whose values this recipe starts from; "
                                  "mappings merge, lists and scalars replace"},
        **schema["properties"],
    }
    schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
    schema.setdefault("title", "stadapt recipe")
    return schema


def dump_recipe(recipe: Recipe, path: Path, *, source: str | None = None) -> None:
    """Write the fully resolved recipe (every field, absolute paths) atomically, with a provenance header."""
    from stadapt import __version__

    origin = source or "<recipe>"
    text = f"# resolved by stadapt {__version__} from {origin}\n{resolved_yaml(recipe)}"
    atomic_write_text(path, text)
