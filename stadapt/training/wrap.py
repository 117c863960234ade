"""What the loop trains and calls forward on: the model started from another run's trained tensors
(`model.init_from`), and wrapped in DistributedDataParallel under torchrun and `torch.compile` if asked."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch

from stadapt.checkpoints.format import read_checkpoint
from stadapt.errors import CheckpointError, preview
from stadapt.runtime.distributed import World


def init_adapters(model: torch.nn.Module, checkpoint: Path) -> None:
    """Start from another run's trained tensors (model.init_from), strictly: every tensor this model
    trains besides its head (a method's modules, and the backbone parameters a method trains, such as
    AIM's final norm or a fine-tuned backbone) present with its shape; the source's head is left out (its
    classes are not this run's)."""
    _, tensors = read_checkpoint(checkpoint)
    own = {k: p for k, p in model.named_parameters() if p.requires_grad and not k.startswith("head.")}
    problems = [f"{k} missing" for k in sorted(set(own) - set(tensors))]
    problems += [f"{k}: {tuple(tensors[k].shape)} != {tuple(p.shape)}" for k, p in own.items()
                 if k in tensors and tuple(tensors[k].shape) != tuple(p.shape)]
    if problems or not own:
        raise CheckpointError(f"model.init_from {checkpoint} does not fit the tensors this model trains: "
                              f"{preview(problems, 3, '; ') or 'it trains nothing but its head'}",
                              "start from a checkpoint of the same backbone and tuning method")
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
