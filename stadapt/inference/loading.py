"""A checkpoint loaded to run: the checkpoint loader (stadapt.checkpoints.load) with the precision a
user or command names, "auto" included, chosen from the run's recipe on the device.

eval, predict, extract-features, visualize and `stadapt.load_model` load through `load_for_inference`,
so "auto" means the same everywhere: the run's own precision on CUDA, float32 on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stadapt.checkpoints.load import LoadedModel, build_loaded, open_checkpoint
from stadapt.runtime.precision import inference_precision


def load_for_inference(checkpoint: str | Path, *, backbone_weights: str | Path | None = None,
                       device: str | torch.device = "cpu", precision: str = "auto") -> LoadedModel:
    """The LoadedModel of a checkpoint directory (or `hf-hub:` id) on `device`, in eval mode, running in
    `precision`: fp32, bf16, fp16, or "auto" (see `stadapt.runtime.precision.inference_precision`)."""
    torch_device = torch.device(device)
    opened = open_checkpoint(checkpoint)
    chosen = inference_precision(precision, opened.contract.recipe, torch_device)
    return build_loaded(opened, backbone_weights=backbone_weights, device=torch_device, precision=chosen)
