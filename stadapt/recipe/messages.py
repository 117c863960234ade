"""Recipe problems in plain words: pydantic's validation errors turned into one English line each.

A problem is a dotted key path (`adapter.positions[0]`) and a fix; `recipe_error` gathers every problem
of a recipe into ONE `RecipeError`, so a user fixes a recipe in one round instead of one error per run.
The words come from the schema itself (the type at a key path), never from pydantic's own text or URLs.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel

from stadapt.errors import RecipeError
from stadapt.recipe.fields import RULES
from stadapt.recipe.schema import Recipe
from stadapt.vocabulary import did_you_mean

Key = Union[str, int]
KeyPath = tuple[Key, ...]
Problem = tuple[Optional[KeyPath], str]  # None: not about one key (a malformed override)

PREPARE_HINT = "make one with `stadapt prepare-data synthetic --out DIR` or set data.root=..."
MISSING_HINTS: dict[KeyPath, str] = {
    ("backbone",): "add a backbone: section with name: PLUGIN:VARIANT (e.g. clip:ViT-B-16)",
    ("backbone", "name"): "e.g. name: clip:ViT-B-16; `stadapt backbones` lists them",
    ("data",): "add a data: section with root: DIR (a directory made by `stadapt prepare-data`)",
    ("data", "root"): "a directory made by `stadapt prepare-data`; " + PREPARE_HINT,
}


def _label(path: KeyPath) -> str:
    """('adapter', 'positions', 0) -> 'adapter.positions[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def show(value: Any, limit: int = 40) -> str:
    """A value as the user wrote it, in YAML spelling where Python's differs, truncated."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unwrap(ann: Any) -> tuple[Any, bool]:
    """Strip Annotated and Optional: (inner annotation, whether null is allowed)."""
    nullable = False
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(ann))
            ann = args[0] if len(args) == 1 else Any
        else:
            return ann, nullable


def is_model(ann: Any) -> bool:
    """Whether an annotation is a section (a pydantic model)."""
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def annotation_at(path: KeyPath) -> Any:
    """The schema's type at a key path (None where the path leaves the schema)."""
    ann: Any = Recipe
    for part in path:
        ann, _ = unwrap(ann)
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if is_model(ann) and isinstance(part, str) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        elif origin is list and isinstance(part, int):
            ann = args[0]
        elif origin is tuple and isinstance(part, int) and part < len(args):
            ann = args[part]
        elif origin is dict:
            ann = Any
        else:
            return None
    return ann


_WORDS = {int: ("a whole number", "whole numbers"), float: ("a number", "numbers"), str: ("a string", "strings")}


def describe(ann: Any, plural: bool = False) -> str:
    """A type in plain words: 'a whole number', 'a list of 3 numbers', "one of 'a', 'b'"."""
    ann, nullable = unwrap(ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann in _WORDS:
        text = _WORDS[ann][plural]
    elif ann is bool:
        text = "true or false"
    elif origin is Literal:
        text = ("values among " if plural else "one of ") + ", ".join(repr(a) for a in args)
    elif origin is tuple:
        text = f"a list of {len(args)} {describe(args[0], plural=True)}"
    elif origin is list:
        text = f"a list of {describe(args[0], plural=True)}"
    elif origin is dict or is_model(ann):
        text = "a section of key: value lines"
    else:
        text = "a different value"
    return f"{text} or null" if nullable else text


_SECTIONS_OF: dict[str, list[str]] = {}  # field name -> the sections that have it, for misplaced keys


def _sections_of(key: str) -> list[str]:
    if not _SECTIONS_OF:
        for section, field in Recipe.model_fields.items():
            ann, _ = unwrap(field.annotation)
            if is_model(ann):
                for name in ann.model_fields:
                    _SECTIONS_OF.setdefault(name, []).append(section)
    return _SECTIONS_OF.get(key, [])


def _unknown_key(path: KeyPath) -> str:
    parent, key = path[:-1], str(path[-1])
    ann, _ = unwrap(annotation_at(parent))
    allowed = list(ann.model_fields) if is_model(ann) else []
    guess = did_you_mean(key, allowed).rstrip()
    if guess:
        return f"unknown key; {guess}"
    homes = [s for s in _sections_of(key) if (s,) != parent]
    if homes:
        return f"unknown key here; did you mean {homes[0]}.{key}?"
    return f"unknown key; the keys here are: {', '.join(allowed)}"


_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}  # fmt: skip


def translate(error: Mapping[str, Any]) -> list[Problem]:
    """One pydantic error -> problem lines in plain words (never pydantic's own text or URLs)."""
    path: KeyPath = tuple(error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == RULES:
        return [((*path, *key.split(".")), message) for key, message in ctx["problems"]]
    if kind == "extra_forbidden":
        return [(path, _unknown_key(path))]
    if kind == "missing" and path and isinstance(path[-1], int):  # a tuple with too few items
        path = path[:-1]
        got = f", got {len(value)} items" if isinstance(value, (list, tuple)) else ""
        return [(path, f"expected {describe(annotation_at(path))}{got}")]
    if kind == "missing":
        hint = MISSING_HINTS.get(path)
        return [(path, "required key is missing" + (f"; {hint}" if hint else ""))]
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return [(path, f"must be {op} {ctx[name]}, got {show(value)}")]
    if kind == "too_short":
        return [(path, f"must list at least {ctx.get('min_length', 1)} item(s)")]
    if kind == "too_long":
        return [(path, f"expected {describe(annotation_at(path))}, got {ctx.get('actual_length')} items")]
    if kind == "literal_error":
        choices = typing.get_args(unwrap(annotation_at(path))[0])
        guess = did_you_mean(value, [str(c) for c in choices]).rstrip() if isinstance(value, str) else ""
        tail = f"; {guess}" if guess else ""
        return [(path, f"expected {describe(annotation_at(path))}, got {show(value)}{tail}")]
    if kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "bool_for_number"):
        return [(path, f"expected {describe(annotation_at(path))}, got {show(value)}")]
    return [(path, str(error["msg"]).removeprefix("Value error, "))]


def recipe_error(source: str, problems: list[Problem]) -> RecipeError:
    """Every problem of a recipe in one error, one line per problem with its key path."""
    n = len(problems)
    lines = "\n".join(f"  {text}" if path is None else f"  {_label(path)}: {text}" for path, text in problems)
    return RecipeError(f"{source} has {n} problem{'s' if n != 1 else ''}:\n{lines}")
