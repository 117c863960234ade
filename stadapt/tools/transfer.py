"""`stadapt finetune-transfer`: from a Kinetics-400 run to UCF-101 / HMDB-51 (paper appendix).

For each official split: prepare the data set from its published layout, derive a recipe from the
source run's (new classifier head; the source's tuning method, with what it trained (adapters, and any
backbone parameters it trains) initialised from the source, adapters trained at 1/10 of the learning rate
and weight decay; 500 steps at batch 128, temporal stride 8, tested with 2 temporal x 3 spatial views,
everything else as the source), train it with the one training loop, and report per-split and mean top-1
(the paper reports the 3-split mean). Any installed method transfers: a linear probe's source gives only
its frozen backbone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stadapt.checkpoints.meta import checkpoint_step
from stadapt.errors import StadaptError

DATASETS = ("ucf101", "hmdb51")
TRANSFER: dict[str, Any] = {  # the paper's transfer setting; the rest of the recipe is the source run's
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


def transfer_recipe(source: dict[str, Any], *, name: str, data_root: Path, origin: Path, init_from: Path | None,
                    out: Path, overrides: Sequence[str] = (), check_files: bool = True) -> Any:
    """The recipe of one split: the source run's recipe (its tuning method too) with the transfer setting
    and `overrides` (`check_files=False` before the split's data is prepared). `origin`: the source
    checkpoint; `init_from`: the same when its trained tensors start the split, None when it trained
    nothing but its head (a linear probe: the frozen backbone is all there is to transfer)."""
    from stadapt.recipe import recipe_from_dict

    recipe = json.loads(json.dumps(source))  # a deep copy of plain data
    for key, value in TRANSFER.items():
        _set(recipe, key, value)
    steps = TRANSFER["optim.steps"]
    optim = recipe.setdefault("optim", {})
    optim["warmup_steps"] = min(int(optim.get("warmup_steps") or 0), steps // 10)
    recipe["name"] = name
    recipe.setdefault("data", {}).update({"root": str(data_root), "train_list": "train.txt", "val_list": "val.txt"})
    recipe.setdefault("model", {})["init_from"] = str(init_from) if init_from is not None else None
    recipe["output"] = {"dir": str(out)}
    return recipe_from_dict(recipe, source=f"finetune-transfer from {origin}", overrides=list(overrides),
                            check_files=check_files)


class TransferError(StadaptError):
    """A transfer that cannot go on as asked (e.g. its earlier splits ran with another setting)."""


# what transfer.json reports as the setting: the resolved recipe's values, overrides included
SETTING_KEYS = ("optim.steps", "optim.batch_size", "optim.warmup_steps", "optim.lr", "optim.weight_decay",
                "optim.scale.backbone", "optim.scale.adapters", "optim.scale.head", "data.frames",
                "data.sampling", "data.stride", "data.views", "train.seed")


def transfer_setting(recipe: Any) -> dict[str, Any]:
    """The setting a split really trained with, read from its resolved recipe (not the paper's defaults)."""
    data = recipe.to_dict()
    setting: dict[str, Any] = {}
    for key in SETTING_KEYS:
        value: Any = data
        for part in key.split("."):
            value = value[part]
        setting[key] = value
    return setting


def split_state(recipe: Any) -> str:
    """"new", "finished" or "unfinished" for the split run `recipe` describes. A run started with
    another setting is refused: reusing or continuing it would mix two settings in one result."""
    from stadapt.recipe import load_recipe
    from stadapt.runs.layout import RunDir
    from stadapt.training.run import TrainingError
    from stadapt.training.start import check_resumable

    run = RunDir(recipe.output.dir)
    if not run.is_run():
        return "new"
    try:
        check_resumable(load_recipe(run.recipe, check_files=False), recipe)
    except TrainingError as exc:
        raise TransferError(
            f"{run.path} was trained with another setting: {exc.message}",
            "re-run with the overrides it ran with to continue, pass --overwrite to train the splits again "
            "with this setting, or choose another --out",
        ) from None
    checkpoint = run.resume_checkpoint()
    step = checkpoint_step(checkpoint)
    done = step is not None and step >= recipe.optim.steps
    return "finished" if done else "unfinished"


def _split_result(split: int, val: dict[str, Any], run: Path, *, reused: bool) -> dict[str, Any]:
    return {"split": split, "top1": val.get("top1"), "top5": val.get("top5"), "videos": val.get("videos"),
            "skipped": val.get("skipped"), "views": val.get("views"), "run": str(run), "reused": reused}


def read_back_split(split: int, recipe: Any) -> dict[str, Any]:
    """The result of a split that finished earlier, from its run's final validation in metrics.jsonl."""
    from stadapt.runs.layout import RunDir
    from stadapt.runs.metrics import read_metrics

    run = RunDir(recipe.output.dir)
    final = [e for e in read_metrics(run.metrics) if e.get("split") == "val" and e.get("step") == recipe.optim.steps]
    return _split_result(split, final[-1] if final else {}, run.path, reused=True)


def _train_split(split: int, recipe: Any, *, overwrite: bool, progress: bool) -> Any:
    """Train one split: start it, or continue it from its checkpoint (the train loop's --auto-resume)."""
    from stadapt.runs.errors import RunError
    from stadapt.training.loop import train

    try:
        return train(recipe, source=f"stadapt finetune-transfer (split {split})", overwrite=overwrite,
                     auto_resume=not overwrite, progress=progress)
    except RunError as exc:  # its hints name `stadapt train` options, not this command's
        raise TransferError(f"split {split}: {exc.message}",
                            "move what is there away, or choose another --out") from None


def check_text_tower(recipe: Any) -> None:
    """Refuse, before any work, zero-shot scoring for a source whose backbone has no text tower."""
    from stadapt.backbones.registry import parse_backbone

    plugin, variant = parse_backbone(recipe.backbone.name)
    plugin.text_tower(variant.name, recipe.backbone.weights, **dict(recipe.backbone.options))


def zero_shot_split(recipe: Any, out: Path, *, progress: bool, labels: list[str] | None = None) -> float | None:
    """The source backbone's own zero-shot top-1 on a split's test list, with the split's input (frames,
    sampling, stride, views) and `labels` (default: classes.txt's names): its image and text towers before any
    training on the target. Written as eval's report at `out`, read back from there when a re-run finds one
    of the same labels."""
    from stadapt.data.prepared import open_prepared
    from stadapt.fileio import json_by_stadapt
    from stadapt.inference.zero_shot import load_zero_shot, zero_shot_eval, zero_shot_spec
    from stadapt.model.text_cache import text_cache_path
    from stadapt.runtime.views import parse_views

    data = recipe.data
    labels = labels or open_prepared(Path(data.root)).classes
    found = json_by_stadapt(out, "zero_shot") if out.is_file() else None
    if found is not None and (found.get("zero_shot") or {}).get("labels") == labels:
        return found.get("top1")
    model = load_zero_shot(recipe.backbone.name, recipe.backbone.weights, labels,
                           device=recipe.train.device, text_cache=text_cache_path(out))
    spec = zero_shot_spec(model, frames=data.frames, sampling=data.sampling, stride=data.stride,
                          views=parse_views(data.views))
    report = zero_shot_eval(Path(data.root), Path(data.val_list), model, spec, out, workers=0, progress=progress)
    return report.get("top1")


def transfer_labels(labels: str, dataset: str, root: Path, split: int) -> list[str]:
    """`--labels` (a file, or 'a,b'), checked before any work: one label per class of the data set."""
    from stadapt.data.formats import READERS
    from stadapt.inference.zero_shot import read_labels
    from stadapt.model.zero_shot import check_labels

    names = check_labels(read_labels(labels))
    classes = READERS[dataset](root, split=split).classes
    if len(names) != len(classes):
        raise TransferError(f"--labels gives {len(names)} labels for the {len(classes)} classes of {dataset}",
                            "give one label per class, one a line in the data set's class order")
    return names


def _check_zero_shot(zero_shot: bool, labels: str | None, recipe: Any, dataset: str, root: Path,
                     split: int) -> list[str] | None:
    """Before any work: --zero-shot needs a text tower, --labels needs --zero-shot and one label a class;
    the labels, or None for the class names."""
    if labels is not None and not zero_shot:
        raise TransferError("--labels names the classes for the zero-shot scores",
                            "add --zero-shot, or leave --labels out")
    if zero_shot:
        check_text_tower(recipe)
    return transfer_labels(labels, dataset, root, split) if labels is not None else None


def adapted_zero_shot_split(checkpoint: Path, meta: dict[str, Any], recipe: Any, out: Path, *,
                            progress: bool, labels: list[str] | None = None) -> float | None:
    """The source run itself, zero-shot on a split's test list: a run trained with a frozen text head answers
    the target's class names (eval --labels), with no training on the target, as X-CLIP and ViFi-CLIP report
    K400 to UCF-101 / HMDB-51, over `labels` (default: classes.txt's names). None for a source with any other
    head. Read back from `out` on a re-run with the same labels."""
    from stadapt.data.prepared import open_prepared
    from stadapt.fileio import json_by_stadapt
    from stadapt.inference.evaluate import run_eval
    from stadapt.model.text_head import HeadConfig

    if not HeadConfig.from_dict((meta.get("model") or {}).get("head")).frozen_text:
        return None
    root = Path(recipe.data.root)
    labels = labels or open_prepared(root).classes
    found = json_by_stadapt(out, "labels") if out.is_file() else None
    if found is not None and found.get("labels") == labels:
        return found.get("top1")
    report, _ = run_eval(checkpoint, root=root, data_list=Path(recipe.data.val_list), out=out, overwrite=True,
                         labels=labels, device=recipe.train.device, workers=0, progress=progress)
    return report.get("top1")


def _add_zero_shot(summary: dict[str, Any], planned: dict[int, Any], out: Path, source: tuple[Path, dict], *,
                   progress: bool, labels: list[str] | None) -> None:
    """Each split's zero-shot top-1 before any training (the source backbone) and, for a source run with a
    frozen text head, after training on the source (that run, no training on the target), beside the
    fine-tuned top-1; and their means."""
    for result in summary["splits"]:
        split = result["split"]
        result["zero_shot_top1"] = zero_shot_split(planned[split], out / f"zero_shot_split{split}.json",
                                                   progress=progress, labels=labels)
        result["adapted_zero_shot_top1"] = adapted_zero_shot_split(
            *source, planned[split], out / f"adapted_zero_shot_split{split}.json", progress=progress, labels=labels)
    for key in ("zero_shot_top1", "adapted_zero_shot_top1"):
        scores = [r[key] for r in summary["splits"]]
        summary[key.replace("_top1", "_mean_top1")] = None if None in scores else sum(scores) / len(scores)


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
    zero_shot: bool = False,
    labels: str | None = None,
) -> dict[str, Any]:
    """Prepare, train and evaluate every split; write and return the summary (transfer.json). With
    `zero_shot`, each split's test list is first scored by the source backbone's own zero-shot (its text
    tower; `zero_shot_top1` beside the fine-tuned `top1`, `zero_shot_mean_top1` beside the mean), and by the
    source run where it has a frozen text head (`adapted_zero_shot_top1`), over `labels` (a file or 'a,b':
    the classes as text; default: their names).

    Run again with the same arguments, it picks up where it stopped: splits that finished are read
    back (not retrained), an interrupted split continues from its checkpoint, the rest start.
    `overwrite=True` trains every split again. An interrupted split returns the summary so far with
    `complete: False` and `interrupted` (transfer.json is written only when every split finished).
    """
    from stadapt.checkpoints.format import read_checkpoint
    from stadapt.data.formats import READERS
    from stadapt.data.prepare import prepare_listing
    from stadapt.fileio import atomic_write_text
    from stadapt.runs.lookup import resolve_target

    if dataset not in DATASETS:
        raise StadaptError(f"unknown transfer data set {dataset!r}", f"choose one of: {', '.join(DATASETS)}")
    bad = [s for s in splits if s not in (1, 2, 3)]
    if bad or not splits:
        raise StadaptError(f"--splits must name official splits 1, 2 and/or 3, got {list(splits)}",
                           "e.g. --splits 1,2,3")
    checkpoint, _ = resolve_target(source, announce=False, prefer="last")  # as before best existed
    meta, tensors = read_checkpoint(checkpoint)
    recipe = meta.get("recipe")
    # what the source trained besides its head starts each split (its head's classes are not the target's)
    init_from = checkpoint.resolve() if any(not key.startswith("head.") for key in tensors) else None
    if not recipe:
        raise StadaptError(f"{checkpoint} records no training recipe",
                           "transfer from a checkpoint `stadapt train` wrote")
    base = f"{recipe.get('name') or checkpoint.parent.parent.name}_to_{dataset}"
    out = Path(out) if out is not None else Path("runs") / base

    def split_recipe(split: int, check_files: bool) -> Any:
        return transfer_recipe(recipe, name=f"{base}_split{split}", data_root=out / "data" / f"split{split}",
                               origin=checkpoint.resolve(), init_from=init_from, out=out / f"split{split}",
                               overrides=overrides, check_files=check_files)

    planned = {split: split_recipe(split, False) for split in splits}
    names = _check_zero_shot(zero_shot, labels, planned[splits[0]], dataset, root, splits[0])
    # every split's state is judged before any work: a changed setting is refused up front
    states = {split: "new" if overwrite else split_state(r) for split, r in planned.items()}
    summary: dict[str, Any] = {"source": str(checkpoint.resolve()), "dataset": dataset, "splits": [],
                               "setting": transfer_setting(planned[splits[0]]), "overrides": list(overrides)}
    for split in splits:
        if states[split] == "finished":
            summary["splits"].append(read_back_split(split, planned[split]))
            continue
        data_dir = out / "data" / f"split{split}"
        prepare_listing(READERS[dataset](root, split=split), data_dir, check=check, overwrite=True, progress=progress)
        result = _train_split(split, split_recipe(split, True), overwrite=overwrite, progress=progress)
        if not result.finished:
            summary.update(complete=False, interrupted={"split": split, "by": result.interrupted,
                                                        "step": result.steps, "steps": result.total_steps})
            return summary
        val = result.final_val.to_dict() if result.final_val else {}
        summary["splits"].append(_split_result(split, val, result.run_dir, reused=False))
    scores = [r["top1"] for r in summary["splits"] if r["top1"] is not None]
    summary.update(mean_top1=sum(scores) / len(scores) if scores else None, complete=True)
    if zero_shot:
        _add_zero_shot(summary, planned, out, (checkpoint.resolve(), meta), progress=progress, labels=names)
    atomic_write_text(out / "transfer.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_summary(summary: dict[str, Any]) -> str:
    """The splits' table: with --zero-shot, the zero-shot columns before the fine-tuned top-1 (the source
    backbone, and the source run where it has a frozen text head)."""
    columns = [("zero_shot", "0-shot")] if "zero_shot_mean_top1" in summary else []
    if summary.get("adapted_zero_shot_mean_top1") is not None:
        columns.append(("adapted_zero_shot", "adapted"))
    lines = [f"{'split':<8}" + "".join(f" {title:>7}" for _, title in columns) + f" {'top-1':>7} {'videos':>7}  run"]
    for r in summary["splits"]:
        before = "".join(f" {_percent(r.get(f'{key}_top1')):>7}" for key, _ in columns)
        earlier = "  (finished earlier, not retrained)" if r.get("reused") else ""
        lines.append(f"{r['split']:<8}{before} {_percent(r['top1']):>7} {r['videos'] or 0:>7}  {r['run']}{earlier}")
    before = "".join(f" {_percent(summary[f'{key}_mean_top1']):>7}" for key, _ in columns)
    lines.append(f"{'mean':<8}{before} {_percent(summary['mean_top1']):>7}")
    return "\n".join(lines)
