"""Multi-view evaluation over a list: the videos split over the processes (`infer_dataset_sharded`), the
scores of the fused probabilities (`summarize`), and training's validation (`validate`).

The prediction itself (softmax per view, probabilities averaged over the views of a video) is the one loop,
stadapt.inference.loop, which `stadapt eval` and `stadapt predict` also run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from stadapt.inference.loop import Predictions, infer_dataset


def infer_dataset_sharded(
    model: torch.nn.Module,
    entries: list[Any],
    make_dataset: Any,
    world: Any,
    **kwargs: Any,
) -> Predictions:
    """`infer_dataset` with the videos split over the processes of `world` (video i goes to process
    i mod N: no video twice, none dropped), merged on every process in list order.

    `make_dataset(entries)` builds the dataset of a shard; `kwargs` go to `infer_dataset`.
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
    from stadapt.runtime.build import eval_dataset
    from stadapt.runtime.views import parse_views

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
