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


def check_methods(names: Sequence[str], data_root: Path, runs: Path, *, seed: int, num_classes: int) -> None:
    """Build each method's quickstart model (no data, no training) so one that cannot run on the quickstart's
    backbone is refused in one line before any of them trains."""
    from stadapt.runtime.build import build_from_recipe
    from stadapt.tools.quickstart import RECIPE, quickstart_recipe

    backbone = RECIPE["backbone"]["name"]
    for name in names:
        try:
            recipe = quickstart_recipe(name, data_root, runs, seed=seed, check_files=False)
            build_from_recipe(recipe, num_classes, device="cpu")
        except StadaptError as exc:
            raise QuickstartMethodError(
                f"method {name} does not fit the quickstart's backbone {backbone}: {exc.message}",
                f"leave {name} out of --methods",
            ) from None


def format_methods(summary: dict) -> str:
    """One table (method, trainable parameters, held-out top-1, steps, training time) and what it shows."""
    rows = summary["models"]
    lines = [f"{'method':<18} {'trainable':>10} {'top-1':>7} {'steps':>6} {'train s':>8}"]
    for row in rows:
        lines.append(f"{row['tuning']:<18} {row['trainable_parameters']:>10,} {100 * row['top1']:>6.1f}% "
                     f"{row['steps']:>6} {row['train_seconds']:>8.1f}")
    n = len(summary["data"]["classes"])
    bound = round(100 * BLIND_BOUND)
    lines.append(f"\n{n} classes in {n // 2} time-reversal pairs, {summary['data']['val_videos']} held-out clips: "
                 f"a model that does not read the order of frames (per-frame features averaged over time) is at "
                 f"chance within a pair, at most 50% overall.")
    reading = [row["tuning"] for row in rows if row["top1"] > BLIND_BOUND]
    blind = [row["tuning"] for row in rows if row["top1"] <= BLIND_BOUND]
    if reading:
        lines.append(f"Above {bound}%, so they read the direction of motion: {', '.join(reading)}.")
    if blind:
        lines.append(f"At most {bound}% (chance within a pair, plus sampling noise), no better than a model blind "
                     f"to time: {', '.join(blind)}.")
    lines.append(f"total {summary['wall_seconds']:.0f}s; runs in {Path(rows[0]['run']).parent}; "
                 f"summary in {summary['written_to']}")
    return "\n".join(lines)
