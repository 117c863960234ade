"""What a recipe names outside itself: its paths made absolute, and the checks that they are there.

Paths resolve against the working directory when the recipe is read, so a run records where its data,
weights and starting checkpoint really are. The checks (the backbone plugin, the data folder and its
lists, the weights file, the `init_from` checkpoint) give problems in the same one-line form as the
schema's, so they are reported together with them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stadapt.checkpoints.files import META_FILE
from stadapt.errors import StadaptError
from stadapt.recipe.messages import PREPARE_HINT, KeyPath, Problem
from stadapt.vocabulary import did_you_mean, weights_is_path


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def resolve_paths(data: dict[str, Any], default_name: str | None) -> None:
    """Fill name and output.dir, and make paths absolute against the working directory (in place)."""
    if data.get("name") is None:
        data["name"] = default_name or "run"
    out = data.setdefault("output", {})
    if isinstance(out, dict):
        if out.get("dir") is None and isinstance(data["name"], str):
            out["dir"] = f"runs/{data['name']}"
        if isinstance(out.get("dir"), str):
            out["dir"] = _absolute(out["dir"])
    section = data.get("data")
    if isinstance(section, dict) and isinstance(section.get("root"), str):
        section["root"] = _absolute(section["root"])
    backbone = data.get("backbone")
    if isinstance(backbone, dict) and isinstance(backbone.get("weights"), str) and weights_is_path(backbone["weights"]):
        backbone["weights"] = _absolute(backbone["weights"])
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("init_from"), str):
        model["init_from"] = _absolute(model["init_from"])


def environment_problems(data: dict[str, Any], bad: set[KeyPath], check_files: bool) -> list[Problem]:
    """Problems outside the recipe text: the backbone plugin, the data directory, the weights file."""
    problems: list[Problem] = []
    backbone = data["backbone"] if isinstance(data.get("backbone"), dict) else {}
    name = backbone.get("name")
    if isinstance(name, str) and ("backbone", "name") not in bad:
        from stadapt.backbones.registry import parse_backbone

        try:
            parse_backbone(name)
        except StadaptError as exc:
            problems.append((("backbone", "name"), str(exc)))
    if not check_files:
        return problems
    weights = backbone.get("weights")
    if isinstance(weights, str) and ("backbone", "weights") not in bad and weights_is_path(weights):
        fix = "pass an existing weights file, a hub tag (e.g. openai), or null for random init"
        if not os.path.exists(weights):
            problems.append((("backbone", "weights"), f"file {weights} does not exist; {fix}"))
        elif not os.path.isfile(weights):
            problems.append((("backbone", "weights"), f"{weights} is a directory, not a weights file; {fix}"))
    model = data["model"] if isinstance(data.get("model"), dict) else {}
    init = model.get("init_from")
    if (isinstance(init, str) and ("model", "init_from") not in bad
            and not os.path.isfile(os.path.join(init, META_FILE))):
        problems.append((("model", "init_from"), f"{init} is not a stadapt checkpoint directory (no {META_FILE}); "
                                                 "pass runs/NAME/checkpoints/last"))
    section = data["data"] if isinstance(data.get("data"), dict) else {}
    root = section.get("root")
    if not isinstance(root, str) or ("data", "root") in bad:
        return problems
    if not os.path.exists(root):
        problems.append((("data", "root"), f"directory {root} does not exist; {PREPARE_HINT}"))
    elif not os.path.isdir(root):
        problems.append((("data", "root"), f"{root} is a file, not a directory; {PREPARE_HINT}"))
    else:
        if not os.path.isfile(os.path.join(root, "classes.txt")):
            problems.append((("data", "root"), f"{root} has no classes.txt (not a prepared data set); {PREPARE_HINT}"))
        lists = sorted(p.name for p in Path(root).glob("*.txt") if p.name != "classes.txt")
        for key, default in (("train_list", "train.txt"), ("val_list", "val.txt")):
            name = section.get(key, default)
            if isinstance(name, str) and ("data", key) not in bad and not os.path.isfile(os.path.join(root, name)):
                fix = did_you_mean(name, lists).rstrip() or f"lists in {root}: {', '.join(lists) or 'none'}"
                problems.append((("data", key), f"file {os.path.join(root, name)} does not exist; {fix}"))
    return problems
