"""`stadapt finetune-transfer`: from a Kinetics-400 ST-Adapter run to UCF-101 / HMDB-51 (paper appendix).

For each official split: prepare the data set from its published layout, derive a recipe from the
source run's (new classifier head, backbone fixed, adapters initialised from the source and trained
at 1/10 of the learning rate and weight decay, 500 steps at batch 128, temporal stride 8, tested with
2 temporal x 3 spatial views, everything else as the source), train it with the one training loop,
and report per-split and mean top-1 (the paper reports the 3-split mean).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stadapt.errors import StadaptError

DATASETS = ("ucf101", "hmdb51")
TRANSFER = {  # the paper's transfer setting; the rest of the recipe is the source run's
    "optim.steps": 500,
    "optim.batch_size": 128,
    "optim.scale.adapters": 0.1,
    "data.stride": 8,
    "data.views": "2x3",
}


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def transfer_recipe(source: dict[str, Any], *, name: str, data_root: Path, init_from: Path, out: Path,
                    overrides: Sequence[str] = ()) -> Any:
    """The recipe of one split: the source run's recipe with the transfer setting and `overrides`."""
    from stadapt.recipe import recipe_from_dict

    recipe = json.loads(json.dumps(source))  # a deep copy of plain data
    if recipe.get("tuning", "st_adapter") != "st_adapter":
        raise StadaptError(f"the source run trained with tuning={recipe.get('tuning')}, not st_adapter",
                           "transfer starts from an ST-Adapter run")
    for key, value in TRANSFER.items():
        _set(recipe, key, value)
    steps = TRANSFER["optim.steps"]
    optim = recipe.setdefault("optim", {})
    optim["warmup_steps"] = min(int(optim.get("warmup_steps") or 0), steps // 10)
    recipe["name"] = name
    recipe.setdefault("data", {}).update({"root": str(data_root), "train_list": "train.txt", "val_list": "val.txt"})
    recipe.setdefault("model", {})["init_from"] = str(init_from)
    recipe["output"] = {"dir": str(out)}
    return recipe_from_dict(recipe, source=f"finetune-transfer from {init_from}", overrides=list(overrides))


def finetune_transfer(
    source: Path | None,
    *,
    dataset: str,
    root: Path,
    splits: Sequence[int] = (1, 2, 3),
    out: Path | None = None,
    overrides: Sequence[str] = (),
    check: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prepare, train and evaluate every split; write and return the summary (transfer.json)."""
    from stadapt.checkpoint import read_checkpoint
    from stadapt.data.formats import READERS
    from stadapt.data.prepare import prepare_listing
    from stadapt.engine.loop import train
    from stadapt.evaluate import resolve_target
    from stadapt.fileio import atomic_write_text

    if dataset not in DATASETS:
        raise StadaptError(f"unknown transfer data set {dataset!r}", f"choose one of: {', '.join(DATASETS)}")
    bad = [s for s in splits if s not in (1, 2, 3)]
    if bad or not splits:
        raise StadaptError(f"--splits must name official splits 1, 2 and/or 3, got {list(splits)}", "e.g. --splits 1,2,3")
    checkpoint, _ = resolve_target(source)
    meta, _ = read_checkpoint(checkpoint)
    recipe = meta.get("recipe")
    if not recipe:
        raise StadaptError(f"{checkpoint} records no training recipe", "transfer from a checkpoint `stadapt train` wrote")
    base = f"{recipe.get('name') or checkpoint.parent.parent.name}_to_{dataset}"
    out = Path(out) if out is not None else Path("runs") / base
    results: list[dict[str, Any]] = []
    for split in splits:
        listing = READERS[dataset](root, split=split)
        data_dir = out / "data" / f"split{split}"
        prepare_listing(listing, data_dir, check=check, overwrite=True, progress=progress)
        split_recipe = transfer_recipe(recipe, name=f"{base}_split{split}", data_root=data_dir,
                                       init_from=checkpoint.resolve(), out=out / f"split{split}", overrides=overrides)
        result = train(split_recipe, source=f"stadapt finetune-transfer (split {split})", overwrite=overwrite,
                       progress=progress)
        val = result.final_val or {}
        results.append({"split": split, "top1": val.get("top1"), "top5": val.get("top5"), "videos": val.get("videos"),
                        "skipped": val.get("skipped"), "views": val.get("views"), "run": str(result.run_dir)})
    scores = [r["top1"] for r in results if r["top1"] is not None]
    summary = {
        "source": str(checkpoint.resolve()),
        "dataset": dataset,
        "splits": results,
        "mean_top1": sum(scores) / len(scores) if scores else None,
        "setting": TRANSFER,
    }
    atomic_write_text(out / "transfer.json", json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'split':<8} {'top-1':>7} {'videos':>7}  run"]
    for r in summary["splits"]:
        top1 = "-" if r["top1"] is None else f"{100 * r['top1']:.1f}%"
        lines.append(f"{r['split']:<8} {top1:>7} {r['videos'] or 0:>7}  {r['run']}")
    mean = summary["mean_top1"]
    lines.append(f"{'mean':<8} {'-' if mean is None else f'{100 * mean:.1f}%':>7}")
    return "\n".join(lines)
