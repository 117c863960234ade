"""Data-parallel training's batch plan: how one optimizer step is split over processes and forward passes.

The recipe's `optim.batch_size` is the GLOBAL batch; each process (`stadapt.runtime.distributed`: who
this process is under torchrun) runs batch / world clips per step in micro-batches of at most
`optim.micro_batch`, so a run computes the same steps on any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from stadapt.errors import StadaptError


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step of `global_batch` clips is split over processes and forward passes."""

    global_batch: int
    world: int
    per_process: int  # clips each process runs per step
    micro_batch: int  # clips per forward pass
    accumulation: int  # forward passes per process per step


def plan_batches(global_batch: int, micro_batch: int, world: int) -> BatchPlan:
    """Split the global batch; every part must divide evenly, or the run would not be the same run."""
    if global_batch % world:
        raise StadaptError(
            f"optim.batch_size {global_batch} cannot be split evenly over {world} processes",
            f"use a multiple of {world} (the batch size is global), or a different --nproc_per_node",
        )
    per_process = global_batch // world
    micro = min(micro_batch, per_process)
    if per_process % micro:
        fits = max(d for d in range(1, micro + 1) if per_process % d == 0)
        raise StadaptError(
            f"each of {world} processes runs {per_process} clips per step, not a multiple of "
            f"optim.micro_batch {micro}",
            f"set optim.micro_batch={fits}",
        )
    return BatchPlan(global_batch, world, per_process, micro, per_process // micro)
