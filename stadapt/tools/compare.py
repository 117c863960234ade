"""`stadapt compare RUN...`: trained runs side by side, one row each: the method, backbone and frames the run
trained, its top-1 / top-5 (the run's eval.json), its parameters (the checkpoint's record), GFLOPs per clip and
clips/s of its model measured here, and the peak training memory the run logged.

What is read, from each run folder (stadapt.runs.layout): the checkpoint `stadapt eval` would take (best when
the run keeps one, else last; `which`), its stadapt.json (model config, input size, parameter counts), RUN/eval.json
and RUN/metrics.jsonl (the largest `peak_memory_mb` of its train events: on CUDA the allocated peak, on the CPU
the training process's peak RSS, on the device the run trained on). What is measured: the run's model
architecture rebuilt with a random backbone (no download, no weights read: FLOPs and speed do not depend on
them), GFLOPs of one clip at the run's input size (stadapt.tools.bench.flops) and the median clips/s of
`runs` forward passes of `batch` clips in eval mode, on this machine's `device`. The runs are read (and any
bad one refused) before anything is measured.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from stadapt.errors import StadaptError
from stadapt.runs.errors import RunError

EVAL_FILE = "eval.json"
DEFAULTS = {"cuda": 16, "cpu": 2}  # clips per timed forward pass when not given


def read_run(path: str | Path, which: str | None = None) -> dict[str, Any]:
    """What a run folder records about itself (module docstring): one row of the comparison, unmeasured.
    A folder that is not a run, or a run without a checkpoint, is a one-line RunError."""
    from stadapt.checkpoints.files import META_FILE
    from stadapt.checkpoints.format import Contract, read_meta_file, upgrade_meta
    from stadapt.runs.layout import RunDir
    from stadapt.runs.lookup import pick_checkpoint

    run = RunDir(path)
    if not run.path.is_dir():
        raise RunError(f"{path} is not a run folder ({'no such folder' if not run.path.exists() else 'a file'})",
                       "pass folders `stadapt train` wrote, e.g. runs/NAME")
    if not run.is_run():
        raise RunError(f"{path} is not a run folder (it has no recipe.yaml)",
                       "pass folders `stadapt train` wrote, e.g. runs/NAME")
    if not any((c / META_FILE).is_file() for c in (run.best, run.last)):
        raise RunError(f"{path} has no checkpoint (checkpoints/best or checkpoints/last)",
                       "train it until it saves one, or leave it out of the comparison")
    checkpoint, _ = pick_checkpoint(run, which)
    meta = upgrade_meta(read_meta_file(checkpoint), checkpoint)
    contract = Contract.from_meta(meta, checkpoint)
    counts = meta.get("parameters")
    if not isinstance(counts, dict):  # recorded by every checkpoint stadapt writes; counted on meta otherwise
        from stadapt.tools.bench.params import model_parameter_counts

        counts = model_parameter_counts(contract.model)[2]
    row: dict[str, Any] = {
        "run": run.path.resolve().name, "path": str(run.path), "checkpoint": checkpoint.name, "step": meta.get("step"),
        "tuning": contract.model.tuning, "backbone": contract.model.backbone, "model": contract.model.to_dict(),
        "frames": contract.input.frames, "image_size": contract.input.image_size,
        "trainable_parameters": counts["trainable"], "total_parameters": counts["total"],
    }
    row.update(_evaluation(run.path / EVAL_FILE))
    row.update(_logged_memory(run.metrics))
    row["training"] = _training_settings(meta.get("recipe"))
    return row


def _evaluation(path: Path) -> dict[str, Any]:
    """top1 / top5 (fractions) and the step eval.json evaluated; None and why where the run was not evaluated."""
    import json

    if not path.is_file():
        return {"top1": None, "top5": None, "eval_step": None, "eval_note": "not evaluated (no eval.json)"}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{path} is not valid JSON ({type(exc).__name__})", "run `stadapt eval` on the run again") \
            from exc
    if not isinstance(report, dict) or not isinstance(report.get("top1"), (int, float)):
        return {"top1": None, "top5": None, "eval_step": None, "eval_note": "eval.json holds no top-1 (no video)"}
    top5 = report.get("top5")
    return {"top1": float(report["top1"]), "top5": float(top5) if isinstance(top5, (int, float)) else None,
            "top5_k": report.get("top5_k", 5), "eval_step": report.get("step"), "eval_note": None}


def _logged_memory(metrics: Path) -> dict[str, Any]:
    """The largest peak memory the run's train events logged (MiB) and the device it trained on."""
    from stadapt.runs.metrics import read_metrics

    try:
        events = read_metrics(metrics)
    except (OSError, ValueError):
        events = []
    peaks = [e["peak_memory_mb"] for e in events if e.get("split") == "train"
             and isinstance(e.get("peak_memory_mb"), (int, float))]
    device = next((e.get("device") for e in events if e.get("split") == "info"), None)
    return {"train_peak_memory_mb": max(peaks) if peaks else None, "train_device": device}


def _training_settings(recipe: Any) -> dict[str, Any]:
    """The memory settings the run trained with (its recorded recipe), for `--measure-memory`; bench-train's
    defaults where the checkpoint records no recipe (an imported one)."""
    recipe = recipe if isinstance(recipe, dict) else {}
    optim, train = recipe.get("optim") or {}, recipe.get("train") or {}
    return {"micro_batch": optim.get("micro_batch") or optim.get("batch_size") or 1,
            "precision": train.get("precision", "auto"), "backbone_storage": train.get("backbone_storage", "auto"),
            "checkpointing": train.get("checkpointing", "adapters")}


def measure_train_memory(row: dict[str, Any], dev: Any, *, micro_batch: int | None = None) -> dict[str, Any]:
    """bench-train's measurement (stadapt.tools.bench.train_memory) of one training step of the run's model
    config, with the run's memory settings and micro-batch (or `micro_batch`): a fresh process on the CPU."""
    from stadapt.tools.bench.train_memory import _measure_in_subprocess, measure_mode

    model, training = row["model"], row["training"]
    options = {"backbone": model["backbone"], "mode": model["tuning"], "frames": model["num_frames"],
               "micro_batch": micro_batch or training["micro_batch"], "steps": 1, "warmup": 1, "device": str(dev),
               "precision": training["precision"], "backbone_storage": training["backbone_storage"],
               "checkpointing": training["checkpointing"], "num_classes": model["num_classes"],
               "options": dict(model["backbone_options"]), "method_settings": model["adapter"]}
    result = _measure_in_subprocess(options) if dev.type == "cpu" else measure_mode(**options)
    return {"measured_memory": {"micro_batch": options["micro_batch"], "peak_bytes": result["peak_bytes"],
                                "peak_increase_bytes": result["peak_increase_bytes"],
                                "step_seconds": result["step_seconds"], "memory_method": result["memory_method"]}}


def measure_row(row: dict[str, Any], dev: Any, prec: Any, *, batch: int, runs: int, warmup: int = 1,
                seed: int = 0) -> dict[str, Any]:
    """GFLOPs per clip and the median clips/s of the row's model (random backbone) at its input size."""
    import torch

    from stadapt.model.classifier import ModelConfig, build_model
    from stadapt.tools.bench.flops import count_flops

    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict(row["model"])).model.to(dev).eval()
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch, 3, row["frames"], row["image_size"], row["image_size"], generator=generator).to(dev)
    seconds = []
    with torch.inference_mode(), prec.autocast(dev):
        gflops = count_flops(model, clips[:1]) / 1e9
        for i in range(warmup + runs):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            tick = time.perf_counter()
            model(clips)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                seconds.append(time.perf_counter() - tick)
    del model, clips
    return {"gflops_per_clip": gflops, "clips_per_s": batch / statistics.median(seconds)}


def read_runs(paths: list[str | Path], which: str | None = None) -> list[dict[str, Any]]:
    """One unmeasured row per run (read_run), in the given order: every run checked before anything is measured."""
    if not paths:
        raise StadaptError("no run to compare", "pass one or more run folders: stadapt compare runs/A runs/B")
    return [read_run(path, which) for path in paths]


def measure_runs(rows: list[dict[str, Any]], *, device: str = "auto", precision: str = "auto",
                 batch: int | None = None, runs: int = 3, progress: bool = False, measure_memory: bool = False,
                 micro_batch: int | None = None) -> dict[str, Any]:
    """The comparison: the measuring settings and the rows, each with its GFLOPs and clips/s (measure_row) and,
    with `measure_memory`, bench-train's training memory (measure_train_memory), under a progress bar on stderr
    (`progress`)."""
    import torch
    from tqdm import tqdm

    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.precision import resolve_precision
    from stadapt.tools.bench.train_memory import cpu_name

    if runs < 1 or (batch is not None and batch < 1):
        raise StadaptError(f"--runs and --batch must be at least 1, got {runs} and {batch}")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    batch = batch or DEFAULTS.get(dev.type, DEFAULTS["cpu"])
    for row in tqdm(rows, desc="measuring", unit="run", disable=not progress, leave=False, dynamic_ncols=True):
        row.update(measure_row(row, dev, prec, batch=batch, runs=runs))
        if measure_memory:
            row.update(measure_train_memory(row, dev, micro_batch=micro_batch))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
            "cpu_threads": torch.get_num_threads(), "precision": prec.name, "batch": batch, "timed_runs": runs,
            "torch": torch.__version__, "runs": rows}


def compare_runs(paths: list[str | Path], *, which: str | None = None, **measuring: Any) -> dict[str, Any]:
    """read_runs, then measure_runs (`measuring`: its device, precision, batch, runs, progress)."""
    return measure_runs(read_runs(paths, which), **measuring)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _count(n: int) -> str:
    """A parameter count in a few characters: 134,918 -> 134.9K, 86,192,640 -> 86.19M."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def format_comparison(report: dict[str, Any]) -> str:
    """One aligned row per run; the header names the device, precision and batch of the timing, and notes
    below say what a "-" means."""
    rows = report["runs"]
    header = ("run", "method", "backbone", "frames", "top-1", "top-5", "trainable", "total", "GFLOPs/clip",
              f"clips/s ({report['device']}, b={report['batch']})", "train memory")
    cells = [[r["run"], r["tuning"], r["backbone"], str(r["frames"]), _pct(r["top1"]), _pct(r["top5"]),
              _count(r["trainable_parameters"]), _count(r["total_parameters"]), f"{r['gflops_per_clip']:.2f}",
              f"{r['clips_per_s']:.2f}",
              _memory_cell(r)] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    left = {0, 1, 2}

    def line(values: list[str] | tuple[str, ...]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in pairs)

    lines = [f"{len(rows)} run(s); GFLOPs and clips/s measured here: {report['device']} ({report['device_name']}, "
             f"{report['precision']}), eval mode, batch {report['batch']}, median of {report['timed_runs']} "
             f"forward passes (random backbone weights: speed does not depend on them)",
             line(header), *(line(c).rstrip() for c in cells)]
    for r in rows:
        if r["eval_note"]:
            lines.append(f"{r['run']}: top-1/top-5 -: {r['eval_note']}; `stadapt eval {r['path']}` writes it")
        elif r["eval_step"] is not None and r["step"] is not None and r["eval_step"] != r["step"]:
            lines.append(f"{r['run']}: eval.json scored step {r['eval_step']}, the compared checkpoint "
                         f"({r['checkpoint']}) is step {r['step']}")
        if r["train_peak_memory_mb"] is None and "measured_memory" not in r:
            lines.append(f"{r['run']}: train memory -: its metrics.jsonl logs no peak memory")
    lines.append(_memory_note(rows))
    return "\n".join(lines)


def _memory_cell(r: dict[str, Any]) -> str:
    """A row's training memory: measured here (peak growth, its micro-batch), else the peak the run logged."""
    measured = r.get("measured_memory")
    if measured is not None:
        grown = measured["peak_increase_bytes"]
        return "-" if grown is None else f"{grown / 2**30:.2f} GiB (b={measured['micro_batch']})"
    if r["train_peak_memory_mb"] is None:
        return "-"
    return f"{r['train_peak_memory_mb'] / 1024:.2f} GiB ({r['train_device'] or '?'})"


def _memory_note(rows: list[dict[str, Any]]) -> str:
    """What the train memory column holds."""
    if any("measured_memory" in r for r in rows):
        return ("train memory: measured here by bench-train's step (1 warm-up + 1 step of the run's model config and "
                "memory settings at micro-batch b; the peak growth over the built model: "
                f"{rows[0]['measured_memory']['memory_method']})")
    return ("train memory: the largest peak the run logged while training (metrics.jsonl peak_memory_mb: allocated "
            "memory on CUDA, the process's peak RSS on the CPU, each since the training process started), on the "
            "device in brackets; --measure-memory measures each alike here")


def comparison_figure(report: dict[str, Any], out: Path) -> Path:
    """The PNG of the comparison (stadapt.plots.runs_comparison): top-1 against trainable parameters and against
    clips/s, one point per evaluated run, labelled with the run and its method."""
    from stadapt.plots import runs_comparison

    points = [{"label": r["run"], "method": r["tuning"], "top1": r["top1"],
               "trainable": r["trainable_parameters"], "clips_per_s": r["clips_per_s"]} for r in report["runs"]]
    speed = f"clips/s ({report['device']}, batch {report['batch']})"
    return runs_comparison(points, out, speed_label=speed)
