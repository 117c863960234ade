"""The one precision rule of training and inference: what "auto" and each name stand for on a device,
the dtype a frozen backbone is kept in (`stadapt.model.precision`), and the precision a saved model runs in.

`stadapt train` (`train.precision`, `train.backbone_storage`), `stadapt eval` / `predict` / the API
(`--precision`, "auto" = the run's own on this device) and the benchmarks all go through these
functions, so a model computes in the same dtypes wherever it runs.
"""

from __future__ import annotations

from typing import Any

import torch

from stadapt.errors import StadaptError
from stadapt.model.classifier import VideoClassifier
from stadapt.model.precision import Precision, backbone_storage_dtype, precision_named
from stadapt.vocabulary import PRECISIONS


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto`: bf16 on GPUs that have it, fp16 with loss scaling on older GPUs, float32 on the CPU
    (CPU autocast is slower than float32 on most CPUs without bf16 units)."""
    if name == "auto":
        if device.type != "cuda":
            return Precision(None, False)
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise StadaptError(f"train.precision=fp16 needs a CUDA device, this run uses {device}", "use bf16 or fp32")
    return precision_named(name)


def inference_precision(name: str, recipe: dict[str, Any] | None, device: torch.device) -> str:
    """The precision to run a model in: `name`, or for "auto" the run's precision on this device: float32
    on the CPU, on CUDA the recipe's `train.precision` (its own "auto": bf16 where the GPU has it, else fp16)."""
    if name not in PRECISIONS:
        raise StadaptError(f"unknown precision {name!r}", f"choose one of: {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise StadaptError(f"--precision fp16 needs a CUDA device, this runs on {device}", "use bf16 or fp32")
    if name != "auto":
        return name
    if device.type != "cuda":
        return "fp32"
    recorded = str(((recipe or {}).get("train") or {}).get("precision", "auto"))
    return resolve_precision(recorded if recorded in PRECISIONS else "auto", device).name


def apply_memory_options(
    model: VideoClassifier, *, storage: str, checkpointing: bool | str, precision: Precision, device: torch.device
) -> None:
    """`train.backbone_storage` and `train.checkpointing` (activation checkpointing of the blocks, or of
    their MLP branches only with "mlp")."""
    dtype = backbone_storage_dtype(storage, model, precision, device)
    if dtype is not None:
        model.store_backbone_as(dtype)
    model.checkpointing = checkpointing
