"""The device half of the data path: uint8 batches in, normalised float model input out.

DataLoader workers decode and do the per-clip integer work (the transforms' `worker` half: random
draws, RandAugment in uint8, integer crop boxes); a batch travels as uint8 `(B, 3, T, H, W)` (eval:
`(B, V, 3, T, H, W)`), a quarter of the bytes of float32, in pinned memory when the device is CUDA,
with a small int64 tensor of per-clip parameters. `to_model_input` is the one place where a batch
reaches the device: there the float conversion, resize, crop, flip and normalisation run (the
transforms' `on_device` half). The random parameters were drawn in the worker from (seed, epoch,
index), so the worker count changes nothing and a resumed run sees the same clips bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch


class DeviceTransform(Protocol):
    """What `to_model_input` needs of a transform (`TrainTransform`, `TestTransform`)."""

    def on_device(self, video: torch.Tensor, params: torch.Tensor) -> torch.Tensor: ...


def to_model_input(batch: dict[str, Any], transform: DeviceTransform, device: torch.device) -> torch.Tensor:
    """Move `batch["video"]` to `device` and turn it into the model's input there.

    A uint8 batch (from a dataset built with `on_device=True`) goes through `transform.on_device`
    with its `params`, which stay on the host (reading them needs no device synchronisation); a batch
    that is already float (a dataset that ran the whole transform in the worker) is only moved.
    """
    video = batch["video"].to(device, non_blocking=True)
    if "params" not in batch:
        return video
    return transform.on_device(video, batch["params"])


def stack_padded(clips: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack uint8 clips whose last two dimensions (height, width) may differ into one batch, zero-padded
    at the bottom and right to the largest; each clip's own size travels in its params. One copy per
    clip, which is also where a permuted view becomes contiguous."""
    if all(c.shape == clips[0].shape for c in clips):
        return torch.stack(list(clips))
    height = max(int(c.shape[-2]) for c in clips)
    width = max(int(c.shape[-1]) for c in clips)
    lead = tuple(clips[0].shape[:-2])
    out = torch.zeros((len(clips), *lead, height, width), dtype=clips[0].dtype)
    for slot, clip in zip(out, clips, strict=True):
        slot[..., : clip.shape[-2], : clip.shape[-1]].copy_(clip)
    return out
