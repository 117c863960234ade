"""Everything beyond the weights that a run needs to continue exactly: optimizer moments, the grad
scaler, RNG states and counters, stored without pickle (tensors as safetensors, the rest as JSON).

Files inside a checkpoint directory (beside trainable.safetensors and stadapt.json):
    trainer_state.safetensors   optimizer tensors (`optim.<param>.<name>`), RNG states (`rng.*`)
    trainer_state.json          step, counters, optimizer param groups, scaler state
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from stadapt.checkpoints.files import STATE_META, STATE_TENSORS  # the file names of a checkpoint, defined once
from stadapt.errors import CheckpointError


@dataclass
class RunCounters:
    """Counters of a run; `step` = optimizer steps taken, so the data stream position is step * batch."""

    step: int = 0
    clips_seen: int = 0
    skipped: int = 0  # training items dropped because neither their video nor any replacement decoded
    replaced: int = 0  # training videos that failed to decode and were replaced by another
    train_seconds: float = 0.0
    best: dict[str, Any] = field(default_factory=dict)


def _optimizer_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, values in sd["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, torch.Tensor]:
    """This process's RNG states (CPU, and its CUDA devices when CUDA is in use)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{i}"] = rng
    return states


def state_files(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    counters: RunCounters,
    rng_states: list[dict[str, torch.Tensor]] | None = None,
) -> dict[str, bytes]:
    """The trainer-state files as bytes, for `write_checkpoint(extra_files=...)` (one atomic write).

    `rng_states` holds every process's `rng_state()` in rank order (default: this process's), so
    each process of a distributed run resumes its own random streams (dropout masks).
    """
    from safetensors.torch import save

    tensors, optim_meta = _optimizer_flat(optimizer)
    for rank, states in enumerate(rng_states or [rng_state()]):
        prefix = "rng" if rank == 0 else f"rng.rank{rank}"
        for name, value in states.items():
            tensors[f"{prefix}.{name}"] = value
    meta = {"progress": asdict(counters),  # the file keeps its key: older runs resume
            "optimizer": optim_meta, "scaler": scaler.state_dict()}
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return {STATE_TENSORS: save(contiguous), STATE_META: (json.dumps(meta, indent=1) + "\n").encode()}


def has_state(checkpoint: Path) -> bool:
    return (checkpoint / STATE_TENSORS).is_file() and (checkpoint / STATE_META).is_file()


def restore_state(
    checkpoint: Path, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, rank: int = 0
) -> RunCounters:
    """Load optimizer, scaler and RNG states written by `state_files` (process `rank`'s own RNG
    states when the run was distributed); returns the counters."""
    from safetensors import SafetensorError

    from stadapt.checkpoints.files import load_tensors_verified, read_verified
    from stadapt.checkpoints.format import read_meta_file

    if not has_state(checkpoint):
        raise CheckpointError(f"{checkpoint} holds no trainer state", "resume from a run's checkpoints/last")
    recorded = read_meta_file(checkpoint)  # the checksums of both files (runs before they were recorded: none)
    tensors = load_tensors_verified(checkpoint / STATE_TENSORS, recorded)
    state_meta = read_verified(checkpoint / STATE_META, recorded)
    try:
        meta = json.loads(state_meta)
        optimizer.load_state_dict(_optimizer_state_dict(tensors, meta["optimizer"]))
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"the trainer state in {checkpoint} is damaged ({exc})", "start the run again") from exc
    if meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    prefix = f"rng.rank{rank}" if rank and f"rng.rank{rank}.cpu" in tensors else "rng"
    torch.set_rng_state(tensors[f"{prefix}.cpu"])
    names = [k for k in tensors if k.startswith(f"{prefix}.cuda.")]
    cuda = [tensors[k] for k in sorted(names, key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    return RunCounters(**meta["progress"])
