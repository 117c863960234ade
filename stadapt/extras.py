"""Optional dependencies (pip extras): one place that names the extra a missing package comes with.

The core install carries what training, evaluation and prediction on the tiny backbones need. Export
(onnx, onnxscript, onnxruntime), TensorBoard, Weights & Biases, torchcodec and classy-vision (the
SWAG backbones) are extras, so a command that needs one says which to install instead of failing
with an ImportError deep inside a library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stadapt.errors import StadaptError

# import name -> the stadapt extra that installs it (pyproject.toml's [project.optional-dependencies])
EXTRA_OF = {
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "torchcodec": "torchcodec",
    "classy_vision": "swag",
    "peft": "peft",
}


class MissingExtraError(StadaptError):
    """A package of an optional extra that this command needs is not installed."""


def install_hint(extra: str) -> str:
    return f"install it with: pip install 'stadapt[{extra}]'"


def require(module: str, *, extra: str | None = None, what: str = "this command") -> ModuleType:
    """Import `module`, or raise one line naming the extra to install (`what` says who needs it)."""
    extra = extra or EXTRA_OF[module.split(".")[0]]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top, missing = module.split(".")[0], (exc.name or module).split(".")[0]
        inner = "" if missing == top else f" (it needs {missing})"
        raise MissingExtraError(f"{what} needs the package {top}{inner}, which is not installed",
                                install_hint(extra)) from None


def available(module: str) -> bool:
    """Whether `module` imports (the import is cached by Python, so a later `require` is free)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
