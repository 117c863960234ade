"""The one multi-view inference loop: a test dataset in batches on the device, a model over their views in
chunks under the run's autocast, and the fusion of the views (the model's own, `fusion_for`: the mean of
per-view softmax, or of each label's sigmoid for a SigLIP text head or zero-shot model).

Temporal views are spread evenly over a video, spatial views are 1 centre crop or 3 crops along the long
side (`stadapt.data.views.test_dataset`); DataLoader workers decode, `to_model_input` makes the views where
the model runs. A video that cannot be decoded is reported as skipped, never replaced. Training's
validation, `stadapt eval`, `stadapt predict` (checkpoints and ONNX graphs) and `stadapt extract-features`
all go through here, so a video gives the same input and the same probabilities everywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FUSION = "mean of per-view softmax probabilities"
SIGMOID_FUSION = "mean of per-view sigmoid probabilities"

Fusion = Callable[[torch.Tensor], torch.Tensor]


def fuse(logits: torch.Tensor) -> torch.Tensor:
    """(B, V, C) logits of the views of B videos -> (B, C) float32 probabilities: softmax per view, then
    the mean over the views (`FUSION`)."""
    return logits.float().softmax(dim=-1).mean(dim=1)


def fuse_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """(B, V, C) logits -> (B, C) float32 probabilities: each label's sigmoid per view, then the mean over
    the views (`SIGMOID_FUSION`; the labels' probabilities need not sum to 1)."""
    return logits.float().sigmoid().mean(dim=1)


def fusion_for(model: Any) -> tuple[Fusion, str]:
    """The views' fusion of `model` and its description (eval.json's `fusion`): the mean of each label's
    sigmoid when its classifier scores labels independently (a text head's or a zero-shot model's SigLIP
    tower says `sigmoid`), else of the softmax over the classes. One function, so predict, eval,
    validation and zero-shot never disagree about a model's probabilities."""
    parts = [getattr(model, part, None) for part in ("head", "tower")] + [model]  # the model: an ONNX runner
    sigmoid = any(getattr(part, "sigmoid", False) is True for part in parts)
    return (fuse_sigmoid, SIGMOID_FUSION) if sigmoid else (fuse, FUSION)


@dataclass
class Predictions:
    """Fused class probabilities of the evaluated videos, in data set order."""

    probs: torch.Tensor  # (N, C) float32
    labels: torch.Tensor  # (N,)
    indices: torch.Tensor  # (N,) positions in the list
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ViewBatch:
    """One batch on the device: its videos' positions in the dataset and labels, their (B, V, 3, T, S, S)
    views (None when none decoded), and the videos that did not decode ({"index", "path", "error"})."""

    indices: torch.Tensor
    labels: torch.Tensor
    views: torch.Tensor | None
    skipped: list[dict[str, Any]]


def default_workers(videos: int) -> int:
    """DataLoader workers: none for a single video (starting one costs more than it saves), else up to 4."""
    return 0 if videos <= 1 else min(4, os.cpu_count() or 1)


def videos_dataset(videos: Sequence[str | Path], spec: Any) -> Any:
    """The test dataset of video files (no labels: 0 each) with the InputSpec `spec`."""
    from stadapt.data.prepared import VideoEntry
    from stadapt.data.views import test_dataset

    return test_dataset([VideoEntry(Path(v), 0) for v in videos], spec)


def view_batches(dataset: Any, *, batch_size: int, num_workers: int, device: torch.device, progress: bool = True,
                 desc: str = "eval") -> Iterator[ViewBatch]:
    """The dataset's videos in order, `batch_size` at a time, decoded by `num_workers` DataLoader workers and
    made into normalised views on `device`, with a progress bar on stderr."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from stadapt.data import collate_clips
    from stadapt.data.on_device import to_model_input

    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_clips,
        pin_memory=device.type == "cuda", generator=torch.Generator(),
    )
    with tqdm(total=len(dataset), desc=desc, unit="video", disable=not progress, leave=False,
              dynamic_ncols=True) as bar:
        for batch in loader:
            bar.update(len(batch["index"]) + len(batch["skipped"]))
            views = None if batch["video"] is None else to_model_input(batch, dataset.transform, device)
            yield ViewBatch(batch["index"], batch["label"], views, list(batch["skipped"]))


def run_views(run: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor, *, max_clips: int | None = None,
              precision: Any = None) -> torch.Tensor:
    """`run` over (B, V, ...) views as B*V clips, at most `max_clips` per call (so memory does not grow with
    T x S), under the autocast of `precision` (a runtime Precision; None: autocast off); (B, V, ...) outputs."""
    b, v = views.shape[:2]
    clips = views.flatten(0, 1)
    step = max_clips or len(clips)
    context = (precision.autocast(views.device) if precision is not None
               else torch.autocast(views.device.type, enabled=False))
    with context:
        out = torch.cat([run(clips[i : i + step]) for i in range(0, len(clips), step)])
    return out.reshape(b, v, *out.shape[1:])


@torch.no_grad()
def infer_dataset(
    model: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    precision: Any = None,
    progress: bool = True,
    desc: str = "eval",
    max_clips: int | None = None,
) -> Predictions:
    """Run every video's views (dataset items are (V, 3, T, S, S)) through `model` (a module, put in eval
    mode for the pass, or any clips -> logits callable) and fuse them as the model's head says
    (`fusion_for`)."""
    fusion = fusion_for(model)[0]
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    probs, labels, indices, skipped = [], [], [], []
    start = time.perf_counter()
    for batch in view_batches(dataset, batch_size=batch_size, num_workers=num_workers, device=device,
                              progress=progress, desc=desc):
        skipped.extend(batch.skipped)
        if batch.views is None:
            continue
        probs.append(fusion(run_views(model, batch.views, max_clips=max_clips, precision=precision)).cpu())
        labels.append(batch.labels)
        indices.append(batch.indices)
    if module is not None:
        module.train(was_training)
    head = getattr(getattr(model, "head", None), "fc", None)
    width = head.out_features if head is not None else 0
    return Predictions(
        probs=torch.cat(probs) if probs else torch.zeros(0, width),
        labels=torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        indices=torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )
