"""`stadapt quickstart --methods a,b,c`: any installed tuning methods side by side on the quickstart's task.

Each method trains with its own default settings on the same synthetic data, backbone and optimiser settings
as the default quickstart (stadapt.tools.quickstart.RECIPE). The task tells the two kinds of method apart by
construction: within a time-reversal pair the clips hold the same frames, so a model that does not read the
order of frames is at chance there, at most 50% overall. Nothing here knows which method is which kind: the
note under the table sorts them by the top-1 each one measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stadapt.errors import StadaptError

# top-1 a model blind to the order of frames may reach: 50% (chance within every pair) plus sampling noise
# (a blind model's top-1 on the 180 held-out clips has a standard deviation of about 4 points)
BLIND_BOUND = 0.6


class QuickstartMethodError(StadaptError):
    """A --methods list the quickstart cannot run: a name not installed, or a method that does not fit."""


def parse_methods(text: str) -> list[str]:
    """The method names of a comma-separated --methods value, each once, in order; unknown ones refused."""
    from stadapt.tuners import installed_tuners

    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    installed = installed_tuners()
    unknown = [name for name in names if name not in installed]
    if unknown or not names:
        what = f"unknown method(s) {', '.join(unknown)}" if unknown else "--methods names no method"
        raise QuickstartMethodError(what, f"installed: {', '.join(installed)} (stadapt methods describes them)")
    return names


def parse_heads(text: str) -> list[str]:
    """The head names of a comma-separated --heads value, each once, in order; unknown ones refused."""
    from stadapt.tools.quickstart import HEADS

    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in HEADS]
    if unknown or not names:
        what = f"unknown head(s) {', '.join(unknown)}" if unknown else "--heads names no head"
        raise QuickstartMethodError(what, f"choose from {', '.join(HEADS)}")
    return names


def plan_runs(names: Sequence[str], heads: Sequence[str], data_root: Path, runs: Path, *, seed: int,
              classes: Sequence[str]) -> list[tuple[str, str]]:
    """The (method, head) pairs to train, each model built first (no data, no training) so that one which
    cannot run on the quickstart's backbone is refused in one line before any of them trains. A method that
    trains nothing but its head, with a frozen text head, would train nothing: the zero-shot row is that model,
    so the pair is left out."""
    from stadapt.runtime.build import build_from_recipe
    from stadapt.tools.quickstart import HEADS, RECIPE, is_text_head, quickstart_recipe

    backbone = RECIPE["backbone"]["name"]
    pairs = []
    for name in names:
        for head in heads:
            try:
                frozen = is_text_head(head) and not HEADS[head]["train"]
                if frozen and not _trains_beyond_head(name, data_root, runs, seed, len(classes)):
                    continue
                recipe = quickstart_recipe(name, data_root, runs, seed=seed, check_files=False, head=head)
                build_from_recipe(recipe, len(classes), device="cpu", classes=classes)
            except StadaptError as exc:
                text = is_text_head(head)
                fit = f"method {name}" + (f" with a {head} head" if text else "")
                raise QuickstartMethodError(f"{fit} does not fit the quickstart's backbone {backbone}: {exc.message}",
                                            f"leave {name} out of --methods" + (f", or {head} out of --heads"
                                                                                 if text else "")) from None
            pairs.append((name, head))
    return pairs


def _trains_beyond_head(name: str, data_root: Path, runs: Path, seed: int, num_classes: int) -> bool:
    """Whether method `name` trains any parameter besides its classifier head."""
    from stadapt.runtime.build import build_from_recipe
    from stadapt.tools.quickstart import quickstart_recipe

    recipe = quickstart_recipe(name, data_root, runs, seed=seed, check_files=False)
    model = build_from_recipe(recipe, num_classes, device="cpu").model
    return any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("head."))


def format_methods(summary: dict) -> str:
    """One table (method, trainable parameters, held-out top-1, steps, training time) and what it shows."""
    from stadapt.tools.quickstart import DEFAULT_HEAD

    rows = summary["models"]
    lines = [f"{'method':<18} {'head':<13} {'trainable':>10} {'top-1':>7} {'steps':>6} {'train s':>8}"]
    for row in rows:
        lines.append(f"{row['tuning']:<18} {row.get('head', DEFAULT_HEAD):<13} {row['trainable_parameters']:>10,} "
                     f"{100 * row['top1']:>6.1f}% {row['steps']:>6} {row['train_seconds']:>8.1f}")
    n = len(summary["data"]["classes"])
    bound = round(100 * BLIND_BOUND)
    lines.append(f"\n{n} classes in {n // 2} time-reversal pairs, {summary['data']['val_videos']} held-out clips: "
                 f"a model that does not read the order of frames (per-frame features averaged over time) is at "
                 f"chance within a pair, at most 50% overall.")
    reading = [_label(row) for row in rows if row["top1"] > BLIND_BOUND]
    blind = [_label(row) for row in rows if row["top1"] <= BLIND_BOUND]
    if reading:
        lines.append(f"Above {bound}%, so they read the direction of motion: {', '.join(reading)}.")
    if blind:
        lines.append(f"At most {bound}% (chance within a pair, plus sampling noise), no better than a model blind "
                     f"to time: {', '.join(blind)}.")
    lines.append(f"total {summary['wall_seconds']:.0f}s; runs in {Path(rows[0]['run']).parent}; "
                 f"summary in {summary['written_to']}")
    return "\n".join(lines)


def _label(row: dict) -> str:
    """A row's name in the note: the method, with its head where that is not the linear one."""
    from stadapt.tools.quickstart import DEFAULT_HEAD, ZERO_SHOT, is_text_head

    head = row.get("head", DEFAULT_HEAD)
    return f"{row['tuning']} ({head} head)" if is_text_head(head) and row["tuning"] != ZERO_SHOT else row["tuning"]
