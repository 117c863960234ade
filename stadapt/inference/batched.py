"""Many videos through a loaded model in batches: DataLoader workers decode, the device makes the views.

The clips are made exactly as evaluation makes them (`stadapt.data.views.test_dataset` with the model's
InputSpec, then `to_model_input` on the device), so a video gives the same input as `video_views`. A video
that does not decode is reported with its error, never replaced. Used by `stadapt predict` and
`stadapt extract-features`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stadapt.data.input_spec import InputSpec


@dataclass
class ViewBatch:
    """Decoded videos of one batch: their positions in the input, their (B, V, 3, T, S, S) views on the
    device (None when none decoded), and the videos that failed ({"index", "path", "error"})."""

    indices: list[int]
    views: torch.Tensor | None
    failed: list[dict[str, Any]] = field(default_factory=list)


def default_workers(videos: int) -> int:
    """DataLoader workers: none for a single video (starting one costs more than it saves), else up to 4."""
    return 0 if videos <= 1 else min(4, os.cpu_count() or 1)


def view_batches(videos: list[Path], spec: InputSpec, *, device: torch.device, batch_size: int = 4,
                 workers: int | None = None, progress: bool = True, desc: str = "videos") -> Iterator[ViewBatch]:
    """The videos' views, `batch_size` videos at a time, decoded by `workers` DataLoader workers, with a
    progress bar on stderr."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from stadapt.data.dataset import collate_clips
    from stadapt.data.on_device import to_model_input
    from stadapt.data.prepared import VideoEntry
    from stadapt.data.views import test_dataset

    dataset = test_dataset([VideoEntry(Path(v), 0) for v in videos], spec)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=default_workers(len(videos)) if workers is None else workers,
                        collate_fn=collate_clips, pin_memory=device.type == "cuda")
    with tqdm(total=len(videos), desc=desc, unit="video", disable=not progress, leave=False,
              dynamic_ncols=True) as bar:
        for batch in loader:
            bar.update(len(batch["index"]) + len(batch["skipped"]))
            views = None if batch["video"] is None else to_model_input(batch, dataset.transform, device)
            yield ViewBatch(batch["index"].tolist(), views, list(batch["skipped"]))


def in_chunks(run: Any, views: torch.Tensor, max_clips: int | None) -> torch.Tensor:
    """`run` over the (B, V, ...) views as B*V clips, at most `max_clips` per call; (B, V, ...) outputs."""
    b, v = views.shape[:2]
    clips = views.flatten(0, 1)
    step = max_clips or len(clips)
    out = torch.cat([run(clips[i: i + step]) for i in range(0, len(clips), step)])
    return out.reshape(b, v, *out.shape[1:])
