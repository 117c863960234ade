"""stadapt: ST-Adapter (Pan et al., NeurIPS 2022) for adapting frozen image models to video.

Heavy imports (torch, open_clip) happen on first use, so `import stadapt` and the CLI stay quick.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "stadapt.api",
    "create_model": "stadapt.api",
    "list_backbones": "stadapt.api",
    "LoadedModel": "stadapt.api",
    "build_model": "stadapt.model.classifier",
    "ModelConfig": "stadapt.model.classifier",
    "VideoClassifier": "stadapt.model.classifier",
    "AdapterConfig": "stadapt.model.adapters",
    "STAdapter": "stadapt.model.adapters",
    "StadaptError": "stadapt.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stadapt' has no attribute {name!r}")
