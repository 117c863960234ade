"""The dtypes a model computes and is stored in: a precision's autocast dtype, and the dtype a frozen
backbone may be kept in under it.

The rule is written once, here: training (`stadapt.runtime.precision`, which adds the device policy of
"auto"), the checkpoint loader and the benchmarks all take it from this module.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from stadapt.errors import StadaptError
from stadapt.model.classifier import VideoClassifier


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and whether fp16 loss scaling is needed."""

    dtype: torch.dtype | None
    scale_loss: bool

    @property
    def name(self) -> str:
        return next(name for name, dtype in PRECISION_DTYPES.items() if dtype == self.dtype)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


PRECISION_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_named(name: str) -> Precision:
    """The precision "fp32", "bf16" or "fp16" stands for (fp16 scales the loss); "auto" is the runtime's
    to choose (`stadapt.runtime.precision.resolve_precision`)."""
    if name not in PRECISION_DTYPES:
        raise StadaptError(f"a model runs in fp32, bf16 or fp16, not {name!r}",
                           "choose one of them (the commands and stadapt.load_model also take 'auto')")
    return Precision(PRECISION_DTYPES[name], scale_loss=name == "fp16")


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
