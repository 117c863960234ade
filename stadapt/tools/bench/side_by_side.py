"""`stadapt bench --methods A,B,...`: the installed tuning methods side by side on one backbone, each against a
reference method (st_adapter) in ONE run, so that every ratio comes from the same process and machine state.

Every method is built from its registered Tuner with its default settings (`stadapt methods` lists them),
through build_model, on the same random backbone (each model gets its own copy, built from the same seed:
a method may rewrite its backbone's modules, e.g. PEFT's). A method that does not fit the backbone (a
backbone hook it needs is missing) is reported on a line of its own instead of measured. The measurements
are those of `stadapt bench` (stadapt.tools.bench.inference): GFLOPs per clip, latency of one clip and
throughput at the batch, the models' runs interleaved (which goes first alternates from run to run), and
beside each ratio to the reference the spread of the two models' runs, with a warning where the spread is
larger than the difference the ratio claims.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stadapt.errors import StadaptError, UnknownBackboneError
from stadapt.tools.bench.flops import count_flops
from stadapt.tools.bench.inference import (
    measurement_spread,
    noise_warnings,
    parameter_counts,
    relative_spread,
    run_settings,
    time_models,
    timings,
)

REFERENCE = "st_adapter"  # what every other method is measured against (the paper's method); --reference
ALL = "all"  # `--methods all`: every installed method


def method_names(methods: Sequence[str], reference: str = REFERENCE) -> list[str]:
    """The methods to measure: `reference` first (added when not listed), then `methods` in their order (`all`:
    every installed method), duplicates dropped; a method that is not installed is refused in one line naming
    the installed ones."""
    from stadapt.tuners import installed_tuners

    installed = installed_tuners()
    given = [m.strip() for m in methods if m.strip()]
    names = list(dict.fromkeys([reference, *(name for m in given for name in (installed if m == ALL else [m]))]))
    unknown = [name for name in names if name not in installed]
    if unknown:
        raise StadaptError(f"unknown tuning method(s) {', '.join(unknown)}",
                           f"choose from the installed ones: {', '.join(installed)} (`stadapt methods` lists them)")
    return names


def method_config(backbone: str, name: str, *, frames: int, num_classes: int,
                  options: Mapping[str, Any] | None = None) -> Any:
    """The ModelConfig of method `name` with its default settings (its Tuner's, read from no recipe)."""
    from stadapt.model.classifier import ModelConfig
    from stadapt.tuners import load_tuner

    return ModelConfig(backbone, num_classes, frames, load_tuner(name).read_settings(None), tuning=name,
                       backbone_options=dict(options or {}))


def unfit_reason(backbone: str, name: str, *, frames: int, num_classes: int,
                 options: Mapping[str, Any] | None = None) -> str | None:
    """Why method `name` does not fit the backbone (its model built on the meta device: nothing is allocated),
    or None when it does. An unknown backbone is the user's error for every method, so it is raised."""
    from stadapt.tools.bench.params import model_parameter_counts

    try:
        model_parameter_counts(method_config(backbone, name, frames=frames, num_classes=num_classes,
                                             options=options))
    except UnknownBackboneError:
        raise
    except StadaptError as exc:
        return exc.message
    return None


def build_methods(backbone: str, names: Sequence[str], *, frames: int, num_classes: int, seed: int = 0,
                  options: Mapping[str, Any] | None = None,
                  merged: bool = False) -> tuple[dict[str, Any], dict[str, str], Any]:
    """({method: VideoClassifier} of the methods that fit, {method: why not} of those that do not, the
    backbone's VariantInfo as built). Every model's backbone is built from the same seed: the same weights.
    `merged`: each method that merges is also built merged (as `stadapt merge` writes it), as "NAME merged"."""
    import torch

    from stadapt.backbones.registry import parse_backbone
    from stadapt.model.classifier import build_model
    from stadapt.model.merge import merge_model

    models: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    variant = parse_backbone(backbone, dict(options or {}))[1]  # an unknown backbone fails here, in one line
    for name in names:
        reason = unfit_reason(backbone, name, frames=frames, num_classes=num_classes, options=options)
        if reason is not None:
            unavailable[name] = reason
            continue
        config = method_config(backbone, name, frames=frames, num_classes=num_classes, options=options)
        torch.manual_seed(seed)
        built = build_model(config)
        models[name], variant = built.model, built.variant
        if merged and config.tuner.merges:
            torch.manual_seed(seed)
            again = build_model(config)
            models[f"{name} merged"] = merge_model(again.model, again.config)[0]
    return models, unavailable, variant


def bench_methods(
    backbone: str = "clip:ViT-B-16",
    methods: Sequence[str] = (),
    *,
    reference: str = REFERENCE,
    frames: int = 8,
    num_classes: int = 400,
    batch: int | None = None,
    latency_runs: int | None = None,
    throughput_runs: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    warmup: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    merged: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per method: parameters, GFLOPs per clip, median latency at batch 1 and throughput at `batch`, each
    model's runs interleaved with the others'; per method but the reference, the ratios to the reference and
    the spread of the two models' runs (module docstring). None for `batch`, `warmup` or the run counts takes
    the device's default, as `stadapt bench` does."""
    import torch

    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.precision import resolve_precision

    names = method_names(methods, reference)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    chosen = run_settings(dev.type, {"batch": batch, "warmup": warmup, "latency_runs": latency_runs,
                                  "throughput_runs": throughput_runs}, {"frames": frames, "num_classes": num_classes})
    say = progress if progress is not None else (lambda message: None)
    say(f"building {len(names)} models ({', '.join(names)})...")
    built, unavailable, variant = build_methods(backbone, names, frames=frames, num_classes=num_classes, seed=seed,
                                                options=options, merged=merged)
    if not built:
        raise StadaptError(f"none of the methods {', '.join(names)} fits {backbone}",
                           "; ".join(f"{name}: {why}" for name, why in unavailable.items()))
    results = {name: parameter_counts(model.to(dev).eval()) for name, model in built.items()}
    models = {name: torch.compile(model, dynamic=False) if compile else model for name, model in built.items()}
    size = variant.image_size
    generator = torch.Generator().manual_seed(seed)
    inputs = {n: torch.randn(n, 3, frames, size, size, generator=generator).to(dev)
              for n in sorted({1, chosen["batch"]})}
    with torch.inference_mode(), prec.autocast(dev):
        say("counting FLOPs (one clip per model)...")
        for name, model in built.items():
            results[name]["gflops_per_clip"] = count_flops(model, inputs[1]) / 1e9
        say(f"warming up ({chosen['warmup']} pass(es) per model and batch size on {dev}, {prec.name}"
            f"{', compiling' if compile else ''})...")
        times = time_models(models, inputs, dev, chosen, say)
    for name in built:
        results[name].update(timings(times[name], chosen["batch"]))
    report = _report(results, unavailable, reference, dev, chosen, variant, backbone=backbone, frames=frames,
                     num_classes=num_classes, options=options, precision=prec.name, compile=compile)
    models.clear()
    built.clear()
    inputs.clear()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return report


def _report(results: dict[str, dict[str, Any]], unavailable: dict[str, str], reference: str, dev: Any,
            chosen: Mapping[str, int], variant: Any, *, backbone: str, frames: int, num_classes: int,
            options: Mapping[str, Any] | None, precision: str, compile: bool) -> dict[str, Any]:
    """The settings, each method's results, and per method the ratios to the reference and their spread."""
    import torch

    from stadapt.backbones.registry import parse_backbone
    from stadapt.tools.bench.train_memory import cpu_name

    plugin, _ = parse_backbone(backbone, dict(options or {}))
    ratios: dict[str, Any] = {}
    spreads: dict[str, Any] = {}
    warnings: list[str] = []
    base = results.get(reference)
    for name, r in results.items():
        if base is None or name == reference:
            continue
        ratio = {key: r[key] / base[key] for key in ("throughput", "total_parameters", "gflops_per_clip")}
        ratio["latency"] = r["latency_ms"] / base["latency_ms"]
        ratio["trainable_parameters"] = r["trainable_parameters"] / base["trainable_parameters"]
        ratios[name] = ratio
        spreads[name] = measurement_spread(results, ratio, names=(reference, name))
        warnings += [line.replace("warning: ", f"warning: {name} / {reference}: ", 1)
                     for line in noise_warnings(spreads[name])]
    return {
        "backbone": f"{plugin.name}:{variant.name}", "backbone_options": dict(options or {}), "frames": frames,
        "image_size": variant.image_size, "num_classes": num_classes, "settings": "each method's defaults",
        "batch": chosen["batch"], "latency_runs": chosen["latency_runs"],
        "throughput_runs": chosen["throughput_runs"], "warmup": chosen["warmup"], "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "cpu_threads": torch.get_num_threads(), "precision": precision, "compile": compile,
        "torch": torch.__version__, "reference": reference, "methods": results, "unavailable": unavailable,
        "ratio": ratios, "spread": spreads, "warnings": warnings,
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_methods_report(report: dict[str, Any]) -> str:
    """One row per method: parameters, GFLOPs, latency, throughput and its ratio to the reference with the
    spread of the runs; a line per method that does not fit; the noise warnings."""
    ref = report["reference"]
    lines = [
        f"{report['backbone']}, {report['frames']} frames x {report['image_size']} px, {report['num_classes']} "
        f"classes, each method with its default settings; {report['device']} ({report['device_name']}, "
        f"{report['precision']}{', compiled' if report['compile'] else ''}); medians of {report['latency_runs']} "
        f"latency and {report['throughput_runs']} throughput runs after {report['warmup']} warm-up, the models "
        f"interleaved",
        f"{'method':<17} {'trainable':>12} {'total':>8} {'GFLOPs/clip':>11} {'latency (b=1)':>13} "
        f"{'clips/s (b=' + str(report['batch']) + ')':>13} {'x ' + ref:>14} {'spread':>7}",
    ]
    for name, r in report["methods"].items():
        ratio = report["ratio"].get(name)
        spread = ((report["spread"].get(name) or {}).get("throughput") or {}).get("max")
        if name == ref:  # its own runs' spread
            spread = relative_spread(r["throughput_all"])
        shown = "1 (reference)" if name == ref else ("-" if ratio is None else f"{ratio['throughput']:.3f}")
        lines.append(f"{name:<17} {r['trainable_parameters']:>12,} {r['total_parameters'] / 1e6:>7.2f}M "
                     f"{r['gflops_per_clip']:>11.2f} {r['latency_ms']:>10.1f} ms {r['throughput']:>13.2f} "
                     f"{shown:>14} {_percent(spread):>7}")
    for name, why in report["unavailable"].items():
        lines.append(f"{name:<17} does not fit {report['backbone']}: {why}")
    if ref not in report["methods"]:
        lines.append(f"no ratios: the reference {ref} was not measured (choose another with --reference)")
    lines.append(f"x {ref}: throughput ratio; spread: (max - min) / median of the throughput runs, the larger of "
                 f"the method's and {ref}'s")
    lines += report["warnings"]
    return "\n".join(lines)
