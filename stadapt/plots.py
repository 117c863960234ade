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
