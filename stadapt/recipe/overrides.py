"""`key=value` overrides: parsing `optim.lr=1e-3` and setting it in a recipe's raw mapping.

The value is YAML, as in a recipe file (`null`, `[a, b]`, `true`); a key whose parent is not a section
(setting `optim.lr.x`) is a problem that names the override behind it.
"""

from __future__ import annotations

import typing
from typing import Any

import yaml

from stadapt.errors import RecipeError
from stadapt.recipe.messages import Problem, annotation_at, describe, is_model, show, unwrap
from stadapt.recipe.yamlio import RecipeLoader


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=1e-3' -> (['optim', 'lr'], 0.001); the value is YAML (`null`, `[a, b]`, `true`)."""
    key, sep, raw = text.partition("=")
    keys = [part.strip() for part in key.strip().split(".")]
    example = "write KEY=VALUE, e.g. optim.lr=1e-3 or adapter.positions=[pre_attn,pre_mlp]"
    if not sep:
        raise RecipeError(f"override {text!r} has no '='", example)
    if not all(keys):
        raise RecipeError(f"override {text!r} has an empty key", example)
    try:
        value = yaml.load(raw, Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        raise RecipeError(
            f"override {text!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})",
            "quote it, e.g. data.root='/my data'",
        ) from None
    return keys, value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> Problem | None:
    """Set a dotted key in the raw dict, creating missing sections; a non-section in the way is a problem."""
    node = data
    for depth, key in enumerate(keys[:-1]):
        where = tuple(keys[: depth + 1])
        ann, _ = unwrap(annotation_at(where))
        if ann is not None and ann is not Any and not is_model(ann) and typing.get_origin(ann) is not dict:
            return where, f"is {describe(ann)}, not a section, so {'.'.join(keys)} cannot be set"
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            return where, f"is {show(child)}, not a section, so {'.'.join(keys)} cannot be set"
        node = child
    node[keys[-1]] = value
    return None
