"""The training DataLoader: the endless, reproducible clip stream in micro-batches, each process's share
of every global batch under torchrun, and workers that leave Ctrl-C and SIGTERM to the main process.
(Validation's loader is inference's: `stadapt.inference.views.infer_dataset_sharded`.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from stadapt.recipe import Recipe
from stadapt.runtime.distributed import World
from stadapt.training.distributed import BatchPlan


class ShardedStream(torch.utils.data.Sampler):
    """This process's share of each global batch of the clip stream: clips [r*P, (r+1)*P) of every
    `global_batch` consecutive ones, so N processes together see exactly what one process sees."""

    def __init__(self, stream: Any, global_batch: int, world: World) -> None:
        self.stream, self.global_batch, self.world = stream, global_batch, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        share = self.global_batch // self.world.size
        lo = self.world.rank * share
        items = iter(self.stream)
        while True:
            chunk = [next(items) for _ in range(self.global_batch)]
            yield from chunk[lo : lo + share]

    def __len__(self) -> int:
        raise TypeError("the clip stream is endless")


def train_loader(dataset: Any, recipe: Recipe, plan: BatchPlan, world: World, *, start: int, device: torch.device):
    """Micro-batches of this process's clips from clip `start` of the stream on (a resumed run's position)."""
    from torch.utils.data import BatchSampler, DataLoader

    from stadapt.data import collate_clips
    from stadapt.training.stream import ClipStream

    stream: Any = ClipStream(len(dataset), seed=recipe.train.seed, start=start)
    if world.distributed:
        stream = ShardedStream(stream, plan.global_batch, world)
    workers = recipe.data.num_workers
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(stream, plan.micro_batch, drop_last=False),
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator(),  # worker seeds must not draw from (and shift) the global RNG
        worker_init_fn=_leave_signals_to_the_main_process,
    )


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT/SIGTERM (Ctrl-C and preemption reach the whole process group):
    the main process stops cleanly and shuts them down; they exit on their own if it dies."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
