"""Multi-view evaluation: softmax per view, probabilities averaged over the views of a video.

Temporal views are spread evenly over the video, spatial views are 1 centre crop or 3 crops along
the long side. A video that cannot be decoded is reported as skipped, never replaced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
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
def predict(
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


def predict_sharded(
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
        return predict(model, make_dataset(entries), **kwargs)
    positions = list(range(world.rank, len(entries), world.size))
    part = predict(model, make_dataset([entries[i] for i in positions]), **kwargs)
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


def format_table(report: dict[str, Any]) -> str:
    """A short, human-readable table of an eval report."""
    lines = [
        f"videos {report['videos']}  skipped {report['skipped']}  views {report['views']} ({report['fusion']})",
        f"top-1 {_pct(report['top1'])}   top-{report.get('top5_k', 5)} {_pct(report['top5'])}   "
        f"mean class {_pct(report['mean_class_accuracy'])}",
        "",
        f"{'class':<32} {'videos':>6} {'top-1':>7}",
    ]
    for name, row in report["per_class"].items():
        lines.append(f"{name[:32]:<32} {row['videos']:>6} {_pct(row['accuracy']):>7}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def resolve_target(target: Path | None) -> tuple[Path, Path | None]:
    """(checkpoint directory, run directory or None) for a run, a checkpoint, an `hf-hub:ORG/NAME` id, or
    None = latest run."""
    from stadapt.engine.rundir import RunDir, RunError, latest_run
    from stadapt.hub import checkpoint_dir, is_hub_id

    if is_hub_id(target):
        return checkpoint_dir(str(target)), None
    if target is None:
        run = RunDir(latest_run([Path("runs")]))
        return run.last, run.path
    target = Path(target)
    if (target / "stadapt.json").is_file():
        parent = target.parent.parent
        return target, parent if RunDir(parent).is_run() else None
    run = RunDir(target)
    if (run.last / "stadapt.json").is_file():
        return run.last, run.path
    if not target.exists():
        raise RunError(f"{target} does not exist", "pass a run directory (runs/NAME) or a checkpoint directory")
    raise RunError(f"{target} is neither a run directory nor a checkpoint",
                   "pass runs/NAME or runs/NAME/checkpoints/last")


def run_eval(
    target: Path | None,
    *,
    views: str | None = None,
    data_list: Path | None = None,
    root: Path | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    device: str = "auto",
    backbone_weights: str | None = None,
    out: Path | None = None,
    progress: bool = True,
    max_clips: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on a list; write the JSON report, a per-video predictions CSV and a
    confusion-matrix PNG beside it. Under torchrun the videos are split over the processes (none
    twice, none dropped) and only the first process writes."""
    import json

    from stadapt import __version__
    from stadapt.api import load_model
    from stadapt.checkpoint import TENSORS_FILE, read_checkpoint
    from stadapt.data.prepared import file_sha256, open_prepared
    from stadapt.engine.setup import eval_dataset, parse_views, resolve_device
    from stadapt.errors import StadaptError
    from stadapt.fileio import atomic_write_text
    from stadapt.hub import output_home
    from stadapt.plots import confusion_matrix

    checkpoint, run = resolve_target(target)
    meta, _ = read_checkpoint(checkpoint)
    recipe = meta.get("recipe") or {}
    data = recipe.get("data") or {}
    if root is None and not data:
        raise StadaptError(f"{checkpoint} records no data set", "pass --root DIR --list FILE")
    prepared = open_prepared(root if root is not None else data["root"])
    list_file = data_list if data_list is not None else Path(data.get("val_list", "val.txt"))
    classes = list(meta.get("classes") or [])
    if prepared.classes != classes:
        raise StadaptError(
            f"{prepared.root}/classes.txt does not match the {len(classes)} classes the model was trained on",
            "evaluate on a data set prepared with the same classes",
        )
    entries = prepared.entries(list_file)
    view_text = views or data.get("views", "1x1")
    temporal, spatial = parse_views(view_text)
    from stadapt.engine.distributed import init_world, process_device, world_from_env

    torch_device = process_device(resolve_device(device), world_from_env())
    world = init_world(torch_device)
    model = load_model(checkpoint, backbone_weights=backbone_weights, device=torch_device)
    from stadapt.checkpoint import checkpoint_variant

    variant = checkpoint_variant(meta)
    frames = int(meta["model"]["num_frames"])

    def dataset(part: list[Any]) -> Any:
        return eval_dataset(part, variant, frames=frames, sampling=data.get("sampling", "stride"),
                            stride=int(data.get("stride", 16)), views=(temporal, spatial))

    pred = predict_sharded(model, entries, dataset, world, batch_size=batch_size,
                           num_workers=workers if workers is not None else int(data.get("num_workers", 2)),
                           device=torch_device, progress=progress and world.main, max_clips=max_clips)
    summary = summarize(pred, classes)
    list_path = prepared.list_path(list_file)
    report = {
        "stadapt_version": __version__,
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": file_sha256(checkpoint / TENSORS_FILE),
        "step": meta.get("step"),
        "list": str(list_path),
        "list_sha256": prepared.list_sha256(list_file),
        "classes_sha256": (prepared.manifest or {}).get("classes_sha256"),
        "views": f"{temporal}x{spatial}",
        "temporal_views": temporal,
        "spatial_views": spatial,
        "fusion": FUSION,
        "frames": frames,
        "sampling": data.get("sampling", "stride"),
        "stride": data.get("stride"),
        "crop_size": variant.image_size,
        "short_side": variant.image_size,
        "processes": world.size,
        "listed": len(entries),
        "skipped": len(pred.skipped),
        "skipped_videos": pred.skipped,
        "seconds": round(pred.seconds, 3),
        **summary,
    }
    if out is None:
        out = (run if run is not None else output_home(checkpoint)) / "eval.json"
    out = Path(out)
    if not world.main:
        return report, out
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".predictions.csv"), predictions_csv(pred, entries, classes))
    if summary["videos"]:
        confusion_matrix(summary["confusion"], classes, out.with_suffix(".confusion.png"),
                         title=f"{checkpoint.parent.parent.name}: top-1 {100 * summary['top1']:.1f}% "
                               f"({report['views']})")
    return report, out


def predictions_csv(pred: Predictions, entries: list[Any], classes: list[str]) -> str:
    """One row per listed video: its label, the fused top-1 (and top-5) prediction, or why it was skipped."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "path", "label", "label_name", "status", "prediction", "prediction_name",
                     "probability", "correct", "top5", "error"])
    k = min(5, len(classes))
    rows: dict[int, list[Any]] = {}
    for row, index in enumerate(pred.indices.tolist()):
        probs = pred.probs[row]
        top = probs.topk(k).indices.tolist()
        label = int(pred.labels[row])
        rows[index] = [label, classes[label], "ok", top[0], classes[top[0]], f"{float(probs[top[0]]):.6f}",
                       int(top[0] == label), "|".join(classes[i] for i in top), ""]
    for skipped in pred.skipped:
        label = entries[skipped["index"]].label
        rows[skipped["index"]] = [label, classes[label], "skipped", "", "", "", "", "", skipped["error"]]
    for index in sorted(rows):
        writer.writerow([index, str(entries[index].path), *rows[index]])
    return buffer.getvalue()
