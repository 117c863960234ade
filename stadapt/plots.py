"""PNG figures people would rather see than read: training curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def save_figure(fig: Any, out: Path, **options: Any) -> None:
    """fig.savefig, atomically (a reader never sees half a PNG), with the mode open() gives; the PNG says
    stadapt wrote it (its Software text), so a later --overwrite knows it may replace it."""
    from stadapt.fileio import PNG_SOFTWARE, atomic_output

    with atomic_output(out) as staging:
        fig.savefig(staging, metadata={"Software": PNG_SOFTWARE}, **options)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe in workers and on servers
    import matplotlib.pyplot as plt

    return plt


def training_curves(events: Sequence[dict[str, Any]], out: Path) -> Path:
    """Loss and accuracy over steps (train), with validation top-1 where there is one."""
    plt = _pyplot()
    train = [e for e in events if e.get("split") == "train"]
    val = [e for e in events if e.get("split") == "val" and e.get("top1") is not None]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], label="train loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.grid(alpha=0.3)
    ax_acc.plot([e["step"] for e in train], [100 * e["acc"] for e in train], label="train (clip)")
    if val:
        ax_acc.plot([e["step"] for e in val], [100 * e["top1"] for e in val], "o-", label="val top-1")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)
    return out


def confusion_matrix(confusion: Sequence[Sequence[int]], classes: Sequence[str], out: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: prediction)."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(confusion, dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(3 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)
    return out


def runs_comparison(points: Sequence[dict[str, Any]], out: Path, *, speed_label: str = "clips/s") -> Path:
    """Top-1 against trainable parameters (log scale) and against clips/s, one point per run (`label`,
    `method`, `top1` as a fraction or None, `trainable`, `clips_per_s`), coloured by method: where each
    tuning method sits between accuracy, size and speed. Runs without a top-1 are listed below the axes."""
    plt = _pyplot()
    scored = [p for p in points if p.get("top1") is not None]
    methods = sorted({str(p["method"]) for p in points})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key, label in ((axes[0], "trainable", "trainable parameters"), (axes[1], "clips_per_s", speed_label)):
        for p in scored:
            ax.scatter(p[key], 100 * p["top1"], color=colours[str(p["method"])], s=40, zorder=3)
            ax.annotate(str(p["label"]), (p[key], 100 * p["top1"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.margins(x=0.3, y=0.15)  # room for the labels beside the points
        ax.grid(alpha=0.3)
    if scored and all(p["trainable"] > 0 for p in scored):
        axes[0].set_xscale("log")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[m], label=m) for m in methods]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(methods), 6), fontsize=8, frameon=False)
    missing = [str(p["label"]) for p in points if p.get("top1") is None]
    if missing:
        fig.text(0.01, 0.01, "not evaluated (no top-1): " + ", ".join(missing), fontsize=7)
    fig.tight_layout(rect=(0, 0.04 if missing else 0, 1, 0.93))
    save_figure(fig, out, dpi=110)
    plt.close(fig)
    return out
