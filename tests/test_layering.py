"""The layers of stadapt/, each nameable in one line, import downward only (docs/reference/architecture.md
draws them): an import hidden in a function is still a dependency. A layer may import its own parts and
any layer below it; parts of one layer import each other without a cycle. Modules stay under 450 lines
and functions under 80."""

from __future__ import annotations

import ast
from pathlib import Path

import stadapt

PACKAGE = Path(stadapt.__file__).parent
TOP = {"stadapt", "stadapt.cli", "stadapt.__main__"}

# (layer, its parts): top-level modules or subpackages, lowest first
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base: errors, vocabulary, file writing, extras, PNG figures, logging, entry points (and `__version__`)",
     ("stadapt.errors", "stadapt.vocabulary", "stadapt.fileio", "stadapt.extras", "stadapt.plots", "stadapt.logs",
      "stadapt.entrypoints")),
    ("backbones: the plugin contract and entry-point discovery", ("stadapt.backbones",)),
    ("tuners: the tuning-method contract, the block loop's hook contract, entry-point discovery",
     ("stadapt.tuners",)),
    ("model: the video classifier, its adapters and block loop, the plugin conformance suite", ("stadapt.model",)),
    ("data: prepared layouts, decoding, sampling, transforms, datasets, the input contract", ("stadapt.data",)),
    ("recipes and checkpoints", ("stadapt.recipe", "stadapt.checkpoints")),
    ("runtime: device, precision, views parsing, building from a recipe", ("stadapt.runtime",)),
    ("run folders: layout, marker, lock, checkpoint rotation, recovery, best, lookup", ("stadapt.runs",)),
    ("inference engine: the one multi-view loop and its fusion; eval, predict, features", ("stadapt.inference",)),
    ("training engine: the loop in named pieces, step, optimizer, schedule, distributed, loggers",
     ("stadapt.training",)),
    ("tools: bench, visualize, export, interop, quickstart, transfer, push and the model card", ("stadapt.tools",)),
    ("the public face and the CLI", ("stadapt", "stadapt.api", "stadapt.cli", "stadapt.__main__")),
]
LAYER_OF = {part: n for n, (_, parts) in enumerate(LAYERS) for part in parts}
MAX_MODULE_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """stadapt.training.loop -> stadapt.training; stadapt.errors -> stadapt.errors; stadapt -> stadapt."""
    return ".".join(module.split(".")[:2])


def imported_modules(source: str, name: str, *, is_package: bool = False) -> list[str]:
    """Every stadapt module the module `name` (source text `source`) imports, wherever the import statement
    is (top level or inside a function), relative imports resolved."""
    package = name if is_package else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # `from stadapt import engine` imports stadapt.training; `from stadapt import __version__` the package
            found += [f"{module}.{alias.name}" if _is_module(f"{module}.{alias.name}") else module
                      for alias in node.names]
    return [m for m in found if m == "stadapt" or m.startswith("stadapt.")]


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, dict[str, list[str]]]:
    """part -> imported part -> the `module -> module` imports that make the edge."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = part_of(module_name(path))
        if source in TOP:
            continue
        source_text = path.read_text(encoding="utf-8")
        for target in imported_modules(source_text, module_name(path), is_package=path.name == "__init__.py"):
            dest = part_of(target)
            if dest != source:
                graph.setdefault(source, {}).setdefault(dest, []).append(f"{module_name(path)} -> {target}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of parts (first part repeated at the end), or None: depth-first search."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = "done", path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_imports_inside_functions_and_relative_ones() -> None:
    source = "import os\nfrom . import schedule\nfrom ..data import prepared\nfrom stadapt import __version__\n" \
             "def f():\n    from stadapt.model.classifier import build_model\n    import stadapt.api\n"
    assert imported_modules(source, "stadapt.training.loop") == [
        "stadapt.training.schedule", "stadapt.data.prepared", "stadapt", "stadapt.model.classifier", "stadapt.api"]
    graph = import_graph()
    inside = "stadapt.inference.evaluate -> stadapt.data.prepared"  # evaluate.run_eval imports it inside the function
    assert inside in graph["stadapt.inference"]["stadapt.data"]
    assert "stadapt.cli" not in graph  # the CLI is on top: it may import anything


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b": ["a.x -> b.y"]}, "b": {"c": ["b.y -> c"]}, "c": {"a": ["c -> a.z"]}, "d": {"a": ["d -> a"]}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None


def test_the_parts_of_stadapt_form_layers_without_cycles() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        pairs = zip(cycle, cycle[1:], strict=False)
        steps = [f"  {a} -> {b}: {', '.join(sorted(set(graph[a][b]))[:3])}" for a, b in pairs]
        raise AssertionError("the parts of stadapt/ import each other in a circle:\n" + "\n".join(steps))


def upward_imports(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """Every import of a higher layer (or of a part no layer names), as `module -> module` lines."""
    found = []
    for source, targets in graph.items():
        for dest, edges in targets.items():
            if dest == "stadapt":  # the package root for `__version__`: it imports nothing until a name is used
                continue
            if source not in LAYER_OF or dest not in LAYER_OF or LAYER_OF[dest] > LAYER_OF[source]:
                found += edges
    return sorted(found)


def test_every_part_of_stadapt_is_in_a_layer() -> None:
    parts = {part_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert sorted(parts - set(LAYER_OF)) == [], "name the layer of each new part in LAYERS"


def test_the_layers_import_downward_only() -> None:
    upward = upward_imports(import_graph())
    assert not upward, "imports of a higher layer (move the code down, or the caller up):\n  " + "\n  ".join(upward)


def test_an_upward_import_is_found() -> None:
    graph = {"stadapt.data": {"stadapt.checkpoints": ["stadapt.data.views -> stadapt.checkpoints.format"]}}
    assert upward_imports(graph) == ["stadapt.data.views -> stadapt.checkpoints.format"]
    assert upward_imports({"stadapt.inference": {"stadapt.training": ["x -> y"]}}) == ["x -> y"]
    assert upward_imports({"stadapt.training": {"stadapt.inference": ["y -> x"]}}) == []


def test_inference_and_the_data_layer_never_import_training_or_above() -> None:
    graph = import_graph()
    assert "stadapt.training" not in graph.get("stadapt.inference", {}), "inference imports the training loop"
    above = {"stadapt.model", "stadapt.checkpoints", "stadapt.recipe", "stadapt.training", "stadapt.runs",
             "stadapt.tools", "stadapt.cli"}
    assert not above & set(graph.get("stadapt.data", {})), "the data layer imports " + ", ".join(
        sorted(above & set(graph.get("stadapt.data", {}))))


def test_no_module_in_stadapt_or_plugins_is_over_450_lines() -> None:
    lengths = {path: len(path.read_text(encoding="utf-8").splitlines())
               for root in (PACKAGE, PACKAGE.parent / "plugins") for path in root.rglob("*.py")}
    long = [f"{path.relative_to(PACKAGE.parent)} ({n} lines)" for path, n in sorted(lengths.items())
            if n > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): " + ", ".join(long)


MAX_FUNCTION_LINES = 80


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function or method in `source` longer than `limit` lines,
    decorators and docstring included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > limit:
                found.append((node.name, first, length))
    return found


def test_the_length_check_sees_a_long_method() -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    assert long_functions(f"class A:\n    def f(self):\n{body}\n") == [("f", 2, 81)]
    assert long_functions("def g():\n    return 1\n") == []


def test_no_function_in_stadapt_is_over_80_lines() -> None:
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({length} lines)"
                 for path in sorted(PACKAGE.rglob("*.py"))
                 for name, line, length in long_functions(path.read_text(encoding="utf-8"))]
    assert not offenders, "functions over 80 lines (split them into named pieces): " + "; ".join(offenders)
