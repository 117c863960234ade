"""One optimizer step: the unit the training loop repeats and `stadapt bench-train` measures.

A step runs `plan.accumulation` micro-batches forward and backward (the loss of each is its sum over
the clips / the global batch, so accumulated gradients are those of the global batch's mean), then
clips gradients if asked and steps the optimizer through the grad scaler. Loss and accuracy add up on
the device; the host reads them back ONCE per step (one `.tolist()` of a small tensor, all-reduced
over the processes first), so the device is never waited for between micro-batches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from stadapt.data.on_device import DeviceTransform, to_model_input
from stadapt.runtime.distributed import World
from stadapt.training.distributed import BatchPlan
from stadapt.training.optim import set_lr


@dataclass(frozen=True)
class StepResult:
    """What one step did, summed over all processes (host numbers, read after the step's one sync)."""

    loss: float  # mean cross-entropy over the clips of the global batch
    correct: int  # clips whose top-1 prediction was right
    clips: int  # clips that trained (broken videos are replaced, or skipped when no replacement decoded)
    stop: bool  # some process was asked to stop (SIGTERM / Ctrl-C)
    bad_videos: list[dict[str, Any]] = field(default_factory=list)  # every process's, with "kind"
    applied: bool = True  # False when nothing trained or the loss is not finite: the optimizer did not step


class TrainStep:
    """The training step of a model, its optimizer and grad scaler; call it once per optimizer step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, *,
                 precision: Any, device: torch.device, plan: BatchPlan, world: World | None = None,
                 grad_clip: float | None = None, forward: torch.nn.Module | None = None,
                 transform: DeviceTransform | None = None) -> None:
        self.transform = transform  # the data's device half: uint8 batches become model input there
        self.optimizer, self.scaler, self.precision, self.device = optimizer, scaler, precision, device
        self.plan, self.world, self.grad_clip = plan, world or World(), grad_clip
        self.forward = forward if forward is not None else model  # DDP / compiled wrapper of `model`
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        # float64 keeps the loss sums exactly those the host summed before (MPS has no float64)
        self._sum_dtype = torch.float32 if device.type == "mps" else torch.float64

    def __call__(self, batches: Iterator[dict[str, Any]], lr: float, *, stop: bool = False) -> StepResult:
        """Take the next `plan.accumulation` micro-batches of `batches` and make one optimizer step at `lr`."""
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss, correct, clips, bad = self._accumulate(batches)
        # host-known counts go to the device without waiting for it (a copy from pageable memory is staged)
        counts = torch.tensor([clips, len(bad), float(stop)], dtype=self._sum_dtype).to(self.device, non_blocking=True)
        totals = torch.cat([torch.stack([loss, correct.to(self._sum_dtype)]), counts])
        loss_sum, n_correct, n_clips, n_bad, n_stop = self.world.sum_tensor(totals).tolist()  # the one sync
        if n_bad:
            bad = [e for part in self.world.gather(bad) for e in part]
        applied = n_clips > 0 and math.isfinite(loss_sum)
        if applied:
            self._update()
        return StepResult(loss_sum, int(n_correct), int(n_clips), n_stop > 0, bad, applied)

    def _accumulate(self, batches: Iterator[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, int, list[Any]]:
        """Forward and backward over this process's micro-batches; loss and correct stay on the device."""
        loss = torch.zeros((), dtype=self._sum_dtype, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        clips, bad = 0, []
        for k in range(self.plan.accumulation):
            batch = next(batches)
            bad += [{**e, "kind": "replaced"} for e in batch["replaced"]]
            bad += [{**e, "kind": "skipped"} for e in batch["skipped"]]
            last_pass = k == self.plan.accumulation - 1
            with self._no_sync(last_pass):
                if batch["video"] is None:
                    if last_pass and self.world.distributed:  # join the gradient all-reduce all the same
                        (torch.stack([p.sum() for p in self.trainable]).sum() * 0.0).backward()
                    continue
                part_loss, part_correct = self._micro_batch(batch)
            loss += part_loss.detach().to(self._sum_dtype) / self.world.size
            correct += part_correct
            clips += len(batch["label"])
        return loss, correct, clips, bad

    def _micro_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of one micro-batch: (its loss share, its correct count), on the device."""
        if self.transform is not None:
            video = to_model_input(batch, self.transform, self.device)  # uint8 -> normalised, there
        else:  # a batch that is already the model's input (bench-train's random clips)
            video = batch["video"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        with self.precision.autocast(self.device):
            logits = self.forward(video)
        # sum over this pass / global batch, x processes because DDP averages gradients
        loss = F.cross_entropy(logits.float(), labels, reduction="sum") * (self.world.size / self.plan.global_batch)
        self.scaler.scale(loss).backward()
        return loss, (logits.argmax(dim=1) == labels).sum()

    def _update(self) -> None:
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _no_sync(self, last_pass: bool) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step (accumulation)."""
        ddp: Any = getattr(self.forward, "_orig_mod", self.forward)
        if self.world.distributed and not last_pass and hasattr(ddp, "no_sync"):
            return ddp.no_sync()
        return contextlib.nullcontext()
