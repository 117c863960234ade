"""A DataLoader worker's reused shared-memory batch slots (stadapt.data.shared_slots, issue 22.5): reused once
the main process has copied a batch out, never overwritten while someone may still read it."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from stadapt.data import shared_slots
from stadapt.data.dataset import collate_clips
from stadapt.data.on_device import to_model_input

SHAPE = (3, 4, 24, 32)  # (3, T, H, W) uint8, as the transforms' worker half leaves a clip


class Clips(Dataset):
    """Deferred (uint8 + params) items whose every byte says which item it is."""

    def __len__(self) -> int:
        return 48

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = torch.full(SHAPE, index % 251, dtype=torch.uint8)
        return {"video": video, "params": torch.zeros(4, dtype=torch.long), "label": 0, "index": index}


def collate_and_count(items: list[dict[str, Any]]) -> dict[str, Any]:
    """collate_clips, plus how many slots the worker holds once it has made the batch."""
    batch = collate_clips(items)
    batch["slots"] = len(shared_slots._slots)
    return batch


class AsFloat:
    def on_device(self, video: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return video.float()


def loader() -> DataLoader:
    return DataLoader(Clips(), batch_size=4, num_workers=1, collate_fn=collate_and_count)


def expected(batch: dict[str, Any]) -> torch.Tensor:
    return (batch["index"] % 251).to(torch.uint8).view(-1, 1, 1, 1, 1).expand(-1, *SHAPE)


def test_a_worker_reuses_its_slots_once_the_main_process_has_copied_each_batch():
    slots = []
    for batch in loader():
        assert batch.get("lease") is not None, "a fresh segment although a released slot should have been free"
        assert list(batch)[-2:] == ["lease", "slots"], "the lease follows the tensors that pin_memory copies"
        assert torch.equal(batch["video"], expected(batch))
        model_input = to_model_input(batch, AsFloat(), torch.device("cpu"))
        assert torch.equal(model_input, expected(batch).float())
        slots.append(batch["slots"])
    assert len(slots) == 12 and max(slots) <= shared_slots.MAX_SLOTS


def test_batches_nobody_releases_are_never_overwritten():
    kept = list(loader())  # a consumer that holds every batch and releases none
    for batch in kept:
        assert torch.equal(batch["video"], expected(batch)), "a worker wrote into a batch still in use"
    leased = [batch.get("lease") is not None for batch in kept]
    assert leased == [True] * shared_slots.MAX_SLOTS + [False] * (len(kept) - shared_slots.MAX_SLOTS)


def test_a_lease_frees_its_slot_once_and_pin_memory_releases_it():
    shared_slots._slots.clear()
    first, lease = shared_empty((1000,))
    lease.release()
    second, again = shared_empty((1000,))
    assert second.data_ptr() == first.data_ptr(), "the released slot is reused"
    lease.release()  # late and repeated: the slot now holds `second`, which must stay leased
    third, _ = shared_empty((1000,))
    assert third.data_ptr() != second.data_ptr()
    assert again.pin_memory() is again and int(again.flag.item()) == 0
    fourth, _ = shared_empty((1000,))
    assert fourth.data_ptr() == second.data_ptr()


def shared_empty(shape: tuple[int, ...]) -> tuple[torch.Tensor, shared_slots.SlotLease]:
    out, lease = shared_slots.shared_empty(shape, torch.uint8)
    assert lease is not None and out.is_shared()
    return out, lease
