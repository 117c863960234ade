import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _fresh_plugin_registry():
    """Each test sees the entry points of its own sys.path."""
    from stadapt.backbones import clear_cache

    clear_cache()
    yield
    clear_cache()
