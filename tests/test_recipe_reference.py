"""Every key of a recipe says what it means: each field of the recipe's JSON Schema (what `stadapt recipe
schema` writes and the docs' recipe reference is generated from) has a description, and so does each section,
so a new key added without one fails here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stadapt.recipe.dump import recipe_json_schema


def _fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(Section.key, property schema) of every key of the top level and of every section ($defs)."""
    sections = {"Recipe": schema, **schema["$defs"]}
    for section, node in sections.items():
        for key, prop in node.get("properties", {}).items():
            yield f"{section}.{key}", prop


def _described(node: dict[str, Any]) -> bool:
    return isinstance(node.get("description"), str) and bool(node["description"].strip())


def test_every_recipe_field_has_a_description() -> None:
    fields = dict(_fields(recipe_json_schema()))
    assert {"Recipe.base", "Recipe.tuning", "Recipe.data", "OptimSection.lr", "AugmentSection.randaugment",
            "TrainSection.loggers"} <= set(fields)
    missing = sorted(name for name, prop in fields.items() if not _described(prop))
    # a section field whose docstring repeats its section's word for word loses it in the schema (pydantic)
    assert not missing, f"recipe fields without a description (a docstring under the field): {missing}"


def test_every_recipe_section_has_a_description() -> None:
    schema = recipe_json_schema()
    sections = {"Recipe": schema, **schema["$defs"]}
    assert {"BackboneSection", "AdapterSection", "DataSection", "ScaleSection", "OutputSection"} <= set(sections)
    missing = sorted(name for name, node in sections.items() if not _described(node))
    assert not missing, f"recipe sections without a docstring: {missing}"


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def test_bounds_use_json_schemas_own_keywords() -> None:
    """Editors read exclusiveMinimum & co.; pydantic's `gt`/`ge`/`lt`/`le` (what it writes for a bound on one
    member of a union such as `int | None` when the bound comes after a validator) they ignore."""
    private = sorted({key for node in _nodes(recipe_json_schema()) for key in ("gt", "ge", "lt", "le") if key in node})
    assert not private, f"pydantic's bound keywords in the recipe JSON Schema: {private}"
