"""`stadapt eval`: multi-view evaluation of a checkpoint on a list, and its reports.

The prediction itself (softmax per view, or each label's sigmoid for a SigLIP text head, averaged over the
views of a video: `loop.fusion_for`) is the one loop, stadapt.inference.loop, split over the processes by
stadapt.inference.views as training's validation is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stadapt.inference.loop import Predictions, fusion_for
from stadapt.inference.views import infer_dataset_sharded, summarize
from stadapt.runs.lookup import resolve_target


def format_table(report: dict[str, Any]) -> str:
    """A short, human-readable table of an eval report."""
    lines = [
        f"videos {report['videos']}  skipped {report['skipped']}  views {report['views']} ({report['fusion']})"
        + (f"  precision {report['precision']}" if report.get("precision") else ""),
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
    precision: str = "auto",
    which: str | None = None,
    overwrite: bool = False,
    labels: str | Sequence[str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on a list; write the JSON report, a per-video predictions CSV and a
    confusion-matrix PNG beside it. Clips are made as the checkpoint's InputSpec says (`views` overrides
    its test views); the model runs in `precision` ("auto": the run's on this device, float32 on the CPU).
    Under torchrun the videos are split over the processes (none twice, none dropped) and only the first
    process writes. Of a run, `which` checkpoint: "best", "last", or None = best when present (printed).
    An existing report at `out` (and the files named after it) is replaced only when stadapt wrote it and
    `overwrite` is given; the default `out` (RUN/eval.json) is the run's own report, replaced by every eval.
    `labels` (a file, 'a,b', or the labels): evaluate over another label set, which the list's labels index
    into (a run with a frozen text head)."""
    from stadapt.checkpoints.hub import output_home
    from stadapt.data.prepared import open_prepared
    from stadapt.data.views import test_dataset
    from stadapt.errors import StadaptError
    from stadapt.fileio import claim_outputs
    from stadapt.inference.loading import load_for_inference
    from stadapt.inference.relabel import check_label_indices, relabel
    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.distributed import init_world, process_device, world_from_env
    from stadapt.runtime.precision import resolve_precision
    from stadapt.runtime.views import parse_views

    checkpoint, run = resolve_target(target, which)
    default_out = out is None
    out = Path(out) if out is not None else (run if run is not None else output_home(checkpoint)) / "eval.json"
    claim_outputs(report_paths(out), overwrite=overwrite or default_out, ours=report_by_stadapt)  # before any work
    torch_device = process_device(resolve_device(device), world_from_env())
    loaded = load_for_inference(checkpoint, backbone_weights=backbone_weights, device=torch_device,
                                precision=precision)
    if labels is not None:
        relabel(loaded, labels)
    data = (loaded.meta.get("recipe") or {}).get("data") or {}
    if root is None and (not data or str(data.get("root")).startswith("<local>")):  # <local>: a pushed checkpoint
        raise StadaptError(f"{checkpoint} records no data set" if not data else
                           f"{checkpoint} was shared without its data root ({data.get('root')})",
                           "pass --root DIR --list FILE")
    prepared = open_prepared(root if root is not None else data["root"])
    list_file = data_list if data_list is not None else Path(data.get("val_list", "val.txt"))
    if labels is None and prepared.classes != loaded.classes:
        raise StadaptError(
            f"{prepared.root}/classes.txt does not match the {len(loaded.classes)} classes the model was trained on",
            "evaluate on a data set prepared with the same classes",
        )
    entries = prepared.entries(list_file)
    if labels is not None:
        check_label_indices([e.label for e in entries], loaded.classes, str(prepared.list_path(list_file)))
    spec = loaded.input_spec.with_views(parse_views(views) if views else None)
    world = init_world(torch_device)
    pred = infer_dataset_sharded(loaded, entries, lambda part: test_dataset(part, spec), world,
                                 batch_size=batch_size,
                                 num_workers=workers if workers is not None else int(data.get("num_workers", 2)),
                                 device=torch_device,
                                 precision=resolve_precision(loaded.loaded_from.precision, torch_device),
                                 progress=progress and world.main, max_clips=max_clips)
    summary = summarize(pred, loaded.classes)
    report = _report(loaded, spec, prepared, list_file, entries, pred, summary, world.size)
    if labels is not None:
        report["labels"] = list(loaded.classes)  # the label set evaluated over (--labels), not the trained classes
    if world.main:
        write_reports(out, report, pred, entries, loaded.classes, title=checkpoint.parent.parent.name)
    return report, out


def _report(loaded: Any, spec: Any, prepared: Any, list_file: Path, entries: list[Any], pred: Predictions,
            summary: dict[str, Any], processes: int) -> dict[str, Any]:
    """eval.json: what was evaluated, how (the InputSpec used, the precision), and the scores."""
    from stadapt import __version__
    from stadapt.checkpoints.files import tensors_path
    from stadapt.data.prepared import file_sha256

    return {
        "stadapt_version": __version__,
        "checkpoint": str(loaded.loaded_from.path.resolve()),
        "checkpoint_sha256": file_sha256(tensors_path(loaded.loaded_from.path)),
        "step": loaded.meta.get("step"),
        **run_record(spec, prepared, list_file, entries, pred, fusion=fusion_for(loaded)[1],
                     precision=loaded.loaded_from.precision, processes=processes),
        **summary,
    }


def run_record(spec: Any, prepared: Any, list_file: Path, entries: list[Any], pred: Predictions, *, fusion: str,
               precision: str, processes: int) -> dict[str, Any]:
    """What every eval.json says of the run itself: the list and its digests, the views and their fusion,
    the input, the precision and processes, what was listed and skipped, the time (eval's and zero-shot's)."""
    return {
        "list": str(prepared.list_path(list_file)),
        "list_sha256": prepared.list_sha256(list_file),
        "classes_sha256": (prepared.manifest or {}).get("classes_sha256"),
        "views": spec.views_text,
        "temporal_views": spec.views[0],
        "spatial_views": spec.views[1],
        "fusion": fusion,
        "frames": spec.frames,
        "sampling": spec.sampling,
        "stride": spec.stride,
        "crop_size": spec.image_size,
        "short_side": spec.image_size,
        "input": spec.to_dict(),
        "precision": precision,
        "processes": processes,
        "listed": len(entries),
        "skipped": len(pred.skipped),
        "skipped_videos": pred.skipped,
        "seconds": round(pred.seconds, 3),
    }


CSV_HEADER = ("index", "path", "label", "label_name", "status", "prediction", "prediction_name", "probability",
              "correct", "top5", "error")


def report_paths(out: Path) -> list[Path]:
    """Every file an eval writes for the report `out`: the JSON, its predictions CSV and its confusion PNG."""
    return [out, out.with_suffix(".predictions.csv"), out.with_suffix(".confusion.png")]


def report_by_stadapt(path: Path) -> bool:
    """Whether `path` (one of `report_paths`) is a file stadapt eval wrote, from its content. A confusion PNG
    written before stadapt tagged its PNGs carries matplotlib's Software text only: it counts when the report
    beside it is stadapt's."""
    from stadapt.fileio import first_line_is, json_by_stadapt, png_by_stadapt

    if path.name.endswith(".predictions.csv"):
        return first_line_is(path, ",".join(CSV_HEADER))
    if path.name.endswith(".confusion.png"):
        report = path.with_name(path.name[: -len(".confusion.png")] + ".json")
        return png_by_stadapt(path) or (png_by_stadapt(path, software="Matplotlib")
                                        and json_by_stadapt(report, *_REPORT_KEYS) is not None)
    return json_by_stadapt(path, *_REPORT_KEYS) is not None


_REPORT_KEYS = ("stadapt_version", "checkpoint_sha256", "top1")


def write_reports(out: Path, report: dict[str, Any], pred: Predictions, entries: list[Any], classes: list[str],
                   *, title: str) -> None:
    """eval.json, eval.predictions.csv and (when a video was evaluated) eval.confusion.png, each atomically."""
    import json

    from stadapt.fileio import atomic_write_text
    from stadapt.plots import confusion_matrix

    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".predictions.csv"), predictions_csv(pred, entries, classes))
    if report["videos"]:
        confusion_matrix(report["confusion"], classes, out.with_suffix(".confusion.png"),
                         title=f"{title}: top-1 {100 * report['top1']:.1f}% ({report['views']})")


def predictions_csv(pred: Predictions, entries: list[Any], classes: list[str]) -> str:
    """One row per listed video: its label, the fused top-1 (and top-5) prediction, or why it was skipped."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
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
