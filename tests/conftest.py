import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
