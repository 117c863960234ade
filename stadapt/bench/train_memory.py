"""`stadapt bench-train`: peak training memory and step time per tuning mode (ST-Adapter vs fine-tuning).

Each mode builds the model (random backbone weights: no download), moves it to the device, and runs
`warmup + steps` training steps on one random micro-batch: zero_grad, forward (under the precision's
autocast), cross-entropy, backward, AdamW step, i.e. what one micro-batch of `stadapt train` does,
with the same tuning, backbone storage and checkpointing options. Step times are wall-clock times of
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
    steps: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    precision: str = "auto",
    backbone_storage: str = "auto",
    checkpointing: bool | str = "adapters",
    num_classes: int = 400,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure one tuning mode in THIS process (see the module docstring for what is measured)."""
    import torch
    import torch.nn.functional as F

    from stadapt.adapters import AdapterConfig
    from stadapt.engine.optim import build_optimizer
    from stadapt.engine.setup import apply_memory_options, resolve_device, resolve_precision
    from stadapt.model import ModelConfig, build_model
    from stadapt.recipe.schema import OptimSection

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    torch.manual_seed(seed)
    adapter = AdapterConfig() if mode == "st_adapter" else None
    built = build_model(ModelConfig(backbone, num_classes, frames, adapter, tuning=mode))
    model = built.model
    if backbone_storage == "half" and model.backbone_trains:
        backbone_storage = "fp32"  # a backbone that trains keeps float32 weights: "half" is for frozen ones
    apply_memory_options(model, storage=backbone_storage, checkpointing=checkpointing, precision=prec, device=dev)
    model.to(dev).train()
    size = built.variant.image_size
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(micro_batch, 3, frames, size, size, generator=generator).to(dev)
    labels = torch.randint(0, num_classes, (micro_batch,), generator=generator).to(dev)
    optimizer = build_optimizer(model, OptimSection(), dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=prec.scale_loss)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    gc.collect()
    sync()
    baseline: int | None
    if cuda:
        baseline = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        method = "torch.cuda.max_memory_allocated, reset after the model was moved"
    else:
        baseline = _proc_kib("VmRSS")
        if baseline is None:
            method = "resource.getrusage peak RSS of the whole process (no /proc: no baseline)"
        elif _reset_peak_rss():
            method = "subprocess VmHWM after /proc/self/clear_refs reset, minus VmRSS after the model was moved"
        else:
            method = "subprocess VmHWM since the process started (reset refused), minus VmRSS after the model was moved"
    times = []
    logits = loss = torch.zeros(())
    for step in range(warmup + steps):
        sync()
        tick = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with prec.autocast(dev):
            logits = model(video)
        loss = F.cross_entropy(logits.float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - tick)
    if cuda:
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        peak = _peak_rss()
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
        "final_loss": float(loss),
        "precision": prec.name,
        "backbone_dtype": str(model.backbone_dtype).removeprefix("torch."),
        "checkpointing": checkpointing,
        "memory_method": method,
    }
    del model, optimizer, video, labels, logits, loss, built
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


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
        [sys.executable, "-m", "stadapt.bench.train_memory", json.dumps(options)],
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
    steps: int = 3,
    warmup: int = 1,
    modes: Sequence[str] = DEFAULT_MODES,
    device: str = "auto",
    precision: str = "auto",
    backbone_storage: str = "auto",
    checkpointing: bool | str = "adapters",
    num_classes: int = 400,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Peak training memory and median step time of each tuning mode on `device` (module docstring:
    how); with st_adapter and full_finetune both measured, their ratios under `ratio`."""
    import torch

    from stadapt.backbones.registry import parse_backbone
    from stadapt.engine.setup import resolve_device, resolve_precision
    from stadapt.model import TUNING_MODES

    modes = list(dict.fromkeys(modes))
    unknown = [m for m in modes if m not in TUNING_MODES]
    if unknown or not modes:
        raise StadaptError(f"unknown tuning mode(s) {', '.join(unknown) or '(none given)'}",
                           f"choose from {', '.join(TUNING_MODES)}")
    for name, value in (("frames", frames), ("micro_batch", micro_batch), ("steps", steps)):
        if value < 1:
            raise StadaptError(f"{name} must be at least 1, got {value}")
    plugin, variant = parse_backbone(backbone)  # unknown backbones fail here, with the plugin's message
    backbone = f"{plugin.name}:{variant.name}"
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise StadaptError(f"bench-train measures memory on cpu or cuda, not {dev.type}", "pass --device cpu or cuda")
    prec = resolve_precision(precision, dev)
    options: dict[str, Any]
    options = dict(backbone=backbone, frames=frames, micro_batch=micro_batch, steps=steps, warmup=warmup,
                   device=str(dev), precision=precision, backbone_storage=backbone_storage,
                   checkpointing=checkpointing, num_classes=num_classes)
    results = {}
    for mode in modes:
        if progress is not None:
            progress(f"measuring {mode} ({warmup} warm-up + {steps} steps on {dev})...")
        if dev.type == "cpu":
            results[mode] = _measure_in_subprocess({**options, "mode": mode})
        else:
            results[mode] = measure_mode(mode=mode, **options)
    report: dict[str, Any] = {
        "backbone": backbone,
        "frames": frames,
        "image_size": variant.image_size,
        "micro_batch": micro_batch,
        "steps": steps,
        "warmup": warmup,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "precision": prec.name,
        "backbone_storage": backbone_storage,
        "checkpointing": checkpointing,
        "torch": torch.__version__,
        "modes": results,
    }
    if "st_adapter" in results and "full_finetune" in results:
        a, f = results["st_adapter"], results["full_finetune"]

        def ratio(key: str) -> float | None:
            return a[key] / f[key] if a[key] is not None and f[key] else None

        report["ratio"] = {"of": "st_adapter / full_finetune", "peak_increase": ratio("peak_increase_bytes"),
                           "peak": ratio("peak_bytes"), "step_seconds": ratio("step_seconds")}
    return report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def format_report(report: dict[str, Any]) -> str:
    """The report as a small table."""
    lines = [
        f"{report['backbone']}, {report['frames']} frames x {report['image_size']} px, micro-batch "
        f"{report['micro_batch']}, {report['device']} ({report['device_name']}, {report['precision']}), "
        f"median of {report['steps']} steps after {report['warmup']} warm-up"
        + {True: ", blocks recomputed", "mlp": ", adapters and MLP branches recomputed",
           "adapters": ", adapters recomputed"}.get(report.get("checkpointing"), ""),
        f"{'mode':<17} {'trainable':>12} {'peak increase':>14} {'peak':>11} {'step (median)':>14}",
    ]
    for mode, r in report["modes"].items():
        step = "-" if r["step_seconds"] is None else f"{r['step_seconds']:.3f} s"
        lines.append(f"{mode:<17} {r['trainable_parameters']:>12,} {_gib(r['peak_increase_bytes']):>14} "
                     f"{_gib(r['peak_bytes']):>11} {step:>14}")
    ratio = report.get("ratio")
    if ratio:
        parts = [f"{label} {ratio[key]:.2f}x" for label, key in
                 (("peak increase", "peak_increase"), ("peak", "peak"), ("step time", "step_seconds"))
                 if ratio[key] is not None]
        lines.append(f"st_adapter / full_finetune: {', '.join(parts)}")
    first = next(iter(report["modes"].values()))
    lines.append(f"memory: {first['memory_method']}")
    return "\n".join(lines)


def _worker() -> None:
    """`python -m stadapt.bench.train_memory '<options as JSON>'`: one measurement, JSON on the last line."""
    options = json.loads(sys.argv[1])
    print(json.dumps(measure_mode(**options)), flush=True)


if __name__ == "__main__":
    _worker()
