"""Reading recipes: YAML + `key=value` overrides -> a validated, resolved `Recipe`.

Every problem (syntax aside) is collected and raised as ONE `RecipeError`, one line per problem with
its dotted key path and a fix, so a user fixes a recipe in one round instead of one error per run.
Nothing here imports torch: checking a recipe must stay instant.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ValidationError

from stadapt.errors import RecipeError, StadaptError
from stadapt.fileio import atomic_write_text
from stadapt.recipe.schema import RULES, Recipe
from stadapt.vocabulary import closest, did_you_mean, weights_is_path

Key = Union[str, int]
KeyPath = tuple[Key, ...]
Problem = tuple[Optional[KeyPath], str]  # None: not about one key (a malformed override)

BASE_KEY = "base"  # `base: OTHER.yaml`: the recipe states only what differs from OTHER (see _with_bases)
PREPARE_HINT = "make one with `stadapt prepare-data synthetic --out DIR` or set data.root=..."
MISSING_HINTS: dict[KeyPath, str] = {
    ("backbone",): "add a backbone: section with name: PLUGIN:VARIANT (e.g. clip:ViT-B-16)",
    ("backbone", "name"): "e.g. name: clip:ViT-B-16; `stadapt backbones` lists them",
    ("data",): "add a data: section with root: DIR (a directory made by `stadapt prepare-data`)",
    ("data", "root"): "a directory made by `stadapt prepare-data`; " + PREPARE_HINT,
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `5e-4` as a number (YAML 1.2) instead of PyYAML's YAML-1.1 string."""


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (`kernel: [3, 1, 1]`): the layout people write by hand."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
for _cls in (_Loader, _Dumper):  # the dumper too, so it quotes a string such as '1e5'
    # copy first: PyYAML's add_implicit_resolver would append to lists shared with SafeLoader
    _cls.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


# ---------------------------------------------------------------- messages


def _label(path: KeyPath) -> str:
    """('adapter', 'positions', 0) -> 'adapter.positions[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _show(value: Any, limit: int = 40) -> str:
    """A value as the user wrote it, in YAML spelling where Python's differs, truncated."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unwrap(ann: Any) -> tuple[Any, bool]:
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


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _annotation(path: KeyPath) -> Any:
    """The schema's type at a key path (None where the path leaves the schema)."""
    ann: Any = Recipe
    for part in path:
        ann, _ = _unwrap(ann)
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if _is_model(ann) and isinstance(part, str) and part in ann.model_fields:
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


def _describe(ann: Any, plural: bool = False) -> str:
    """A type in plain words: 'a whole number', 'a list of 3 numbers', "one of 'a', 'b'"."""
    ann, nullable = _unwrap(ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann in _WORDS:
        text = _WORDS[ann][plural]
    elif ann is bool:
        text = "true or false"
    elif origin is Literal:
        text = ("values among " if plural else "one of ") + ", ".join(repr(a) for a in args)
    elif origin is tuple:
        text = f"a list of {len(args)} {_describe(args[0], plural=True)}"
    elif origin is list:
        text = f"a list of {_describe(args[0], plural=True)}"
    elif origin is dict or _is_model(ann):
        text = "a section of key: value lines"
    else:
        text = "a different value"
    return f"{text} or null" if nullable else text


_SECTIONS_OF: dict[str, list[str]] = {}  # field name -> the sections that have it, for misplaced keys


def _sections_of(key: str) -> list[str]:
    if not _SECTIONS_OF:
        for section, field in Recipe.model_fields.items():
            ann, _ = _unwrap(field.annotation)
            if _is_model(ann):
                for name in ann.model_fields:
                    _SECTIONS_OF.setdefault(name, []).append(section)
    return _SECTIONS_OF.get(key, [])


def _unknown_key(path: KeyPath) -> str:
    parent, key = path[:-1], str(path[-1])
    ann, _ = _unwrap(_annotation(parent))
    allowed = list(ann.model_fields) if _is_model(ann) else []
    guess = did_you_mean(key, allowed).rstrip()
    if guess:
        return f"unknown key; {guess}"
    homes = [s for s in _sections_of(key) if (s,) != parent]
    if homes:
        return f"unknown key here; did you mean {homes[0]}.{key}?"
    return f"unknown key; the keys here are: {', '.join(allowed)}"


_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}  # fmt: skip


def _translate(error: Mapping[str, Any]) -> list[Problem]:
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
        return [(path, f"expected {_describe(_annotation(path))}{got}")]
    if kind == "missing":
        hint = MISSING_HINTS.get(path)
        return [(path, "required key is missing" + (f"; {hint}" if hint else ""))]
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return [(path, f"must be {op} {ctx[name]}, got {_show(value)}")]
    if kind == "too_short":
        return [(path, f"must list at least {ctx.get('min_length', 1)} item(s)")]
    if kind == "too_long":
        return [(path, f"expected {_describe(_annotation(path))}, got {ctx.get('actual_length')} items")]
    if kind == "literal_error":
        choices = typing.get_args(_unwrap(_annotation(path))[0])
        guess = did_you_mean(value, [str(c) for c in choices]).rstrip() if isinstance(value, str) else ""
        tail = f"; {guess}" if guess else ""
        return [(path, f"expected {_describe(_annotation(path))}, got {_show(value)}{tail}")]
    if kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "bool_for_number"):
        return [(path, f"expected {_describe(_annotation(path))}, got {_show(value)}")]
    return [(path, str(error["msg"]).removeprefix("Value error, "))]


def _error(source: str, problems: list[Problem]) -> RecipeError:
    n = len(problems)
    lines = "\n".join(f"  {text}" if path is None else f"  {_label(path)}: {text}" for path, text in problems)
    return RecipeError(f"{source} has {n} problem{'s' if n != 1 else ''}:\n{lines}")


# ---------------------------------------------------------------- YAML and overrides


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


def _read_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """Parse YAML; a syntax error is the only problem reported (nothing else can be checked)."""
    loader = _Loader(text)
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
        value = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise RecipeError(
            f"override {text!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})",
            "quote it, e.g. data.root='/my data'",
        ) from None
    return keys, value


def _apply_override(data: dict[str, Any], keys: list[str], value: Any) -> Problem | None:
    """Set a dotted key in the raw dict, creating missing sections; a non-section in the way is a problem."""
    node = data
    for depth, key in enumerate(keys[:-1]):
        where = tuple(keys[: depth + 1])
        ann, _ = _unwrap(_annotation(where))
        if ann is not None and ann is not Any and not _is_model(ann) and typing.get_origin(ann) is not dict:
            return where, f"is {_describe(ann)}, not a section, so {'.'.join(keys)} cannot be set"
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            return where, f"is {_show(child)}, not a section, so {'.'.join(keys)} cannot be set"
        node = child
    node[keys[-1]] = value
    return None


# ---------------------------------------------------------------- resolution and file checks


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _fill_sections(data: dict[str, Any], model: type[BaseModel]) -> None:
    """An empty section (`adapter:` with nothing under it) reads as null; treat it as all defaults."""
    for name, field in model.model_fields.items():
        ann, _ = _unwrap(field.annotation)
        if _is_model(ann) and name in data and data[name] is None:
            data[name] = {}
        if _is_model(ann) and isinstance(data.get(name), dict):
            _fill_sections(data[name], ann)


def _resolve(data: dict[str, Any], default_name: str | None) -> None:
    """Fill name and output.dir, and make paths absolute against the working directory (in place)."""
    if data.get("name") is None:
        data["name"] = default_name or "run"
    out = data.setdefault("output", {})
    if isinstance(out, dict):
        if out.get("dir") is None and isinstance(data["name"], str):
            out["dir"] = f"runs/{data['name']}"
        if isinstance(out.get("dir"), str):
            out["dir"] = _absolute(out["dir"])
    section = data.get("data")
    if isinstance(section, dict) and isinstance(section.get("root"), str):
        section["root"] = _absolute(section["root"])
    backbone = data.get("backbone")
    if isinstance(backbone, dict) and isinstance(backbone.get("weights"), str) and weights_is_path(backbone["weights"]):
        backbone["weights"] = _absolute(backbone["weights"])
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("init_from"), str):
        model["init_from"] = _absolute(model["init_from"])


def _environment_problems(data: dict[str, Any], bad: set[KeyPath], check_files: bool) -> list[Problem]:
    """Problems outside the recipe text: the backbone plugin, the data directory, the weights file."""
    problems: list[Problem] = []
    backbone = data["backbone"] if isinstance(data.get("backbone"), dict) else {}
    name = backbone.get("name")
    if isinstance(name, str) and ("backbone", "name") not in bad:
        from stadapt.backbones.registry import parse_backbone

        try:
            parse_backbone(name)
        except StadaptError as exc:
            problems.append((("backbone", "name"), str(exc)))
    if not check_files:
        return problems
    weights = backbone.get("weights")
    if isinstance(weights, str) and ("backbone", "weights") not in bad and weights_is_path(weights):
        fix = "pass an existing weights file, a hub tag (e.g. openai), or null for random init"
        if not os.path.exists(weights):
            problems.append((("backbone", "weights"), f"file {weights} does not exist; {fix}"))
        elif not os.path.isfile(weights):
            problems.append((("backbone", "weights"), f"{weights} is a directory, not a weights file; {fix}"))
    model = data["model"] if isinstance(data.get("model"), dict) else {}
    init = model.get("init_from")
    if (isinstance(init, str) and ("model", "init_from") not in bad
            and not os.path.isfile(os.path.join(init, "stadapt.json"))):
        problems.append((("model", "init_from"), f"{init} is not a stadapt checkpoint directory (no stadapt.json); "
                                                 "pass runs/NAME/checkpoints/last"))
    section = data["data"] if isinstance(data.get("data"), dict) else {}
    root = section.get("root")
    if not isinstance(root, str) or ("data", "root") in bad:
        return problems
    if not os.path.exists(root):
        problems.append((("data", "root"), f"directory {root} does not exist; {PREPARE_HINT}"))
    elif not os.path.isdir(root):
        problems.append((("data", "root"), f"{root} is a file, not a directory; {PREPARE_HINT}"))
    else:
        if not os.path.isfile(os.path.join(root, "classes.txt")):
            problems.append((("data", "root"), f"{root} has no classes.txt (not a prepared data set); {PREPARE_HINT}"))
        lists = sorted(p.name for p in Path(root).glob("*.txt") if p.name != "classes.txt")
        for key, default in (("train_list", "train.txt"), ("val_list", "val.txt")):
            name = section.get(key, default)
            if isinstance(name, str) and ("data", key) not in bad and not os.path.isfile(os.path.join(root, name)):
                fix = did_you_mean(name, lists).rstrip() or f"lists in {root}: {', '.join(lists) or 'none'}"
                problems.append((("data", key), f"file {os.path.join(root, name)} does not exist; {fix}"))
    return problems


# ---------------------------------------------------------------- public API


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
        problems.append(((), f"expected a mapping of sections (backbone:, data:, ...), got a {kind} {_show(data)}"))
        raise _error(source, problems + late)
    raw: dict[str, Any] = copy.deepcopy(dict(data))
    for keys, value, text in parsed:
        problem = _apply_override(raw, keys, value)
        if problem:
            late.append((problem[0], f"{problem[1]} (from override '{text}')"))
    _fill_sections(raw, Recipe)
    _resolve(raw, default_name)
    recipe = None
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            problems.extend(_translate(error))
    problems.extend(_environment_problems(raw, {path for path, _ in problems if path is not None}, check_files))
    if problems or late:
        raise _error(source, _arrange(problems, lines, parsed) + late)
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


def _read_recipe_file(file: Path, source: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """A recipe file's YAML, with the line of each key and its duplicate-key problems."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe file {file}: {exc}", "a recipe is a UTF-8 YAML text file") from None
    return _read_yaml(text, source)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key; lists, scalars and null replace."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _with_bases(data: dict[str, Any], file: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """Resolve `base: OTHER.yaml` (relative to the recipe's folder, chains allowed) into one mapping.

    The base's `name` is not inherited: a recipe's run is named after its own file unless it says so.
    """
    child = dict(data)
    name = child.pop(BASE_KEY)
    if not isinstance(name, str) or not name.strip():
        raise RecipeError(f"{file}: base: must name a recipe file, got {_show(name)}", "e.g. base: k400_vitb.yaml")
    base_file = (file.parent / os.path.expanduser(name)).resolve()
    if base_file in chain:
        loop = " -> ".join(str(p.name) for p in (*chain, base_file))
        raise RecipeError(f"{file}: base: recipes inherit in a cycle ({loop})", "remove one of these base: lines")
    if not base_file.is_file():
        raise RecipeError(f"{file}: base: {base_file} is not a recipe file",
                          "base: is relative to the recipe's own folder, e.g. base: k400_vitb.yaml")
    parent, _, problems = _read_recipe_file(base_file, str(base_file))
    if problems:
        raise _error(str(base_file), problems)
    if not isinstance(parent, dict):
        raise RecipeError(f"{base_file} (base of {file}) is not a mapping of sections",
                          "a base is a recipe file (backbone:, data:, ...)")
    if BASE_KEY in parent:
        parent = _with_bases(parent, base_file, (*chain, base_file))
    parent.pop("name", None)
    return deep_merge(parent, child)


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
    data, lines, problems = _read_recipe_file(file, str(path))
    if isinstance(data, dict) and BASE_KEY in data:
        data = _with_bases(data, file, (file.resolve(),))
    return _build(
        data,
        source=str(path),
        overrides=overrides,
        default_name=file.stem,
        check_files=check_files,
        lines=lines,
        problems=problems,
    )


def describe_source(source: str, overrides: Sequence[str] = ()) -> str:
    """Where a recipe came from, for the header of its resolved copy: the file and the overrides."""
    return f"{source} with {shlex.join(overrides)}" if overrides else source


def resolved_yaml(recipe: Recipe) -> str:
    """Every field of a resolved recipe as YAML (absolute paths), the body of RUN/recipe.yaml."""
    data = recipe.to_dict()
    _resolve(data, recipe.name)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


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
