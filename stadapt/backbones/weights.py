"""Reading backbone weights files safely and loading them into a backbone with loud reports.

Nothing here unpickles code: PyTorch pickles are read with `weights_only=True` (a training framework's
checkpoint, which pickles its own objects too, with every foreign global made an inert placeholder: see
`torch_load_inert`), safetensors need no pickle, and OpenAI's TorchScript archives are opened with
`torch.jit.load`, which restores TorchScript modules and tensors but never runs Python code from the file.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stadapt.errors import StadaptError, WeightsError, first_line, preview

_WRAPPER_KEYS = ("state_dict", "model", "module", "visual_state_dict")


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a TorchScript zip (such as OpenAI's `ViT-B-16.pt`), False for anything else."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common checkpoint wrappers, dropping a DDP `module.` prefix."""
    if hasattr(obj, "state_dict") and not isinstance(obj, Mapping):
        obj = obj.state_dict()  # a TorchScript module
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path} contains no tensors", "pass a weights file (.pt, .pth, .bin, .safetensors)")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def torch_load_safely(path: Path, what: str, error: type[StadaptError] = WeightsError) -> object:
    """torch.load with weights_only=True; pickled code is refused and named, damage is reported."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        if found:
            raise error(
                f"refusing to load {what} {path}: it pickles the Python object {found.group(1)}, and unpickling "
                "it could run code",
                "re-save only the tensors (torch.save(model.state_dict(), path)) where the file is trusted",
            ) from exc
        raise error(f"could not read {what} {path}: it is truncated, corrupt or not a PyTorch file",
                    "download it again") from exc
    except Exception as exc:  # truncated zips, foreign formats: torch raises RuntimeError and others
        raise error(
            f"could not read {what} {path}: it is truncated, corrupt or not a PyTorch file ({first_line(exc)})",
            "download it again",
        ) from exc


def torch_load_inert(path: Path, what: str, error: type[StadaptError] = WeightsError) -> object:
    """torch.load of a training framework's checkpoint that pickles the framework's own objects beside the
    weights (mmengine's message_hub, optimizer state), which weights_only=True refuses: every global outside
    torch's allow-list becomes an inert placeholder (stadapt.backbones.inert_pickle), so nothing of the file's
    is imported or run. Damage is reported in one line."""
    from stadapt.backbones import inert_pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=inert_pickle)
    except Exception as exc:  # truncated zips, foreign formats, tensors of a placeholder class: various errors
        raise error(
            f"could not read {what} {path}: it is truncated, corrupt or not a PyTorch file ({first_line(exc)})",
            "download it again",
        ) from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read any weights file users have into a flat {name: tensor} dict on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist", "check the path")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty (0 bytes)", "download it again")
    if path.suffix != ".safetensors" and not is_torchscript_archive(path):
        return unwrap_state_dict(torch_load_safely(path, "weights file"), path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is how OpenAI ships CLIP
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # damaged archives: safetensors and TorchScript raise various errors
        raise WeightsError(
            f"could not read weights file {path}: it is truncated or corrupt ({first_line(exc)})",
            "download it again",
        ) from exc
    return unwrap_state_dict(obj, path)


@dataclass
class LoadReport:
    """What happened to the keys of a weights file."""

    loaded: int
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"loaded {self.loaded} tensors"
        if self.ignored:
            text += f"; unused by the video model: {', '.join(self.ignored)}"
        if self.unexpected:
            text += f"; {len(self.unexpected)} unexpected keys ignored: {preview(self.unexpected)}"
        return text


def _shapes(keys: list[str], tensors: Mapping[str, torch.Tensor], count: int = 3) -> str:
    """'a (768, 3, 16, 16), b (768,), ... (+N more)': keys with their shapes, for error messages."""
    shown = ", ".join(f"{k} {tuple(tensors[k].shape)}" for k in keys[:count])
    return shown + (f" (+{len(keys) - count} more)" if len(keys) > count else "")


def load_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, ignored: frozenset[str],
              what: str) -> LoadReport:
    """Copy `state_dict` into `module`; any missing key or shape mismatch is an error naming the keys."""
    own = module.state_dict()
    mismatched = [
        f"{k} expects {tuple(own[k].shape)} but the file has {tuple(v.shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(own[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        raise WeightsError(
            f"{what} does not fit this backbone: {preview(mismatched, 3, '; ')}",
            "the weights are of another architecture or size: pick the matching variant",
        )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own and k not in ignored]
    if missing:
        found = f"; the file has instead e.g. {_shapes(unexpected, state_dict)}" if unexpected else ""
        raise WeightsError(
            f"{what} lacks {len(missing)} of the backbone's {len(own)} tensors, expected e.g. "
            f"{_shapes(missing, own)}{found}",
            "the file is incomplete or belongs to another model family: pick the matching plugin and variant",
        )
    used = {k: v for k, v in state_dict.items() if k in own}
    module.load_state_dict(used, strict=True)
    return LoadReport(
        loaded=len(used),
        unexpected=unexpected,
        ignored=sorted(k for k in state_dict if k in ignored and k not in own),
    )


def fingerprint(module: nn.Module) -> str:
    """sha256 over the module's tensors (names, shapes, float32 values): the same for every file form."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()
