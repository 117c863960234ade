"""Who this process is among torchrun's processes, and the few collectives training and evaluation need.

`stadapt train` and `stadapt eval` run unchanged as one process or under `torchrun --nproc_per_node N`
(multi-node through torchrun's own options): torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)
decides. NCCL on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from stadapt.errors import StadaptError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over all processes, where it lies (the training device: no trip to the host)."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def world_from_env() -> World:
    """The World torchrun describes in the environment (a single process when it does not)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise StadaptError(f"malformed torchrun environment ({exc})", "launch with torchrun or plain stadapt") from None
    return World(rank=rank, size=size, local_rank=local)


def init_world(device: torch.device) -> World:
    """Join the process group torchrun set up (a no-op for one process); returns this process's World."""
    world = world_from_env()
    if not world.distributed or dist.is_initialized():
        return world
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)
    return world


def process_device(device: torch.device, world: World) -> torch.device:
    """One GPU per process: the LOCAL_RANK-th (the recipe's `cuda` means "this process's GPU")."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
