"""Reading recipes: YAML + `key=value` overrides -> a validated, resolved `Recipe`.

Every problem (syntax aside) is collected and raised as ONE `RecipeError`, one line per problem with
its dotted key path and a fix (stadapt.recipe.messages), ordered as the keys are in the file, so a user
fixes a recipe in one round instead of one error per run. Nothing here imports torch: checking a recipe
must stay instant.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from stadapt.errors import RecipeError
from stadapt.recipe.chain import BASE_KEY, with_bases
from stadapt.recipe.files import environment_problems, resolve_paths
from stadapt.recipe.messages import KeyPath, Problem, is_model, recipe_error, show, translate, unwrap
from stadapt.recipe.overrides import apply_override, parse_override
from stadapt.recipe.schema import Recipe
from stadapt.recipe.yamlio import read_recipe_file
from stadapt.vocabulary import closest


def _fill_sections(data: dict[str, Any], model: type[BaseModel]) -> None:
    """An empty section (`adapter:` with nothing under it) reads as null; treat it as all defaults."""
    for name, field in model.model_fields.items():
        ann, _ = unwrap(field.annotation)
        if is_model(ann) and name in data and data[name] is None:
            data[name] = {}
        if is_model(ann) and isinstance(data.get(name), dict):
            _fill_sections(data[name], ann)
def _build(
    data: Any,
    *,
    source: str,
    overrides: Sequence[str],
    default_name: str | None,
    check_files: bool,
    lines: dict[KeyPath, int],
    problems: list[Problem],
) -> Recipe:
    """Overrides, resolution, validation and environment checks; every problem raised at once."""
    if data is None:
        data = {}
    parsed: list[tuple[list[str], Any, str]] = []
    late: list[Problem] = []  # problems with no place in the file go last
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except RecipeError as exc:
            late.append((None, str(exc)))
            continue
        parsed.append((keys, value, text))
    if not isinstance(data, Mapping):
        kind = type(data).__name__
        problems.append(((), f"expected a mapping of sections (backbone:, data:, ...), got a {kind} {show(data)}"))
        raise recipe_error(source, problems + late)
    raw: dict[str, Any] = copy.deepcopy(dict(data))
    for keys, value, text in parsed:
        problem = apply_override(raw, keys, value)
        if problem:
            late.append((problem[0], f"{problem[1]} (from override '{text}')"))
    _fill_sections(raw, Recipe)
    resolve_paths(raw, default_name)
    recipe = None
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            problems.extend(translate(error))
    problems.extend(environment_problems(raw, {path for path, _ in problems if path is not None}, check_files))
    if problems or late:
        raise recipe_error(source, _arrange(problems, lines, parsed) + late)
    assert recipe is not None
    return recipe


def _arrange(
    problems: list[Problem], lines: dict[KeyPath, int], parsed: list[tuple[list[str], Any, str]]
) -> list[Problem]:
    """Drop repeats, order by the line of the key in the file, and name the override behind a problem."""

    def line(path: KeyPath | None) -> int:
        if path is None:
            return 1 << 30
        for end in range(len(path), 0, -1):
            if path[:end] in lines:
                return lines[path[:end]]
        return 1 << 30

    out: list[Problem] = []
    for path, text in sorted(dict.fromkeys(problems), key=lambda p: line(p[0])):
        for keys, _, override in reversed(parsed):
            key = tuple(keys)
            if path is not None and (path[: len(key)] == key or key[: len(path)] == path):
                text = f"{text} (from override '{override}')"
                break
        out.append((path, text))
    return out


def recipe_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "<recipe>",
    overrides: Sequence[str] = (),
    default_name: str | None = None,
    check_files: bool = True,
) -> Recipe:
    """Validate an already-parsed recipe (plus overrides); raises one RecipeError listing every problem."""
    return _build(
        data,
        source=source,
        overrides=overrides,
        default_name=default_name,
        check_files=check_files,
        lines={},
        problems=[],
    )


def _yaml_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.y*ml")) if folder.is_dir() else []


def load_recipe(path: str | Path, overrides: Sequence[str] = (), *, check_files: bool = True) -> Recipe:
    """Read a YAML recipe (and its `base:` chain), apply `key=value` overrides, validate, fill defaults,
    resolve paths."""
    file = Path(path)
    if file.is_dir():
        found = _yaml_files(file)
        raise RecipeError(
            f"{file} is a directory, not a recipe file",
            f"YAML files there: {', '.join(found)}" if found else "pass a .yaml recipe file",
        )
    if not file.exists():
        known = _yaml_files(Path("recipes"))
        candidates = (file.with_name(file.name + ".yaml"), Path("recipes") / (file.name + ".yaml"))
        near = [str(p) for p in candidates if p.is_file()]
        guess = near or closest(str(file), known)
        tail = f"did you mean {guess[0]}? " if guess else ""
        listing = f"recipes here: {', '.join(known)}" if known else f"there is no recipes/*.yaml in {Path.cwd()}"
        raise RecipeError(f"recipe file {file} not found", tail + listing)
    data, lines, problems = read_recipe_file(file, str(path))
    if isinstance(data, dict) and BASE_KEY in data:
        data = with_bases(data, file, (file.resolve(),))
    return _build(
        data,
        source=str(path),
        overrides=overrides,
        default_name=file.stem,
        check_files=check_files,
        lines=lines,
        problems=problems,
    )
