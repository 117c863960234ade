"""AdamW with one pair of parameter groups per part of the model: backbone, adapters, head.

Each part's learning rate AND weight decay are the recipe's times `optim.scale.<part>` (the paper's
baselines: full fine-tuning trains the CLIP layers at 1/100, transfer trains adapters at 1/10). Within
a part, weights decay and 1-d tensors (biases, norm scales) do not (reference). Groups come in a fixed
order (parts as in PARTS, decay before no-decay, parameters by name) and empty groups are left out, so
a resumed run's saved optimizer state maps onto the same groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from stadapt.recipe.schema import OptimSection

PARTS = ("backbone", "adapters", "head")


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = cast(nn.Module, model._orig_mod)
        else:
            return model


def model_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(part, module) pairs: a VideoClassifier's backbone, adapters and head; any other module is one
    part, "model" (scale 1)."""
    from stadapt.model.classifier import VideoClassifier

    inner = _unwrap(model)
    if isinstance(inner, VideoClassifier):
        return list(inner.parts().items())
    return [("model", inner)]


def param_groups(model: nn.Module, weight_decay: float, scale: Mapping[str, float] | None = None) -> list[dict]:
    """The trainable parameters as AdamW groups: per part, decay then no-decay; empty groups left out.

    Each group carries `name` ("<part>.decay" / "<part>.no_decay") and `lr_scale` (what `set_lr`
    multiplies the learning rate by); its weight decay is `weight_decay x scale` (0 for no-decay).
    """
    scale = scale or {}
    groups: list[dict[str, Any]] = []
    for part, module in model_parts(model):
        factor = float(scale.get(part, 1.0))
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for _, p in sorted(module.named_parameters(), key=lambda item: item[0]):
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        kinds: tuple[tuple[str, list[nn.Parameter], float], ...] = (
            ("decay", decay, weight_decay * factor), ("no_decay", no_decay, 0.0))
        for kind, params, wd in kinds:
            if params:
                groups.append({"params": params, "weight_decay": wd, "lr_scale": factor, "name": f"{part}.{kind}"})
    grouped = {id(p) for g in groups for p in g["params"]}
    missed = [n for n, p in _unwrap(model).named_parameters() if p.requires_grad and id(p) not in grouped]
    if missed:
        raise ValueError(f"trainable parameters outside the model's parts: {missed[:3]}")
    return groups


def build_optimizer(model: nn.Module, optim: OptimSection, device: torch.device | str = "cpu") -> torch.optim.AdamW:
    """AdamW over `param_groups` with the recipe's lr, weight decay, betas and per-part scales; the fused
    CUDA kernel where it is available (same maths, fewer launches)."""
    groups = param_groups(model, optim.weight_decay, optim.scale.model_dump())
    for group in groups:
        group["lr"] = optim.lr * group["lr_scale"]
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.betas[0], optim.betas[1]), fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of this step: `lr` times each group's `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
