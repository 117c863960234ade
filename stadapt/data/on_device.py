"""The device half of the data path: uint8 batches in, normalised float model input out.

DataLoader workers decode and do the per-clip integer work (the transforms' `worker` half: random
draws, RandAugment in uint8, integer crop boxes); a batch travels as uint8 `(B, 3, T, H, W)` (eval:
`(B, V, 3, T, H, W)`), a quarter of the bytes of float32, in pinned memory when the device is CUDA,
with a small int64 tensor of per-clip parameters. Its memory keeps the decoded frames' order (a view of
`(B, T, H, W, 3)`: collation copies each clip as it lies, see `stack_padded`); the device half makes
it contiguous where it runs. `to_model_input` is the one place where a batch
reaches the device: there the float conversion, resize, crop, flip and normalisation run (the
transforms' `on_device` half). The random parameters were drawn in the worker from (seed, epoch,
index), so the worker count changes nothing and a resumed run sees the same clips bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from stadapt.data.shared_slots import SlotLease, release_batch, shared_empty


class DeviceTransform(Protocol):
    """What `to_model_input` needs of a transform (`TrainTransform`, `TestTransform`)."""

    def on_device(self, video: torch.Tensor, params: torch.Tensor) -> torch.Tensor: ...


def to_model_input(batch: dict[str, Any], transform: DeviceTransform, device: torch.device) -> torch.Tensor:
    """Move `batch["video"]` to `device` and turn it into the model's input there.

    A uint8 batch (from a dataset built with `on_device=True`) goes through `transform.on_device`
    with its `params`, which stay on the host (reading them needs no device synchronisation); a batch
    that is already float (a dataset that ran the whole transform in the worker) is only moved. Then the
    batch's shared slot is released (`shared_slots`): while its worker runs, `batch["video"]` may be
    overwritten by a later batch and is not to be read again.
    """
    video = batch["video"].to(device, non_blocking=True)
    if "params" in batch:
        video = transform.on_device(video, batch["params"])
    release_batch(batch)  # copied out: the worker may write its next batch into the same shared slot
    return video


def memory_order(tensor: torch.Tensor) -> tuple[int, ...]:
    """`tensor`'s dimensions from the outermost in memory to the innermost: a (3, T, H, W) view of decoded
    (T, H, W, 3) frames gives (1, 2, 3, 0); `tensor.permute(order)` is laid out row-major."""
    strides = [int(tensor.stride(d)) if tensor.shape[d] > 1 else 0 for d in range(tensor.ndim)]
    return tuple(sorted(range(tensor.ndim), key=lambda d: (-strides[d], d)))


def stack_padded(clips: Sequence[torch.Tensor], shared: bool = False) -> tuple[torch.Tensor, SlotLease | None]:
    """Stack uint8 clips whose last two dimensions (height, width) may differ into one batch, zero-padded
    at the bottom and right to the largest; each clip's own size travels in its params.

    One copy per clip, made in the order the clips lie in memory: a (3, T, H, W) view of decoded
    (T, H, W, 3) frames is copied row by row (a permuting copy into (3, T, H, W) memory costs a worker
    as much again as the copy), and the batch is a (B, 3, T, H, W) view of (B, T, H, W, 3) memory, which
    the device half makes contiguous where it runs.

    `shared` (a batch for the main process): in a DataLoader worker the batch lies in shared memory, as
    torch's own collate puts it, so that handing it over copies nothing, and in one of the worker's reused
    slots when one is free; the lease returned with it frees the slot (see `shared_slots`)."""
    first = clips[0]
    order = memory_order(first)
    if any(memory_order(c) != order for c in clips[1:]):
        order = tuple(range(first.ndim))
    height = max(int(c.shape[-2]) for c in clips)
    width = max(int(c.shape[-1]) for c in clips)
    shape = (*first.shape[:-2], height, width)
    stored = (len(clips), *(shape[d] for d in order))  # the batch as it lies in memory
    lease = None
    if shared and torch.utils.data.get_worker_info() is not None:
        out, lease = shared_empty(stored, first.dtype)
    else:
        out = torch.empty(stored, dtype=first.dtype)
    batch = out.permute(0, *(order.index(d) + 1 for d in range(first.ndim)))  # (B, *clip dims)
    padded = any(c.shape != first.shape for c in clips[1:]) or tuple(first.shape) != shape
    if padded:
        out.zero_()
    for slot, clip in zip(batch, clips, strict=True):
        slot[..., : clip.shape[-2], : clip.shape[-1]].copy_(clip)
    return batch, lease
