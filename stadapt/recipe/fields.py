"""What every recipe section is built from: strict number types, the section base, cross-field rules.

Sections are frozen (a recipe is a value that a run records) and reject unknown keys (a misspelt key
must not silently fall back to a default); each field's docstring is its description
(`use_attribute_docstrings`), in the JSON Schema and the generated recipe reference.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

RULES = "recipe_rules"  # error type of cross-field rules; ctx["problems"] = [(key, message), ...]


def _no_bool(value: Any) -> Any:
    """Pydantic's lax mode reads `true` as 1; in a recipe that is a mistake, not a number."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_for_number", "expected a number, got {value}", {"value": str(value).lower()})
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
# for an optional positive number: the bound before the validator, so that the JSON Schema states it in
# its own keyword (exclusiveMinimum), which editors read, rather than pydantic's `gt`
PositiveInt = Annotated[int, Field(gt=0), BeforeValidator(_no_bool)]
PositiveFloat = Annotated[float, Field(gt=0), BeforeValidator(_no_bool)]


class Section(BaseModel):
    """A recipe section: frozen, no unknown keys, each field described by the docstring under it."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def raise_rules(problems: list[tuple[str, str]]) -> None:
    """Raise every cross-field problem of a section at once (pydantic allows one error per validator)."""
    if problems:
        raise PydanticCustomError(RULES, "; ".join(m for _, m in problems), {"problems": problems})
