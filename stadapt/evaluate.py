"""`stadapt eval`: multi-view evaluation of a checkpoint on a list, and its reports.

The prediction itself (softmax per view, probabilities averaged over the views of a video) is
stadapt.engine.validate, which training's validation shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stadapt.engine.rundir import resolve_target
from stadapt.engine.validate import FUSION, Predictions, predict_sharded, summarize


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
