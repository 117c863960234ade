"""Generate the CLI and recipe reference pages at build time (run by mkdocs-gen-files; see mkdocs.yml).

- reference/cli.md: every command of the Typer app `stadapt.cli.app` (walked through the click group that
  `typer.main.get_command` gives): its usage, help text, arguments and options, as `--help` prints them.
- reference/recipe.md: every key of a recipe, from the JSON Schema that `stadapt recipe schema` writes
  (`stadapt.recipe.dump.recipe_json_schema`): type and limits, default, and the descriptions of each key and
  section (the docstrings in stadapt/recipe/schema.py and data_section.py).

Nothing here is committed as a static copy: the pages always say what the installed code does.
Run it by hand with `python docs/_gen/reference.py OUTDIR` to see the Markdown.
"""

from __future__ import annotations

import html
import inspect
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------------------------
# Markdown helpers


def _escape(text: str) -> str:
    """Markdown-safe text: HTML and table characters escaped outside `code spans` (kept as written)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part.replace("|", "\\|"))
        else:
            out.append(html.escape(part, quote=False).replace("|", "&#124;").replace("*", "\\*")
                       .replace("_", "\\_").replace("[", "\\[").replace("]", "\\]"))
    return "".join(out)


def _cell(text: str) -> str:
    return _escape(" ".join(text.split()))


def _code(text: str) -> str:
    """An inline code span for any text (backticks inside get a longer fence)."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}".replace("|", "\\|")


# ---------------------------------------------------------------------------------------------------------------
# The CLI reference


def _commands(cmd: Any, path: list[str], parent: Any = None) -> Iterator[tuple[Any, Any, list[str]]]:
    """(command, its context, its path) for the root and every subcommand, depth first, in --help order."""
    ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent, **(cmd.context_settings or {}))
    yield cmd, ctx, path
    for name, sub in getattr(cmd, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, [*path, name], ctx)


def _help_paragraphs(text: str | None) -> list[str]:
    text = inspect.cleandoc(text or "").replace("\b\n", "")
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def cli_markdown() -> str:
    import typer

    from stadapt.cli import app

    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the `stadapt` command itself (the Typer app `stadapt.cli.app`) each time the docs are "
        "built: it says exactly what `stadapt COMMAND --help` says. `-h` is `--help` everywhere.",
        "",
    ]
    entries = list(_commands(root, ["stadapt"]))
    lines += ["| command | what it does |", "|---|---|"]
    for cmd, _ctx, path in entries[1:]:
        anchor = "-".join(path).lower()
        lines.append(f"| [{_code(' '.join(path))}](#{anchor}) | {_cell(cmd.get_short_help_str(limit=200))} |")
    lines.append("")
    for cmd, ctx, path in entries:
        name = " ".join(path)
        anchor = "-".join(path).lower()
        level = "#" * min(len(path) + 1, 4)
        lines += [f"{level} {name} {{#{anchor}}}", ""]
        pieces = " ".join(cmd.collect_usage_pieces(ctx))
        lines += ["```text", f"{name} {pieces}".rstrip(), "```", ""]
        for paragraph in _help_paragraphs(cmd.help):
            lines += [_escape(paragraph), ""]
        subcommands = getattr(cmd, "commands", {})
        if subcommands:
            lines += ["| subcommand | what it does |", "|---|---|"]
            for sub_name, sub in subcommands.items():
                sub_anchor = f"{anchor}-{sub_name}".lower()
                lines.append(f"| [{_code(sub_name)}](#{sub_anchor}) | {_cell(sub.get_short_help_str(limit=200))} |")
            lines.append("")
        params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
        arguments = [p for p in params if p.param_type_name == "argument"]
        options = [p for p in params if p.param_type_name == "option"]
        for title, group in (("Arguments", arguments), ("Options", options)):
            records = [(p, p.get_help_record(ctx)) for p in group]
            records = [(p, r) for p, r in records if r]
            if not records:
                continue
            lines += [f"**{title}**", "", "| name | description |", "|---|---|"]
            for _, (names, help_text) in records:
                lines.append(f"| {_code(names)} | {_cell(help_text)} |")
            lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# The recipe reference


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return schema["$defs"][ref.rsplit("/", 1)[-1]]
    return node


def _type_text(schema: dict[str, Any], node: dict[str, Any]) -> str:
    if "$ref" in node:
        return "mapping (below)"
    if "enum" in node:
        return " \\| ".join(_code(json.dumps(v)) for v in node["enum"])
    if "const" in node:
        return _code(json.dumps(node["const"]))
    if "anyOf" in node:
        return " or ".join(_type_text(schema, n) for n in node["anyOf"])
    kind = node.get("type", "any")
    if kind == "array":
        if "prefixItems" in node:
            return "[" + ", ".join(_type_text(schema, n) for n in node["prefixItems"]) + "]"
        inner = _type_text(schema, node.get("items", {}))
        return f"list of {inner}"
    if kind == "object":
        return "mapping"
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "str", "null": "null"}.get(kind, kind)


def _constraints(node: dict[str, Any]) -> list[str]:
    out = []
    for key, text in (("exclusiveMinimum", "> {}"), ("minimum", ">= {}"), ("exclusiveMaximum", "< {}"),
                      ("maximum", "<= {}"), ("minItems", "at least {} item(s)"), ("maxItems", "at most {} item(s)"),
                      ("minLength", "at least {} characters"), ("pattern", "matches {}")):
        if key in node and not (key in ("minItems", "maxItems") and "prefixItems" in node):
            out.append(text.format(_code(str(node[key])) if key == "pattern" else node[key]))
    for alternative in node.get("anyOf", []):
        out += _constraints(alternative)
    return out


Section = tuple[str, str | None, str, list[tuple[str, dict[str, Any], bool]]]


def _sections(schema: dict[str, Any], node: dict[str, Any], prefix: str, description: str | None,
              model: str) -> Iterator[Section]:
    """(key path, description, pydantic model name, [(key, property schema, required)]) for a mapping and
    its nested mappings."""
    required = set(node.get("required", []))
    props = list(node.get("properties", {}).items())
    yield prefix, description, model, [(key, prop, key in required) for key, prop in props]
    for key, prop in props:
        if "$ref" in prop:
            sub = _resolve(schema, prop)
            yield from _sections(schema, sub, f"{prefix}.{key}" if prefix else key, sub.get("description"),
                                 prop["$ref"].rsplit("/", 1)[-1])


def _factory_default(model: str, key: str) -> str:
    """A default the schema cannot state (pydantic's default_factory), from the recipe's model itself."""
    from stadapt.recipe import data_section
    from stadapt.recipe import schema as recipe_schema

    section = getattr(recipe_schema, model, None) or getattr(data_section, model)
    field = section.model_fields.get(key)
    if field is None or field.default_factory is None:
        return ""
    value = field.default_factory()
    if hasattr(value, "model_dump"):
        return "see below"
    return _code(json.dumps(list(value) if isinstance(value, tuple) else value))


def recipe_markdown() -> str:
    from stadapt.recipe.dump import recipe_json_schema

    schema = recipe_json_schema()
    lines = [
        "# Recipe reference",
        "",
        "Generated from the recipe's JSON Schema (`stadapt recipe schema` prints the same schema; "
        "`stadapt.recipe.dump.recipe_json_schema`) each time the docs are built. A recipe is YAML; every "
        "key below can also be set on the command line as `key.path=value` after the recipe "
        "(`stadapt train R optim.lr=1e-3`). Unknown keys are errors. What the keys mean together, with "
        "examples: [Recipes](../concepts/recipes.md).",
        "",
    ]
    for prefix, description, model, props in _sections(schema, schema, "", None, "Recipe"):
        title = f"`{prefix}`" if prefix else "Top level"
        lines += [f"## {title}", ""]
        if description:
            for paragraph in _help_paragraphs(description):
                lines += [_escape(paragraph), ""]
            lines = _join_list_items(lines)
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, prop, required in props:
            path = f"{prefix}.{key}" if prefix else key
            if required:
                default = "**required**"
            elif "default" in prop:
                default = _code(json.dumps(prop["default"]))
            else:
                default = _factory_default(model, key)
            kind = ", ".join([_type_text(schema, prop), *_constraints(prop)])
            lines.append(f"| {_code(path)} | {kind} | {default} | {_cell(prop.get('description', ''))} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _join_list_items(lines: list[str]) -> list[str]:
    """Docstring bullet lists ("- a ... - b") were joined into one paragraph: split them back into items."""
    out = []
    for line in lines:
        if line.startswith("- ") and " - " in line:
            out += ["", *("- " + item.strip() for item in re.split(r"(?:^| )- (?=\S)", line) if item.strip()), ""]
        else:
            out.append(line)
    return out


# ---------------------------------------------------------------------------------------------------------------


def write_pages(write: Any) -> None:
    write("reference/cli.md", cli_markdown())
    write("reference/recipe.md", recipe_markdown())


def _gen_files() -> None:
    import mkdocs_gen_files

    def write(name: str, text: str) -> None:
        with mkdocs_gen_files.open(name, "w") as handle:
            handle.write(text)

    write_pages(write)


if __name__ == "__main__":  # by hand: python docs/_gen/reference.py OUTDIR
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "generated-reference")

    def _write(name: str, text: str) -> None:
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(text)

    write_pages(_write)
else:  # run by mkdocs-gen-files (runpy.run_path: __name__ is "<run_path>")
    _gen_files()
