"""Shared-memory batch buffers that a DataLoader worker reuses instead of allocating one per batch.

A worker hands a batch to the main process through shared memory. torch's own collate allocates a
fresh segment for every batch, and on Linux a fresh tmpfs segment costs its page allocation and
zeroing on first touch: about 11 ms for a 17 MB batch of uint8 clips, 8 % of what decoding that batch
costs (issue 22.5). Here each worker keeps a few segments ("slots") and writes the next batch into one
that the main process has finished with.

Finished is said by the main process, never guessed: each slot ends in one flag byte, 1 while a batch
in it is in flight, and the batch carries a `SlotLease` (a view of that byte, so it travels with the
same shared segment) whose `release()` clears it. `to_model_input` releases after the batch has been
copied out to the model's input, and torch's pin-memory thread releases through `SlotLease.pin_memory`
right after it has pinned the batch's tensors (the lease sits after them in the batch). A consumer that
never releases costs nothing but the pool: once all `MAX_SLOTS` slots are in flight the worker falls back
to a fresh segment per batch, as torch does, so a batch is never overwritten while someone may read it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch

MAX_SLOTS = 4  # a worker's batches in flight: the loader's prefetch (2 by default), one being consumed, one pinning
_ROUND = 1 << 20  # slot sizes in whole MiB, with an eighth more room, so padded batches of varying size fit


@dataclass
class SlotLease:
    """The right to a worker's shared slot, carried by the batch written into it."""

    flag: torch.Tensor  # one uint8 in the slot's shared segment: 1 in flight, 0 free
    released: bool = False

    def release(self) -> None:
        """The batch's data has been copied out: the worker may write its next batch here. Once only:
        by then the worker may have written another batch into the slot, which a second clear would free."""
        if not self.released:
            self.released = True
            self.flag.zero_()

    def pin_memory(self, *_: object) -> SlotLease:
        """torch's pin-memory thread calls this after pinning the batch's tensors, which come first."""
        self.release()
        return self


def release_batch(batch: Mapping[str, Any]) -> None:
    """Free the shared slot of a batch from `collate_clips` whose video has been copied out (no-op without one)."""
    if batch.get("lease") is not None:
        batch["lease"].release()


@dataclass
class _Slot:
    storage: torch.UntypedStorage
    capacity: int  # bytes of batch data; the flag byte follows
    flag: torch.Tensor


_slots: list[_Slot] = []
_owner = 0  # the pid whose slots `_slots` holds: a forked worker starts with none of its parent's


def shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, SlotLease | None]:
    """An uninitialised contiguous tensor in shared memory, in one of this process's reused slots when
    one is free (with its lease) or in a fresh segment (no lease) when all are in flight."""
    global _owner
    if _owner != os.getpid():
        _slots.clear()
        _owner = os.getpid()
    count = 1
    for size in shape:
        count *= size
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    slot = _free_slot(nbytes)
    if slot is None:
        storage = torch.UntypedStorage._new_shared(nbytes)
        return torch.empty(0, dtype=dtype).set_(storage).view(shape), None
    slot.flag.fill_(1)
    return _view(slot.storage, 0, shape, dtype), SlotLease(slot.flag)


def _free_slot(nbytes: int) -> _Slot | None:
    """The smallest free slot that holds `nbytes`, a new one while the pool has room, else None."""
    free = [s for s in _slots if s.capacity >= nbytes and not int(s.flag.item())]
    if free:
        return min(free, key=lambda s: s.capacity)
    if len(_slots) >= MAX_SLOTS:
        small = [s for s in _slots if not int(s.flag.item())]
        if not small:
            return None
        _slots.remove(small[0])  # free but too small for this batch: make room for one that fits
    capacity = -(-(nbytes + nbytes // 8) // _ROUND) * _ROUND
    storage = torch.UntypedStorage._new_shared(capacity + 1)
    flag = _view(storage, capacity, (1,), torch.uint8)
    flag.zero_()
    _slots.append(_Slot(storage, capacity, flag))
    return _slots[-1]


def _view(storage: torch.UntypedStorage, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous `shape` tensor of `dtype` over `storage` from element `offset`."""
    stride: list[int] = []
    step = 1
    for size in reversed(shape):
        stride.insert(0, step)
        step *= size
    return torch.empty(0, dtype=dtype).set_(cast(Any, storage), offset, shape, tuple(stride))
