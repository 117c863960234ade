import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import CodeType

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# `make test` runs two xdist workers on two cores: each worker's torch (and every process it starts, which
# inherits the variable) computes on one thread. The tests' models are tiny, and the extra threads of two
# workers only spin against each other: the suite takes about half the CPU time. A test that needs more
# threads sets them itself; a plain `pytest` run keeps torch's default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "stadapt-plugin-example"


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/stadapt-plugin-example pip-installed (offline, no dependencies) into a directory of its
    own, as a third party's distribution: add the returned directory to sys.path / PYTHONPATH to have
    it. Built from a copy, so the build leaves nothing in the source tree."""
    base = tmp_path_factory.mktemp("example_plugin")
    source, target = base / "source", base / "site"
    shutil.copytree(EXAMPLE_PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@pytest.fixture(autouse=True)
def _fresh_plugin_registry():
    """Each test sees the entry points of its own sys.path."""
    from stadapt.backbones import clear_cache

    clear_cache()
    yield
    clear_cache()


# A test is `slow` when it, a fixture it uses or a test helper they call starts processes (the console
# script through helpers.run_cli, subprocess, multiprocessing) or runs the trainer: `make test-fast`
# (pytest -m "not slow") leaves those out. Mark a test `slow` by hand where the rule cannot see it.
SLOW_NAMES = frozenset({"run_cli", "subprocess", "multiprocessing", "ProcessPoolExecutor", "Popen"})
# modules whose functions train: the trainer and the commands built on it
TRAINERS = ("stadapt.training.loop", "stadapt.tools.quickstart", "stadapt.tools.transfer")
TESTS = Path(__file__).resolve().parent


def _names(code: CodeType) -> set[str]:
    """Global and attribute names a code object (and the functions, lambdas and comprehensions inside it)
    refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def _is_slow(func: Callable, seen: set[Callable]) -> bool:
    """Whether `func`, or a function of tests/ that it calls, refers to one of SLOW_NAMES or the trainer."""
    func = inspect.unwrap(func)
    if func in seen or not inspect.isfunction(func):
        return False
    seen.add(func)
    names = _names(func.__code__)
    if names & SLOW_NAMES or names.intersection(TRAINERS):  # `from stadapt.tools.quickstart import ...` in the function
        return True
    for name in names:
        target = func.__globals__.get(name)
        if getattr(target, "__module__", None) in TRAINERS:
            return True
        if inspect.isfunction(target) and Path(inspect.getfile(target)).resolve().is_relative_to(TESTS):
            if _is_slow(target, seen):
                return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("slow"):
            continue
        seen: set[Callable] = set()
        fixtures = [defs[-1].func for name in item.fixturenames
                    if (defs := item._fixtureinfo.name2fixturedefs.get(name))]
        if any(_is_slow(func, seen) for func in (item.function, *fixtures)):
            item.add_marker(pytest.mark.slow)
