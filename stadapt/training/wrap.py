"""What the loop trains and calls forward on: the model started from another run's adapters
(`model.init_from`), and wrapped in DistributedDataParallel under torchrun and `torch.compile` if asked."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch

from stadapt.checkpoints.format import read_checkpoint
from stadapt.errors import CheckpointError, preview
from stadapt.runtime.distributed import World


def init_adapters(model: torch.nn.Module, checkpoint: Path) -> None:
    """Start from another run's adapters (model.init_from), strictly: every adapter tensor of this model
    present with its shape; the source's head is left out (its classes are not this run's)."""
    _, tensors = read_checkpoint(checkpoint)
    own = {k: p for k, p in model.named_parameters() if p.requires_grad and k.startswith("adapters.")}
    problems = [f"{k} missing" for k in sorted(set(own) - set(tensors))]
    problems += [f"{k}: {tuple(tensors[k].shape)} != {tuple(p.shape)}" for k, p in own.items()
                 if k in tensors and tuple(tensors[k].shape) != tuple(p.shape)]
    if problems or not own:
        raise CheckpointError(f"model.init_from {checkpoint} does not fit this model's adapters: "
                              f"{preview(problems, 3, '; ') or 'this model has no adapters'}",
                              "start from a checkpoint of the same backbone and adapter layout")
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(tensors[k])


def wrap_model(model: torch.nn.Module, world: World, device: torch.device, *,
               compile_model: bool) -> torch.nn.Module:
    """What the loop calls forward on: DDP around the model when distributed, compiled if asked."""
    wrapped: torch.nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if compile_model:
        wrapped = cast(torch.nn.Module, torch.compile(wrapped))
    return wrapped
