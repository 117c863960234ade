"""The one precision rule of training and inference: the autocast dtype a name stands for on a device,
the dtype a frozen backbone is kept in, and the precision a saved model runs in.

`stadapt train` (`train.precision`, `train.backbone_storage`), `stadapt eval` / `predict` / the API
(`--precision`, "auto" = the run's own on this device) and the benchmarks all go through these
functions, so a model computes in the same dtypes wherever it runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from stadapt.errors import StadaptError
from stadapt.model.classifier import VideoClassifier
from stadapt.vocabulary import PRECISIONS


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and whether fp16 loss scaling is needed."""

    dtype: torch.dtype | None
    scale_loss: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto`: bf16 on GPUs that have it, fp16 with loss scaling on older GPUs, float32 on the CPU
    (CPU autocast is slower than float32 on most CPUs without bf16 units)."""
    if name == "auto":
        if device.type != "cuda":
            return Precision(None, False)
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp32":
        return Precision(None, False)
    if name == "bf16":
        return Precision(torch.bfloat16, False)
    if device.type != "cuda":
        raise StadaptError(f"train.precision=fp16 needs a CUDA device, this run uses {device}", "use bf16 or fp32")
    return Precision(torch.float16, True)


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


def half_storage_fits(model: VideoClassifier) -> bool:
    """Whether the backbone may be kept in 16 bits at all: only when none of its parameters train (a
    trained parameter needs float32)."""
    return not model.backbone_trains


def backbone_storage_dtype(storage: str, model: VideoClassifier, precision: Precision,
                           device: torch.device) -> torch.dtype | None:
    """The dtype to keep the backbone in, or None for float32.

    `half`: the autocast dtype (bf16, or fp16 on GPUs without bf16), for a frozen backbone only;
    `auto`: the same where it is safe: on CUDA, with autocast on, the backbone frozen; `fp32`: never.
    """
    if storage == "fp32":
        return None
    if storage == "auto":
        safe = device.type == "cuda" and precision.dtype is not None and half_storage_fits(model)
        return precision.dtype if safe else None
    if not half_storage_fits(model):
        raise StadaptError(
            f"train.backbone_storage=half keeps the backbone in 16 bits, but tuning={model.tuning} trains "
            "backbone parameters (they need float32)",
            "set train.backbone_storage=auto (or fp32), or use tuning=st_adapter or linear",
        )
    if precision.dtype is None:
        raise StadaptError(
            "train.backbone_storage=half needs autocast to run the 16-bit backbone, but this run uses "
            f"float32 (train.precision={precision.name} on {device})",
            "set train.precision=bf16 (or fp16 on CUDA), or train.backbone_storage=auto",
        )
    return precision.dtype


def apply_memory_options(
    model: VideoClassifier, *, storage: str, checkpointing: bool | str, precision: Precision, device: torch.device
) -> None:
    """`train.backbone_storage` and `train.checkpointing` (activation checkpointing of the blocks, or of
    their MLP branches only with "mlp")."""
    dtype = backbone_storage_dtype(storage, model, precision, device)
    if dtype is not None:
        model.store_backbone_as(dtype)
    model.checkpointing = checkpointing
