"""`stadapt bench-train`: peak training memory and step time per tuning mode (ST-Adapter vs fine-tuning).

Each mode builds the model (random backbone weights: no download; `options` are its backbone build
options), moves it to the device, and runs `warmup + steps` optimizer steps of the training loop's own
step (stadapt.training.step.TrainStep: `accumulation` micro-batches of one random micro-batch, each
forward under the precision's autocast, the loop's cross-entropy and backward, then the AdamW step
through the grad scaler), with the loop's tuning, backbone storage and checkpointing options. `half`
storage keeps a trained backbone in fp32 (the loop refuses it there); the report names such a mode.
Step times are wall-clock times of
the measured steps (after the warm-up), synchronised on CUDA; the report gives their median.

Memory, measured from the moment the model is on the device (its weights are the baseline):

- CUDA: `torch.cuda.max_memory_allocated`, reset after the model is moved, so the peak covers the
  training steps only (warm-up included: its first optimizer step allocates the AdamW moments).
  Modes run one after the other in this process; memory is freed and the peak reset between them.
  `peak_increase` = peak - memory allocated after the model was moved; `peak` = the peak itself.
- CPU: the resident set size (RSS) of a FRESH subprocess per mode, so one mode's freed-but-cached
  memory cannot inflate another's peak. After the model is built and moved, the process reads its
  RSS (`VmRSS` in /proc/self/status) and resets its high-water mark (writing 5 to
  /proc/self/clear_refs); after the steps it reads the high-water mark (`VmHWM`).
  `peak_increase` = VmHWM - that RSS; `peak` = VmHWM (the whole process: Python, libraries, model).
  The subprocess runs with glibc's MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB (unless set), so that
  freed tensors return to the system instead of staying in the allocator's heap and in RSS.
  Where the mark cannot be reset, VmHWM covers the process's whole life (model building included;
  the report's `memory_method` says so); without /proc, `resource.getrusage` gives the peak alone.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stadapt.errors import StadaptError

DEFAULT_MODES = ("st_adapter", "full_finetune")
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status, in bytes (None where there is no /proc)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    peak = _proc_kib("VmHWM")
    if peak is not None:
        return peak
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


def measure_mode(
    backbone: str,
    mode: str,
    *,
    frames: int = 8,
    micro_batch: int = 4,
    accumulation: int = 1,
    steps: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    precision: str = "auto",
    backbone_storage: str = "auto",
    checkpointing: bool | str = "adapters",
    num_classes: int = 400,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    flops: bool = False,
    method_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure one tuning mode in THIS process (module docstring: what is measured), with its default settings or
    `method_settings` (a checkpoint's record); `flops`: the GFLOPs of one clip's forward too, after the peak."""
    import itertools

    import torch

    from stadapt.training.distributed import plan_batches
    from stadapt.training.step import TrainStep

    dev, prec, built, storage = _build_for_bench(backbone, mode, frames=frames, device=device, precision=precision,
                                                 backbone_storage=backbone_storage, checkpointing=checkpointing,
                                                 num_classes=num_classes, seed=seed, options=options,
                                                 method_settings=method_settings)
    model = built.model
    model.to(dev).train()
    batch = _random_batch(micro_batch, frames, built.variant.image_size, num_classes, seed)
    optimizer, scaler, lr = _optimizer(model, dev, prec)
    step = TrainStep(model, optimizer, scaler, precision=prec, device=dev,
                     plan=plan_batches(micro_batch * accumulation, micro_batch, 1))
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    gc.collect()
    sync()
    baseline, method = _memory_baseline(dev)
    times, loss = [], float("nan")
    for i in range(warmup + steps):
        sync()
        tick = time.perf_counter()
        loss = step(itertools.repeat(batch), lr).loss  # the loop's step, accumulation included
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    peak = torch.cuda.max_memory_allocated(dev) if cuda else _peak_rss()
    counts = model.parameter_counts()
    result = {
        "mode": mode,
        "trainable_parameters": counts["trainable"],
        "total_parameters": counts["total"],
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "peak_increase_bytes": None if baseline is None else peak - baseline,
        "step_seconds": statistics.median(times) if times else None,
        "step_seconds_all": times,
        "final_loss": loss,
        "precision": prec.name,
        "backbone_storage": storage,
        "backbone_dtype": str(model.backbone_dtype).removeprefix("torch."),
        "checkpointing": checkpointing,
        "memory_method": method,
    }
    if flops:
        result["gflops_per_clip"] = _gflops_per_clip(model, batch["video"][:1].to(dev), dev, prec)
    del model, optimizer, step, batch, built
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def _random_batch(micro_batch: int, frames: int, size: int, num_classes: int, seed: int) -> dict[str, Any]:
    """One random micro-batch as the loader hands it to the step: normalised clips and labels."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {"video": torch.randn(micro_batch, 3, frames, size, size, generator=generator),
            "label": torch.randint(0, num_classes, (micro_batch,), generator=generator), "replaced": [], "skipped": []}


def _gflops_per_clip(model: Any, clip: Any, dev: Any, prec: Any) -> float:
    """GFLOPs of one clip's forward pass in eval mode, under the precision's autocast (stadapt.tools.bench.flops)."""
    from stadapt.tools.bench.flops import count_flops

    model.eval()
    with prec.autocast(dev):
        return count_flops(model, clip) / 1e9


def _build_for_bench(backbone: str, mode: str, *, frames: int, device: str, precision: str, backbone_storage: str,
                     checkpointing: bool | str, num_classes: int, seed: int, options: dict[str, Any] | None,
                     method_settings: dict[str, Any] | None = None) -> tuple[Any, Any, Any, str]:
    """The model of one mode with the loop's memory options; `half` storage applies to a frozen backbone only
    (the loop refuses it for a backbone that trains): such a mode keeps fp32, and the report says so."""
    import torch

    from stadapt.model.classifier import ModelConfig, build_model
    from stadapt.model.precision import half_storage_fits
    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.precision import apply_memory_options, resolve_precision
    from stadapt.tuners import load_tuner

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    torch.manual_seed(seed)
    adapter = load_tuner(mode).read_settings(method_settings)  # None: the method's defaults
    built = build_model(ModelConfig(backbone, num_classes, frames, adapter, tuning=mode,
                                    backbone_options=dict(options or {})))
    if backbone_storage == "half" and not half_storage_fits(built.model):
        backbone_storage = "fp32 (half needs a frozen backbone)"
        storage = "fp32"
    else:
        storage = backbone_storage
    apply_memory_options(built.model, storage=storage, checkpointing=checkpointing, precision=prec, device=dev)
    return dev, prec, built, backbone_storage


def _optimizer(model: Any, dev: Any, prec: Any) -> tuple[Any, Any, float]:
    """AdamW with the recipe's defaults (groups, lr), as the loop builds it, and the loop's grad scaler."""
    import torch

    from stadapt.recipe.schema import OptimSection
    from stadapt.training.optim import build_optimizer

    optim = OptimSection()
    return build_optimizer(model, optim, dev), torch.amp.GradScaler(dev.type, enabled=prec.scale_loss), optim.lr


def _memory_baseline(dev: Any) -> tuple[int | None, str]:
    """The memory the measured steps grow from (the built, moved model), and how it is measured."""
    import torch

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return torch.cuda.memory_allocated(dev), "torch.cuda.max_memory_allocated, reset after the model was moved"
    baseline = _proc_kib("VmRSS")
    if baseline is None:
        return None, "resource.getrusage peak RSS of the whole process (no /proc: no baseline)"
    if _reset_peak_rss():
        return baseline, "subprocess VmHWM after /proc/self/clear_refs reset, minus VmRSS after the model was moved"
    return baseline, "subprocess VmHWM since the process started (reset refused), minus VmRSS after the model was moved"


def _measure_in_subprocess(options: dict[str, Any]) -> dict[str, Any]:
    """`measure_mode(**options)` in a fresh Python process (its own peak RSS); its result is the JSON on
    its last line of output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the same imports as this process
    # glibc keeps freed large blocks (its mmap threshold grows as they are freed), so RSS would count
    # memory the allocator holds but no tensor uses; a fixed threshold returns it, making RSS track
    # live memory as torch.cuda.max_memory_allocated does on a GPU
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    done = subprocess.run(
        [sys.executable, "-m", "stadapt.tools.bench.train_memory", json.dumps(options)],
        capture_output=True, text=True, env=env,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"measuring {options['mode']} failed (exit status {done.returncode}):\n{tail}")
    return json.loads(lines[-1])


def bench_train_memory(
    backbone: str = "clip:ViT-B-16",
    *,
    frames: int = 8,
    micro_batch: int = 4,
    accumulation: int = 1,
    steps: int = 3,
    warmup: int = 1,
    modes: Sequence[str] = DEFAULT_MODES,
    device: str = "auto",
    precision: str = "auto",
    backbone_storage: str = "auto",
    checkpointing: bool | str = "adapters",
    num_classes: int = 400,
    options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    flops: bool = False,
) -> dict[str, Any]:
    """Peak training memory and median step time of each tuning mode on `device` (module docstring:
    how); with st_adapter and full_finetune both measured, their ratios under `ratio`. `flops`: each mode's
    GFLOPs per clip too (`bench-train --methods`)."""
    import torch

    from stadapt.backbones.registry import parse_backbone
    from stadapt.runtime.device import resolve_device
    from stadapt.runtime.precision import resolve_precision
    modes = _checked_modes(modes, frames=frames, micro_batch=micro_batch, accumulation=accumulation, steps=steps)
    plugin, variant = parse_backbone(backbone, dict(options or {}))  # an unknown backbone fails here, in one line
    backbone = f"{plugin.name}:{variant.name}"
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise StadaptError(f"bench-train measures memory on cpu or cuda, not {dev.type}", "pass --device cpu or cuda")
    prec = resolve_precision(precision, dev)
    settings = dict(backbone=backbone, frames=frames, micro_batch=micro_batch, accumulation=accumulation, steps=steps,
                    warmup=warmup, device=str(dev), precision=precision, backbone_storage=backbone_storage,
                    checkpointing=checkpointing, num_classes=num_classes, options=dict(options or {}),
                    **({"flops": True} if flops else {}))
    results = {}
    for mode in modes:
        if progress is not None:
            progress(f"measuring {mode} ({warmup} warm-up + {steps} steps on {dev})...")
        if dev.type == "cpu":
            results[mode] = _measure_in_subprocess({**settings, "mode": mode})
        else:
            results[mode] = measure_mode(mode=mode, **settings)  # type: ignore[arg-type]
    report: dict[str, Any] = {
        "backbone": backbone,
        "frames": frames,
        "image_size": variant.image_size,
        "micro_batch": micro_batch,
        "accumulation": accumulation,
        "options": dict(options or {}),
        "steps": steps,
        "warmup": warmup,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "precision": prec.name,
        "backbone_storage": backbone_storage,
        "checkpointing": checkpointing,
        "torch": torch.__version__,
        "modes": results,
    }
    top, base = DEFAULT_MODES  # the paper's comparison: the method over full fine-tuning
    if top in results and base in results:
        a, f = results[top], results[base]

        def ratio(key: str) -> float | None:
            return a[key] / f[key] if a[key] is not None and f[key] else None

        report["ratio"] = {"of": f"{top} / {base}", "peak_increase": ratio("peak_increase_bytes"),
                           "peak": ratio("peak_bytes"), "step_seconds": ratio("step_seconds")}
    return report


def _checked_modes(modes: Sequence[str], **sizes: int) -> list[str]:
    """The modes without repeats; an unknown mode or a size below 1 is refused in one line."""
    from stadapt.tuners import installed_tuners

    modes = list(dict.fromkeys(modes))
    unknown = [m for m in modes if m not in installed_tuners()]
    if unknown or not modes:
        raise StadaptError(f"unknown tuning mode(s) {', '.join(unknown) or '(none given)'}",
                           f"choose from {', '.join(installed_tuners())}")
    for name, value in sizes.items():
        if value < 1:
            raise StadaptError(f"{name} must be at least 1, got {value}")
    return modes


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def format_report(report: dict[str, Any]) -> str:
    """The report as a small table."""
    accumulated = f" x {report['accumulation']} accumulated" if report.get("accumulation", 1) > 1 else ""
    recomputed = {True: ", blocks recomputed", "mlp": ", adapters and MLP branches recomputed",
                  "adapters": ", adapters recomputed"}.get(report.get("checkpointing"), "")
    lines = [
        f"{report['backbone']}, {report['frames']} frames x {report['image_size']} px, micro-batch "
        f"{report['micro_batch']}{accumulated}, {report['device']} ({report['device_name']}, {report['precision']}), "
        f"median of {report['steps']} steps after {report['warmup']} warm-up{recomputed}",
        f"{'mode':<17} {'trainable':>12} {'peak increase':>14} {'peak':>11} {'step (median)':>14}",
    ]
    for mode, r in report["modes"].items():
        step = "-" if r["step_seconds"] is None else f"{r['step_seconds']:.3f} s"
        lines.append(f"{mode:<17} {r['trainable_parameters']:>12,} {gib(r['peak_increase_bytes']):>14} "
                     f"{gib(r['peak_bytes']):>11} {step:>14}")
    ratio = report.get("ratio")
    if ratio:
        parts = [f"{label} {ratio[key]:.2f}x" for label, key in
                 (("peak increase", "peak_increase"), ("peak", "peak"), ("step time", "step_seconds"))
                 if ratio[key] is not None]
        lines.append(f"{ratio['of']}: {', '.join(parts)}")
    kept = {mode: r["backbone_storage"] for mode, r in report["modes"].items()
            if r.get("backbone_storage") not in (None, report["backbone_storage"])}
    if kept:
        lines.append("backbone storage: " + "; ".join(f"{mode} {why}" for mode, why in kept.items()))
    if report.get("options"):
        lines.append("backbone options: " + ", ".join(f"{k}={v}" for k, v in report["options"].items()))
    first = next(iter(report["modes"].values()))
    lines.append(f"memory: {first['memory_method']}")
    return "\n".join(lines)


def _worker() -> None:
    """`python -m stadapt.tools.bench.train_memory '<options as JSON>'`: one measurement, JSON on the last line."""
    options = json.loads(sys.argv[1])
    print(json.dumps(measure_mode(**options)), flush=True)


if __name__ == "__main__":
    _worker()
