"""`stadapt methods`: the installed tuning methods, one row each: summary, trainable parameters on a named
backbone (counted on the meta device: nothing is allocated), and whether the method merges away."""

from __future__ import annotations

from typing import Any

from stadapt.errors import StadaptError, UnknownBackboneError

DEFAULT_BACKBONE = "clip:tiny"


def method_rows(backbone: str = DEFAULT_BACKBONE, *, num_classes: int = 400, frames: int = 8) -> list[dict[str, Any]]:
    """Per installed method: name, summary, trainable and total parameters on `backbone` with the method's
    default settings (None and `unavailable` when it does not apply to the backbone), merges, distribution."""
    from stadapt.model.classifier import ModelConfig
    from stadapt.tools.bench.params import model_parameter_counts
    from stadapt.tuners import installed_tuners, load_tuner
    from stadapt.tuners.registry import tuner_distribution

    rows = []
    for name in installed_tuners():
        row: dict[str, Any] = {"name": name, "distribution": tuner_distribution(name)}
        try:
            tuner = load_tuner(name)
        except StadaptError as exc:  # a broken plugin is named with its error; the others still list
            rows.append({**row, "summary": "", "trainable": None, "total": None, "merges": None,
                         "unavailable": exc.message})
            continue
        row.update(summary=tuner.summary, merges=tuner.merges, trainable=None, total=None, unavailable=None)
        try:
            config = ModelConfig(backbone, num_classes, frames, tuner.read_settings(None), dropout=0.0, tuning=name)
            _, _, counts = model_parameter_counts(config)
            row.update(trainable=counts["trainable"], total=counts["total"])
        except UnknownBackboneError:
            raise
        except StadaptError as exc:  # e.g. a backbone hook the method needs and the backbone lacks
            row["unavailable"] = exc.message
        rows.append(row)
    return rows


def format_methods(rows: list[dict[str, Any]], backbone: str, num_classes: int | None = None) -> str:
    """The rows as a table, one line per method; the header names the head's classes, which every count
    includes (a linear probe's is the head alone)."""
    head = f" with a {num_classes}-class head" if num_classes is not None else ""
    lines = [f"tuning methods (trainable parameters on {backbone}{head}, default settings):",
             f"{'method':<18} {'trainable':>12} {'merges':>6}  summary"]
    for r in rows:
        count = f"{r['trainable']:,}" if r["trainable"] is not None else "-"
        merges = "-" if r["merges"] is None else ("yes" if r["merges"] else "no")
        note = f"  (unavailable: {r['unavailable']})" if r["unavailable"] else ""
        lines.append(f"{r['name']:<18} {count:>12} {merges:>6}  {r['summary']}{note}")
    return "\n".join(lines)
