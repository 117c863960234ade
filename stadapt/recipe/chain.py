"""`base:` inheritance: a recipe that states only what differs from another recipe file.

`base: OTHER.yaml` is relative to the recipe's own folder, and chains are allowed (a cycle is refused).
Mappings merge key by key; lists, scalars and null replace. The base's `name` is not inherited.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stadapt.errors import RecipeError
from stadapt.recipe.messages import recipe_error, show
from stadapt.recipe.yamlio import read_recipe_file

BASE_KEY = "base"  # `base: OTHER.yaml`: the recipe states only what differs from OTHER (see with_bases)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key; lists, scalars and null replace."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_bases(data: dict[str, Any], file: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """Resolve `base: OTHER.yaml` (relative to the recipe's folder, chains allowed) into one mapping.

    The base's `name` is not inherited: a recipe's run is named after its own file unless it says so.
    """
    child = dict(data)
    name = child.pop(BASE_KEY)
    if not isinstance(name, str) or not name.strip():
        raise RecipeError(f"{file}: base: must name a recipe file, got {show(name)}", "e.g. base: k400_vitb.yaml")
    base_file = (file.parent / os.path.expanduser(name)).resolve()
    if base_file in chain:
        loop = " -> ".join(str(p.name) for p in (*chain, base_file))
        raise RecipeError(f"{file}: base: recipes inherit in a cycle ({loop})", "remove one of these base: lines")
    if not base_file.is_file():
        raise RecipeError(f"{file}: base: {base_file} is not a recipe file",
                          "base: is relative to the recipe's own folder, e.g. base: k400_vitb.yaml")
    parent, _, problems = read_recipe_file(base_file, str(base_file))
    if problems:
        raise recipe_error(str(base_file), problems)
    if not isinstance(parent, dict):
        raise RecipeError(f"{base_file} (base of {file}) is not a mapping of sections",
                          "a base is a recipe file (backbone:, data:, ...)")
    if BASE_KEY in parent:
        parent = with_bases(parent, base_file, (*chain, base_file))
    parent.pop("name", None)
    return deep_merge(parent, child)
