"""`stadapt bench-train --methods A,B,...`: training step time, peak memory, GFLOPs per clip and trainable
parameters of installed tuning methods side by side, each with its default settings and each against a
reference method (st_adapter): the ratios of its step time and peak memory to the reference's.

The measurements are bench-train's (stadapt.tools.bench.train_memory): on the CPU each method in a fresh
process (its own peak RSS), on CUDA one after the other with the allocator's peak reset in between. A method
that does not fit the backbone (checked on the meta device first) gets a line saying so instead of a failed
measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stadapt.errors import StadaptError
from stadapt.tools.bench.inference import relative_spread
from stadapt.tools.bench.side_by_side import REFERENCE, method_names, unfit_reason
from stadapt.tools.bench.train_memory import bench_train_memory, gib
from stadapt.tools.bench.train_memory import format_report as format_modes_report

RATIO_KEYS = ("step_seconds", "peak_increase_bytes", "peak_bytes")


def bench_train_methods(backbone: str = "clip:ViT-B-16", methods: Sequence[str] = (), *, reference: str = REFERENCE,
                        frames: int = 8, num_classes: int = 400, options: dict[str, Any] | None = None,
                        progress: Callable[[str], None] | None = None, **settings: Any) -> dict[str, Any]:
    """bench-train's report of the methods that fit (`settings`: bench_train_memory's micro_batch, steps,
    device, precision, ...), each with its GFLOPs per clip, plus `reference`, `unavailable` {method: why} and
    `ratios` {method: {step_seconds, peak_increase_bytes, peak_bytes}} to the reference."""
    names = method_names(methods, reference)
    unavailable = {}
    for name in names:
        reason = unfit_reason(backbone, name, frames=frames, num_classes=num_classes, options=options)
        if reason is not None:
            unavailable[name] = reason
    fitting = [name for name in names if name not in unavailable]
    if not fitting:
        raise StadaptError(f"none of the methods {', '.join(names)} fits {backbone}",
                           "; ".join(f"{name}: {why}" for name, why in unavailable.items()))
    report = bench_train_memory(backbone, frames=frames, num_classes=num_classes, modes=fitting, options=options,
                                progress=progress, flops=True, **settings)
    report.pop("ratio", None)  # the default run's one ratio (st_adapter / full_finetune): `ratios` has them all
    results = report["modes"]
    base = results.get(reference)
    ratios: dict[str, dict[str, float | None]] = {}
    for name, r in results.items():
        if base is None or name == reference:
            continue
        ratios[name] = {key: r[key] / base[key] if r[key] is not None and base[key] else None for key in RATIO_KEYS}
    for r in results.values():
        r["step_spread"] = relative_spread(r["step_seconds_all"])
    report.update(reference=reference, settings="each method's defaults", unavailable=unavailable, ratios=ratios)
    return report


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_methods_report(report: dict[str, Any]) -> str:
    """One row per method: trainable parameters, GFLOPs, step time with the spread of its steps, peak increase
    and peak, and the ratios of step time and peak increase to the reference; a line per method that does
    not fit. The header and the memory note are bench-train's own."""
    ref = report["reference"]
    plain = format_modes_report(report).splitlines()
    lines = [plain[0] + ", each method with its default settings",
             f"{'method':<17} {'trainable':>12} {'GFLOPs/clip':>11} {'step (median)':>13} {'spread':>7} "
             f"{'peak increase':>13} {'peak':>10} {'step x ref':>10} {'peak incr. x ref':>16}"]
    for name, r in report["modes"].items():
        ratio = report["ratios"].get(name) or {}
        step = "-" if r["step_seconds"] is None else f"{r['step_seconds']:.3f} s"
        spread = "-" if r.get("step_spread") is None else f"{100 * r['step_spread']:.1f}%"
        gflops = r.get("gflops_per_clip")
        lines.append(f"{name:<17} {r['trainable_parameters']:>12,} "
                     f"{'-' if gflops is None else f'{gflops:.2f}':>11} {step:>13} {spread:>7} "
                     f"{gib(r['peak_increase_bytes']):>13} {gib(r['peak_bytes']):>10} "
                     f"{'reference' if name == ref else _times(ratio.get('step_seconds')):>10} "
                     f"{'reference' if name == ref else _times(ratio.get('peak_increase_bytes')):>16}")
    for name, why in report["unavailable"].items():
        lines.append(f"{name:<17} does not fit {report['backbone']}: {why}")
    if ref not in report["modes"]:
        lines.append(f"no ratios: the reference {ref} was not measured (choose another with --reference)")
    lines.append(f"x ref: the ratio to {ref}; spread: (max - min) / median of the measured steps; the methods are "
                 f"measured one after the other, not interleaved")
    lines += plain[2 + len(report["modes"]):]  # backbone storage kept, options, how memory is measured
    return "\n".join(lines)
