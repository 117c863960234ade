"""The YAML of recipes: reading a recipe's text or file, and the dialect both ways.

The loader reads `5e-4` as a number (YAML 1.2) instead of PyYAML's YAML-1.1 string, and the dumper writes
sections as blocks and lists inline, the layout people write by hand. Reading records the line of every
key, so that problems can be listed in the order of the file, and flags a key written twice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from stadapt.errors import RecipeError
from stadapt.recipe.messages import KeyPath, Problem


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that reads `5e-4` as a number (YAML 1.2) instead of PyYAML's YAML-1.1 string."""


class RecipeDumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (`kernel: [3, 1, 1]`): the layout people write by hand."""


RecipeDumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
for _cls in (RecipeLoader, RecipeDumper):  # the dumper too, so it quotes a string such as '1e5'
    # copy first: PyYAML's add_implicit_resolver would append to lists shared with SafeLoader
    _cls.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _key_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], problems: list[Problem]) -> None:
    """Record the line of every key (to order problems as in the file) and flag duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            sub = (*path, key_node.value)
            if key_node.value in seen:
                problems.append((sub, f"appears twice (again on line {key_node.start_mark.line + 1}); keep one"))
            seen.add(key_node.value)
            lines.setdefault(sub, key_node.start_mark.line + 1)
            _key_lines(value_node, sub, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault((*path, index), item.start_mark.line + 1)
            _key_lines(item, (*path, index), lines, problems)


def read_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """Parse YAML; a syntax error is the only problem reported (nothing else can be checked)."""
    loader = RecipeLoader(text)
    lines: dict[KeyPath, int] = {}
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines, problems
        _key_lines(node, (), lines, problems)
        return loader.construct_document(node), lines, problems
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        fix = "check the indentation (spaces, not tabs) and that every `key: value` has a space after the colon"
        raise RecipeError(
            f"{source} has 1 problem:\n  {where}: invalid YAML: {what}{f' ({context})' if context else ''}; {fix}"
        ) from None
    finally:
        loader.dispose()


def read_recipe_file(file: Path, source: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """A recipe file's YAML, with the line of each key and its duplicate-key problems."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe file {file}: {exc}", "a recipe is a UTF-8 YAML text file") from None
    return read_yaml(text, source)
