"""The parts of stadapt/ import in one direction: no two of them import each other, directly or around
a circle, at the top of a module or inside a function (an import hidden in a function is still a
dependency). A part is a subpackage (stadapt.engine) or a top-level module (stadapt.model); the package
itself (stadapt/__init__.py, the public API) and the CLI (stadapt/cli, stadapt/__main__) sit on top and
may import anything."""

from __future__ import annotations

import ast
from pathlib import Path

import stadapt

PACKAGE = Path(stadapt.__file__).parent
TOP = {"stadapt", "stadapt.cli", "stadapt.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """stadapt.engine.loop -> stadapt.engine; stadapt.model -> stadapt.model; stadapt -> stadapt."""
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
            # `from stadapt import engine` imports stadapt.engine; `from stadapt import __version__` the package
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
             "def f():\n    from stadapt.model import build_model\n    import stadapt.api\n"
    assert imported_modules(source, "stadapt.engine.loop") == [
        "stadapt.engine.schedule", "stadapt.data.prepared", "stadapt", "stadapt.model", "stadapt.api"]
    graph = import_graph()
    assert "stadapt.api" in graph["stadapt.evaluate"]  # evaluate.run_eval imports it inside the function
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
