"""`stadapt bench`: the paper's Table 4: parameters, latency and throughput with and without adapters.

Two models are built from the SAME random backbone (no download; the adapted model's backbone module
is shared by the other): "without adapters" is the frozen backbone + linear head (a linear probe,
tuning=linear) and "with adapters" adds the ST-Adapters (tuning=st_adapter). Both run in eval mode
under `torch.inference_mode()` on random normalised clips (standard normal values, as after the
data pipeline's normalisation), under the precision's autocast (`auto`: bf16 on CUDA GPUs that have
it, fp16 on older ones, float32 on the CPU); `compile=True` wraps each model in `torch.compile`.

- latency: wall-clock time of one forward pass of ONE clip (batch 1), median over the runs, in ms;
- throughput: clips per second of one forward pass of `batch` clips, median over the runs;
- GFLOPs per clip: counted by PyTorch's FlopCounterMode on one clip (stadapt.tools.bench.flops) and, on CUDA,
  the TFLOPS the throughput achieves as a fraction of the device's bf16 dense peak (a table by name).

After `warmup` untimed passes of each model at each batch size, the measured runs ALTERNATE between
the two models (and which goes first alternates from run to run), so that slow drifts of the machine
(frequency, other processes) hit both alike. On CUDA every timed pass is bracketed by
`torch.cuda.synchronize()`.

The spread of each model's runs ((max - min) / median) is reported beside the ratios, with a warning
line wherever it is larger than the difference a ratio claims (|ratio - 1|): that ratio is noise.

Defaults follow the device: on CUDA batch 32 (the paper's), 5 warm-up passes, 30 latency and 10
throughput runs; on the CPU batch 4, one warm-up pass, 5 latency and 3 throughput runs: ViT-B/16 at 8 frames costs
about 6 s per clip-batch of 1 and 5 s per extra clip on a 2-core CPU, so the whole benchmark takes a
few minutes there (`batch` and the run counts scale it).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stadapt.errors import StadaptError
from stadapt.tools.bench.flops import bf16_peak_tflops, count_flops
from stadapt.tools.bench.train_memory import cpu_name

MODELS = ("without_adapters", "with_adapters")
LABELS = {"without_adapters": "w/o adapters", "with_adapters": "w/ adapters"}
GPU_DEFAULTS = {"batch": 32, "warmup": 5, "latency_runs": 30, "throughput_runs": 10}
CPU_DEFAULTS = {"batch": 4, "warmup": 1, "latency_runs": 5, "throughput_runs": 3}


def defaults_for(device_type: str) -> dict[str, int]:
    """Batch size, warm-up passes and run counts used when not given, for a device type."""
    return dict(GPU_DEFAULTS if device_type == "cuda" else CPU_DEFAULTS)


def build_pair(backbone: str, *, frames: int, num_classes: int, bottleneck: int, positions: Sequence[str],
               seed: int = 0, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The two models of the benchmark, {name: VideoClassifier}, sharing one random backbone module built
    with the backbone `options` (e.g. timm's img_size)."""
    import torch

    from stadapt.model.adapters import AdapterConfig
    from stadapt.model.classifier import ModelConfig, build_model

    torch.manual_seed(seed)
    options = dict(options or {})
    adapted = build_model(ModelConfig(backbone, num_classes, frames,
                                      AdapterConfig(bottleneck=bottleneck, positions=tuple(positions)),
                                      tuning="st_adapter", backbone_options=options))
    torch.manual_seed(seed)
    plain = build_model(ModelConfig(backbone, num_classes, frames, None, tuning="linear", backbone_options=options))
    plain.model.backbone = adapted.model.backbone  # the very same weights (and memory)
    plain.model.head.load_state_dict(adapted.model.head.state_dict())
    return {"without_adapters": plain.model, "with_adapters": adapted.model, "image_size": adapted.variant.image_size,
            "backbone": f"{adapted.plugin.name}:{adapted.variant.name}"}


def bench_inference(
    backbone: str = "clip:ViT-B-16",
    *,
    frames: int = 8,
    num_classes: int = 400,
    bottleneck: int = 384,
    positions: Sequence[str] = ("pre_mlp",),
    batch: int | None = None,
    latency_runs: int | None = None,
    throughput_runs: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    warmup: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Table 4 of the paper on `device`: per model (without / with adapters) the parameter counts, the
    median latency at batch 1 and the median throughput at `batch`; their ratios under `ratio`.
    None for `batch`, `warmup` or the run counts takes the device's default (see `defaults_for`)."""
    import torch

    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.precision import resolve_precision

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    chosen = run_settings(dev.type, {"batch": batch, "warmup": warmup, "latency_runs": latency_runs,
                                  "throughput_runs": throughput_runs},
                       {"frames": frames, "num_classes": num_classes, "bottleneck": bottleneck})
    pair = build_pair(backbone, frames=frames, num_classes=num_classes, bottleneck=bottleneck,
                      positions=positions, seed=seed, options=options)
    size = pair["image_size"]
    results = {name: parameter_counts(pair[name].to(dev).eval()) for name in MODELS}
    models = {name: torch.compile(pair[name], dynamic=False) if compile else pair[name] for name in MODELS}
    generator = torch.Generator().manual_seed(seed)
    inputs = {n: torch.randn(n, 3, frames, size, size, generator=generator).to(dev)
              for n in sorted({1, chosen["batch"]})}
    say = progress if progress is not None else (lambda message: None)
    with torch.inference_mode(), prec.autocast(dev):
        say("counting FLOPs (one clip per model)...")
        for name in MODELS:
            results[name]["gflops_per_clip"] = count_flops(pair[name], inputs[1]) / 1e9
        say(f"warming up ({chosen['warmup']} pass(es) per model and batch size on {dev}, {prec.name}"
            f"{', compiling' if compile else ''})...")
        times = time_models(models, inputs, dev, chosen, say)
    for name in MODELS:
        results[name].update(timings(times[name], chosen["batch"]))
    report = _report(results, dev, chosen, pair, options=options, frames=frames, num_classes=num_classes,
                     adapter={"bottleneck": bottleneck, "positions": list(positions)},
                     precision=prec.name, compile=compile)
    models.clear()
    inputs.clear()
    pair.clear()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return report


def run_settings(device_type: str, given: dict[str, int | None], sizes: dict[str, int]) -> dict[str, int]:
    """Batch, warm-up passes and run counts: those given, else the device's defaults; every value checked."""
    for name, value in sizes.items():
        if value < 1:
            raise StadaptError(f"{name} must be at least 1, got {value}")
    chosen = defaults_for(device_type)
    chosen.update({k: v for k, v in given.items() if v is not None})
    for name, value in chosen.items():
        if value < (0 if name == "warmup" else 1):
            raise StadaptError(f"{name} must be at least {0 if name == 'warmup' else 1}, got {value}")
    return chosen


def parameter_counts(model: Any) -> dict[str, Any]:
    """A VideoClassifier's tuning mode and its parameters, in all and by part."""
    counts = model.parameter_counts()
    return {
        "tuning": model.tuning,
        "total_parameters": counts["total"],
        "trainable_parameters": counts["trainable"],
        "backbone_parameters": sum(p.numel() for p in model.backbone.parameters()),
        "adapter_parameters": sum(p.numel() for p in model.adapters.parameters()),
        "head_parameters": sum(p.numel() for p in model.head.parameters()),
    }


def time_models(models: Mapping[str, Any], inputs: Mapping[int, Any], dev: Any, chosen: Mapping[str, int],
                 say: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """Seconds per forward pass, {model: {"latency": [...], "throughput": [...]}}: after the warm-up passes,
    the runs alternate between the models (and which goes first alternates), so drifts hit both alike."""
    import torch

    def timed(name: str, n: int) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        tick = time.perf_counter()
        models[name](inputs[n])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - tick

    order = list(models)  # the pair's: MODELS; `bench --methods`: the methods as listed
    for name in order:
        for n in inputs:
            for _ in range(chosen["warmup"]):
                timed(name, n)
    times: dict[str, dict[str, list[float]]] = {name: {"latency": [], "throughput": []} for name in order}
    count = "the two" if len(order) == 2 else f"the {len(order)}"
    for what, n, runs in (("latency", 1, chosen["latency_runs"]),
                          ("throughput", chosen["batch"], chosen["throughput_runs"])):
        say(f"measuring {what} (batch {n}): {runs} run(s), alternating {count} models...")
        for run in range(runs):
            for name in order if run % 2 == 0 else order[::-1]:
                times[name][what].append(timed(name, n))
    return times


def timings(times: Mapping[str, list[float]], batch: int) -> dict[str, Any]:
    """One model's medians (and every run) from its measured seconds."""
    throughput_all = [batch / t for t in times["throughput"]]
    return {
        "latency_ms": 1000 * statistics.median(times["latency"]),
        "latency_ms_all": [1000 * t for t in times["latency"]],
        "throughput": statistics.median(throughput_all),
        "throughput_all": throughput_all,
        "batch_seconds": statistics.median(times["throughput"]),
    }


def _report(results: dict[str, dict[str, Any]], dev: Any, chosen: Mapping[str, int], pair: Mapping[str, Any],
            *, options: Mapping[str, Any] | None, frames: int, num_classes: int, adapter: dict[str, Any],
            precision: str, compile: bool) -> dict[str, Any]:
    """The report: the settings, each model's results with its achieved TFLOPS, the ratios and their spread."""
    import torch

    cuda = dev.type == "cuda"
    device_name = torch.cuda.get_device_name(dev) if cuda else cpu_name()
    peak = bf16_peak_tflops(device_name) if cuda else None
    for r in results.values():
        r["achieved_tflops"] = r["gflops_per_clip"] * r["throughput"] / 1e3
        r["bf16_peak_fraction"] = r["achieved_tflops"] / peak if peak else None
    plain, adapted = results["without_adapters"], results["with_adapters"]
    report: dict[str, Any] = {
        "backbone": pair["backbone"], "backbone_options": dict(options or {}), "frames": frames,
        "image_size": pair["image_size"], "num_classes": num_classes, "adapter": adapter,
        "batch": chosen["batch"], "latency_runs": chosen["latency_runs"],
        "throughput_runs": chosen["throughput_runs"], "warmup": chosen["warmup"],
        "device": str(dev), "device_name": device_name, "bf16_peak_tflops": peak,
        "cpu_threads": torch.get_num_threads(), "precision": precision, "compile": compile,
        "torch": torch.__version__, "models": results,
        "ratio": {
            "of": "with_adapters / without_adapters",
            "throughput": adapted["throughput"] / plain["throughput"],
            "latency": adapted["latency_ms"] / plain["latency_ms"],
            "total_parameters": adapted["total_parameters"] / plain["total_parameters"],
            "gflops_per_clip": adapted["gflops_per_clip"] / plain["gflops_per_clip"],
        },
    }
    report["spread"] = measurement_spread(results, report["ratio"])
    report["warnings"] = noise_warnings(report["spread"])
    return report


def relative_spread(values: Sequence[float]) -> float | None:
    """(max - min) / median of repeated measurements: how far apart the runs of one model landed;
    None when there is only one run (no spread to see)."""
    if len(values) < 2:
        return None
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle > 0 else float("inf")


def measurement_spread(results: dict[str, dict[str, Any]], ratio: dict[str, Any],
                       names: Sequence[str] = MODELS) -> dict[str, Any]:
    """Per measure (latency, throughput): the relative spread of each of the two models `names`, the larger
    of the two, the effect the ratio claims (|ratio - 1|) and whether the spread is larger than it (`noisy`)."""
    spread: dict[str, Any] = {}
    for what, key in (("latency", "latency_ms_all"), ("throughput", "throughput_all")):
        per_model = {name: relative_spread(results[name][key]) for name in names}
        known = [v for v in per_model.values() if v is not None]
        largest = max(known) if len(known) == len(per_model) else None
        effect = abs(ratio[what] - 1.0)
        spread[what] = {**per_model, "max": largest, "effect": effect,
                        "noisy": largest is None or largest > effect}
    return spread


def noise_warnings(spread: dict[str, Any]) -> list[str]:
    """One line per measure whose ratio is not larger than the noise of its runs, so that nobody reads
    a difference into it."""
    lines = []
    for what, s in spread.items():
        if not s["noisy"]:
            continue
        if s["max"] is None:
            lines.append(f"warning: one run per model, so the noise of the {what} is unknown and its ratio may be "
                         f"noise; use --runs 3 or more")
        else:
            lines.append(f"warning: the {what} ratio differs from 1 by {100 * s['effect']:.1f}%, less than the "
                         f"spread of the runs ({100 * s['max']:.1f}% = (max - min) / median): within noise; "
                         f"use more --runs or a quieter machine")
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as the paper's Table 4, plus the with/without ratio line."""
    lines = [
        f"{report['backbone']}, {report['frames']} frames x {report['image_size']} px, {report['num_classes']} "
        f"classes, adapters {len(report['adapter']['positions'])} per block x {report['adapter']['bottleneck']}; "
        f"{report['device']} ({report['device_name']}, {report['precision']}"
        f"{', compiled' if report['compile'] else ''}); medians of {report['latency_runs']} latency and "
        f"{report['throughput_runs']} throughput runs after {report['warmup']} warm-up",
        f"{'model':<14} {'params (total)':>15} {'trainable':>11} {'GFLOPs/clip':>12} {'latency (b=1)':>14} "
        f"{'throughput (b=' + str(report['batch']) + ')':>18}",
    ]
    for name, r in report["models"].items():
        lines.append(f"{LABELS.get(name, name):<14} {r['total_parameters'] / 1e6:>14.1f}M "
                     f"{r['trainable_parameters'] / 1e6:>10.2f}M {r.get('gflops_per_clip', float('nan')):>12.1f} "
                     f"{r['latency_ms']:>11.1f} ms {r['throughput']:>10.2f} videos/s")
    ratio = report["ratio"]
    lines.append(f"with / without adapters: throughput {ratio['throughput']:.3f}x, latency {ratio['latency']:.3f}x, "
                 f"parameters {ratio['total_parameters']:.3f}x"
                 + (f", GFLOPs {ratio['gflops_per_clip']:.3f}x" if "gflops_per_clip" in ratio else ""))
    line = peak_line(report)
    if line:
        lines.append(line)
    spread = report.get("spread") or {}
    if spread:
        percent = {what: "-" if s["max"] is None else f"{100 * s['max']:.1f}%" for what, s in spread.items()}
        shown = ", ".join(f"{what} {value}" for what, value in percent.items())
        lines.append(f"spread of the runs ((max - min) / median, the larger of the two models): {shown}")
    lines += report.get("warnings", [])
    return "\n".join(lines)


def peak_line(report: dict[str, Any]) -> str | None:
    """On CUDA, the achieved TFLOPS of each model at the throughput batch and their fraction of the
    device's bf16 dense peak (or that the peak of this device is not known); None on other devices."""
    if not str(report.get("device", "")).startswith("cuda"):
        return None
    models = report["models"]
    achieved = ", ".join(f"{LABELS.get(n, n)} {r['achieved_tflops']:.0f} TFLOPS" for n, r in models.items()
                         if r.get("achieved_tflops") is not None)
    peak = report.get("bf16_peak_tflops")
    if not peak:
        return (f"achieved: {achieved}; the bf16 peak of {report['device_name']} is not in stadapt's table "
                f"(stadapt/tools/bench/flops.py), so no fraction")
    fractions = ", ".join(f"{LABELS.get(n, n)} {100 * r['bf16_peak_fraction']:.1f}%" for n, r in models.items())
    return (f"achieved: {achieved} = {fractions} of the {report['device_name']} bf16 dense peak "
            f"({peak:.0f} TFLOPS; run in {report['precision']})")
