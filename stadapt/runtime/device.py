"""Where a run or a command computes: the device a name such as `auto`, `cpu` or `cuda:1` stands for."""

from __future__ import annotations

import torch

from stadapt.errors import StadaptError


def resolve_device(name: str) -> torch.device:
    """`auto` = the first CUDA device if there is one, else the CPU; an unavailable device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StadaptError(f"train.device={name} but CUDA is not available here", "set train.device=cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise StadaptError(f"train.device={name} but MPS is not available here", "set train.device=cpu (or auto)")
    return device
