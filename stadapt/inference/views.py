"""Multi-view prediction and validation: softmax per view, probabilities averaged over the views of a video.

Temporal views are spread evenly over the video, spatial views are 1 centre crop or 3 crops along
the long side. A video that cannot be decoded is reported as skipped, never replaced. Training's
validation and `stadapt eval` both go through here.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

FUSION = "mean of per-view softmax probabilities"


@dataclass
class Predictions:
    """Fused class probabilities of the evaluated videos, in data set order."""

    probs: torch.Tensor  # (N, C) float32
    labels: torch.Tensor  # (N,)
    indices: torch.Tensor  # (N,) positions in the list
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def infer_dataset(
    model: torch.nn.Module,
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
    """Run every video's views through `model` and fuse them (dataset items are (V, 3, T, S, S)).

    `max_clips` bounds the clips (views) per forward pass: a batch's views run in chunks of that size,
    so memory does not grow with T x S.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from stadapt.data import collate_clips
    from stadapt.data.on_device import to_model_input

    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_clips,
        pin_memory=device.type == "cuda", generator=torch.Generator(),
    )
    was_training = model.training
    model.eval()
    probs, labels, indices, skipped = [], [], [], []
    start = time.perf_counter()
    with tqdm(total=len(dataset), desc=desc, unit="video", disable=not progress, leave=False,
              dynamic_ncols=True) as bar:
        for batch in loader:
            skipped.extend(batch["skipped"])
            bar.update(len(batch["label"]) + len(batch["skipped"]))
            if batch["video"] is None:
                continue
            video = to_model_input(batch, dataset.transform, device)  # uint8 -> normalised views, there
            b, v = video.shape[:2]
            context = (precision.autocast(device) if precision is not None
                       else torch.autocast(device.type, enabled=False))
            clips = video.flatten(0, 1)
            step = max_clips or len(clips)
            with context:
                logits = torch.cat([model(clips[i : i + step]) for i in range(0, len(clips), step)])
            fused = logits.float().softmax(dim=-1).view(b, v, -1).mean(dim=1)
            probs.append(fused.cpu())
            labels.append(batch["label"])
            indices.append(batch["index"])
    model.train(was_training)
    num_classes = getattr(getattr(model, "head", None), "fc", None)
    width = num_classes.out_features if num_classes is not None else 0
    return Predictions(
        probs=torch.cat(probs) if probs else torch.zeros(0, width),
        labels=torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        indices=torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


def infer_dataset_sharded(
    model: torch.nn.Module,
    entries: list[Any],
    make_dataset: Any,
    world: Any,
    **kwargs: Any,
) -> Predictions:
    """`predict` with the videos split over the processes of `world` (video i goes to process
    i mod N: no video twice, none dropped), merged on every process in list order.

    `make_dataset(entries)` builds the dataset of a shard; `kwargs` go to `predict`.
    """
    if world.size == 1:
        return infer_dataset(model, make_dataset(entries), **kwargs)
    positions = list(range(world.rank, len(entries), world.size))
    part = infer_dataset(model, make_dataset([entries[i] for i in positions]), **kwargs)
    local = {
        "probs": part.probs,
        "labels": part.labels,
        "indices": torch.tensor([positions[i] for i in part.indices.tolist()], dtype=torch.long),
        "skipped": [{**s, "index": positions[s["index"]]} for s in part.skipped],
        "seconds": part.seconds,
    }
    parts = world.gather(local)
    indices = torch.cat([q["indices"] for q in parts])
    order = indices.argsort()
    return Predictions(
        probs=torch.cat([q["probs"] for q in parts])[order],
        labels=torch.cat([q["labels"] for q in parts])[order],
        indices=indices[order],
        skipped=sorted((s for q in parts for s in q["skipped"]), key=lambda s: s["index"]),
        seconds=max(q["seconds"] for q in parts),
    )


def summarize(pred: Predictions, classes: list[str]) -> dict[str, Any]:
    """Top-1, top-5 (top-k for fewer classes), per-class and mean-class accuracy, confusion matrix."""
    n, c = len(pred.labels), len(classes)
    confusion = torch.zeros(c, c, dtype=torch.long)
    if n == 0:
        return {"videos": 0, "top1": None, "top5": None, "mean_class_accuracy": None,
                "per_class": {}, "confusion": confusion.tolist()}
    k = min(5, c)
    top = pred.probs.topk(k, dim=1).indices
    top1 = (top[:, 0] == pred.labels).float().mean().item()
    topk = (top == pred.labels[:, None]).any(dim=1).float().mean().item()
    confusion.index_put_((pred.labels, top[:, 0]), torch.ones(n, dtype=torch.long), accumulate=True)
    per_class = {}
    for i, name in enumerate(classes):
        total = int(confusion[i].sum())
        per_class[name] = {"videos": total, "accuracy": (confusion[i, i].item() / total) if total else None}
    seen = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {
        "videos": n,
        "top1": top1,
        "top5": topk,
        "top5_k": k,
        "mean_class_accuracy": sum(seen) / len(seen),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


@dataclass(frozen=True)
class ValidationResult:
    """A run's validation at one step, as metrics.jsonl records it (split "val")."""

    top1: float | None
    top5: float | None
    mean_class_accuracy: float | None
    videos: int
    skipped: int
    views: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(model: torch.nn.Module, recipe: Any, entries: list[Any], classes: list[str], variant: Any, *,
             device: torch.device, precision: Any, progress: bool, world: Any) -> ValidationResult:
    """Evaluate the training model on the recipe's validation list with its views (split over the processes)."""
    from stadapt.training.setup import eval_dataset, parse_views

    views = parse_views(recipe.data.views)

    def dataset(part: list[Any]) -> Any:
        return eval_dataset(part, variant, frames=recipe.data.frames, sampling=recipe.data.sampling,
                            stride=recipe.data.stride, views=views, decoder=recipe.data.decoder,
                            decode_device=recipe.data.decode_device)

    per_batch = max(1, recipe.micro_batch // (views[0] * views[1]))
    pred = infer_dataset_sharded(model, entries, dataset, world, batch_size=per_batch,
                                 num_workers=recipe.data.num_workers, device=device, precision=precision,
                                 progress=progress, desc="validate")
    summary = summarize(pred, classes)
    return ValidationResult(summary["top1"], summary["top5"], summary["mean_class_accuracy"], summary["videos"],
                            len(pred.skipped), recipe.data.views)
