"""`stadapt quickstart`: the whole pipeline in miniature, on the CPU, in minutes, with no downloads.

It writes a synthetic motion data set (time-reversal class pairs), then trains two models on the same
frozen tiny image backbone (a CLIP-architecture ViT pretrained on single frames, shipped with the
CLIP plugin as `clip:tiny` weights `synthetic`): one with ST-Adapters, one linear probe. The probe
averages frames over time and cannot beat chance within a pair; the adapters read motion. What it prints
and measures: README.md ("What the quickstart shows") and docs/getting-started.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stadapt.errors import DataError
from stadapt.model.text_head import HEAD_TYPES

# The quickstart recipe: tuned by measurement on a 2-core CPU (the measured table: README.md, docs/getting-started.md).
RECIPE: dict[str, Any] = {
    "backbone": {"name": "clip:tiny", "weights": "synthetic"},
    "adapter": {"bottleneck": 128, "kernel": [3, 1, 1], "positions": ["pre_mlp"]},
    "model": {"dropout": 0.0},
    "data": {"frames": 8, "sampling": "stride", "stride": 2, "views": "1x1", "num_workers": 1,
             "augment": {"scale": [1.0, 1.15], "flip": False}},
    "optim": {"lr": 5e-3, "weight_decay": 1e-2, "batch_size": 16, "steps": 800, "warmup_steps": 30},
    "train": {"seed": 0, "device": "cpu", "precision": "fp32", "log_every": 10, "val_every": 0, "save_every": 0},
}
LINEAR_STEPS = 300  # the probe converges long before: more steps would only cost time
# (tuning method, its steps): the adapters, then the probe, on the same data and backbone
METHODS: tuple[tuple[str, int], ...] = (("st_adapter", RECIPE["optim"]["steps"]), ("linear", LINEAR_STEPS))
# --heads: the classifier each method trains with (the recipe's model.head); text heads read the class names
# (the model's head types, frozen, and the text head that trains)
HEADS: dict[str, dict[str, Any]] = {**{kind: {"type": kind, "train": False} for kind in HEAD_TYPES},
                                    "text-trained": {"type": "text", "train": True}}
DEFAULT_HEAD = HEAD_TYPES[0]  # the linear head: every run's unless --heads says otherwise
ZERO_SHOT = "zero-shot"  # the row of the backbone itself, classifying by the class names with no training


def is_text_head(head: str) -> bool:
    """Whether the quickstart head `head` reads the class names through the text tower."""
    return bool(HEADS[head]["type"] == "text")


def quickstart_recipe(tuning: str, data_root: Path, runs: Path, *, seed: int = 0, steps: int | None = None,
                      check_files: bool = True, head: str = DEFAULT_HEAD) -> Any:
    """The quickstart's recipe with `tuning` (and that method's default settings) and the classifier `head`
    (one of HEADS)."""
    from stadapt.recipe import recipe_from_dict

    raw = json.loads(json.dumps(RECIPE))
    raw["name"] = f"quickstart_{tuning}" + (f"_{head.replace('-', '_')}_head" if is_text_head(head) else "")
    raw["tuning"] = tuning
    raw["model"]["head"] = dict(HEADS[head])
    raw["data"]["root"] = str(data_root)
    raw["output"] = {"dir": str(runs / raw["name"])}
    raw["train"]["seed"] = seed
    raw["optim"]["steps"] = steps or dict(METHODS).get(tuning, RECIPE["optim"]["steps"])
    raw["optim"]["warmup_steps"] = min(raw["optim"]["warmup_steps"], raw["optim"]["steps"] // 10)
    return recipe_from_dict(raw, source="stadapt quickstart", check_files=check_files)


def ensure_data(root: Path, spec: Any, progress: bool) -> str:
    """Write the synthetic data set unless `root` already holds exactly this one."""
    from dataclasses import asdict

    from stadapt.data.synthetic import existing_spec, prepare_synthetic

    found = existing_spec(root)
    wanted = {**asdict(spec), "motions": list(spec.motions)}
    if found == wanted:
        return "reused"
    if root.exists() and any(root.iterdir()) and found is None:
        raise DataError(f"{root} exists and is not a synthetic data set", "pass --out to a new directory")
    prepare_synthetic(root, spec, overwrite=found is not None, progress=progress)
    return "written"


def run_quickstart(
    out: Path,
    *,
    seed: int = 0,
    progress: bool = True,
    summary_file: Path | None = None,
    spec: Any = None,
    steps: int | None = None,
    methods: Sequence[str] | None = None,
    heads: Sequence[str] | None = None,
) -> dict:
    """Data, one training and one evaluation per method and head; returns (and writes) the side-by-side summary.

    `methods` (default: ST-Adapter, then the linear probe) and `heads` (default: linear) are checked first
    (installed, and each fits the backbone: stadapt.tools.quickstart.methods), before minutes go into data and
    training. A text head adds the backbone's zero-shot score as the first row. `spec` (a SyntheticSpec) and
    `steps` shrink it further, for tests.
    """
    from stadapt.data.synthetic import SyntheticSpec
    from stadapt.fileio import atomic_write_text

    out = Path(out)
    data_root = out / "data" / "synthetic"
    runs = out / "runs"
    start = time.perf_counter()
    spec = spec if spec is not None else SyntheticSpec(seed=seed)
    names = [tuning for tuning, _ in METHODS] if methods is None else list(methods)
    pairs = [(tuning, DEFAULT_HEAD) for tuning in names]
    if methods is not None or heads is not None:
        from stadapt.tools.quickstart.methods import plan_runs

        pairs = plan_runs(names, list(heads or [DEFAULT_HEAD]), data_root, runs, seed=seed, classes=spec.classes)
    data_state = ensure_data(data_root, spec, progress)
    rows = [zero_shot_row(data_root, runs, progress)] if any(is_text_head(h) for _, h in pairs) else []
    rows += [_trained_row(tuning, head, data_root, runs, seed=seed, steps=steps, progress=progress)
             for tuning, head in pairs]
    summary = {
        "data": {"root": str(data_root.resolve()), "classes": spec.classes, "state": data_state,
                 "train_videos": len(spec.classes) * spec.train_per_class,
                 "val_videos": len(spec.classes) * spec.val_per_class},
        "backbone": f"{RECIPE['backbone']['name']} (weights: {RECIPE['backbone']['weights']})",
        "models": rows,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    target = summary_file if summary_file is not None else Path("quickstart.json")
    atomic_write_text(target, json.dumps(summary, indent=2) + "\n")
    summary["written_to"] = str(target)
    return summary


def _trained_row(tuning: str, head: str, data_root: Path, runs: Path, *, seed: int, steps: int | None,
                 progress: bool) -> dict[str, Any]:
    """Train the quickstart's model of `tuning` with `head`, evaluate it: its row of the summary."""
    from stadapt.inference.evaluate import run_eval
    from stadapt.training.loop import train

    recipe = quickstart_recipe(tuning, data_root, runs, seed=seed, steps=steps, head=head)
    began = time.perf_counter()
    result = train(recipe, source="stadapt quickstart", overwrite=True, progress=progress)
    trained = time.perf_counter() - began
    report, report_path = run_eval(result.run_dir, views="1x1", progress=progress)
    return {
        "model": recipe.name,
        "tuning": tuning,
        "head": head,
        "top1": report["top1"],
        "top5": report["top5"],
        "steps": result.steps,
        "train_seconds": round(trained, 1),
        "videos": report["videos"],
        "trainable_parameters": result.parameters["trainable"],
        "total_parameters": result.parameters["total"],
        "run": str(result.run_dir),
        "eval": str(report_path),
    }


def zero_shot_row(data_root: Path, runs: Path, progress: bool) -> dict[str, Any]:
    """The backbone's zero-shot score on the held-out clips (class names through its text tower, no
    training), with the quickstart's input: the row that text heads start from."""
    from stadapt.data.prepared import open_prepared
    from stadapt.fileio import claim_outputs
    from stadapt.inference.evaluate import report_by_stadapt, report_paths
    from stadapt.inference.zero_shot import load_zero_shot, zero_shot_eval, zero_shot_spec

    data = RECIPE["data"]
    report_path = runs / "quickstart_zero_shot" / "eval.json"
    claim_outputs(report_paths(report_path), overwrite=True, ours=report_by_stadapt)  # replaces only its own
    model = load_zero_shot(RECIPE["backbone"]["name"], RECIPE["backbone"]["weights"],
                           open_prepared(data_root).classes, device="cpu")
    spec = zero_shot_spec(model, frames=data["frames"], sampling=data["sampling"], stride=data["stride"])
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report = zero_shot_eval(data_root, Path("val.txt"), model, spec, report_path, workers=data["num_workers"],
                            progress=progress)
    total = sum(p.numel() for p in model.model.parameters())
    return {"model": "quickstart_zero_shot", "tuning": ZERO_SHOT, "head": "text", "top1": report["top1"],
            "top5": report["top5"], "steps": 0, "train_seconds": 0.0, "videos": report["videos"],
            "trainable_parameters": 0, "total_parameters": total, "run": str(report_path.parent),
            "eval": str(report_path)}


def format_summary(summary: dict) -> str:
    lines = [f"{'model':<24} {'tuning':<11} {'top-1':>7} {'steps':>6} {'train s':>8} {'trainable':>10}"]
    for row in summary["models"]:
        lines.append(f"{row['model']:<24} {row['tuning']:<11} {100 * row['top1']:>6.1f}% {row['steps']:>6} "
                     f"{row['train_seconds']:>8.1f} {row['trainable_parameters']:>10,}")
    n = len(summary["data"]["classes"])
    lines.append(f"\n{n} classes in {n // 2} time-reversal pairs: a model blind to time is at chance within a pair "
                 f"(at most 50% overall).")
    lines.append(f"total {summary['wall_seconds']:.0f}s; runs in {Path(summary['models'][0]['run']).parent}; "
                 f"summary in {summary['written_to']}")
    return "\n".join(lines)
