"""`stadapt bench-pipeline`: is a run data-bound? The data path and the model measured side by side, in
one run, from real files and a recipe's real transform.

* Worker ms per clip, timed inside a DataLoader worker process (one torch thread, as in training), batch
  by batch as a worker makes them, the same clips interleaved (machine noise hits all alike): decode
  alone (the dataset's own reader and frame draw, for each clip of the batch); the full worker pipeline
  (`collate_clips([dataset[epoch, i] for i in batch])`: decode + the transform's worker half + the
  batch, uint8, in shared memory as the worker hands it over); and the float transform in the worker as
  it was before issue 16, for comparison. Wall clock and CPU time. A worker collates whole batches, so
  timing one clip per batch would charge each clip a batch's allocation.
* Clips/s the DataLoader supplies with N workers (uint8 batches, pinned on CUDA).
* Clips/s the model consumes from a batch already in memory: `to_model_input` on the device, forward,
  backward and AdamW step, as the loop runs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

WORKER_PATHS = ("decode", "worker_uint8", "worker_float_before")


def _spread(values: Sequence[float]) -> dict[str, float]:
    """Median and the 10th-90th percentiles (what one reports beside a median)."""
    p10, p50, p90 = np.percentile(np.asarray(values, dtype=np.float64), [10, 50, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90)}


class WorkerPaths(torch.utils.data.Dataset):
    """Item n (n >= 1) = batch n - 1 (`batch` consecutive clips) timed on each worker path, in whatever process
    loads it: `time_worker_paths` loads it in a DataLoader worker, so the paths run as training runs them
    (one torch thread, the worker's own process, the dataset's own reader, its collate into shared
    memory). Item 0 is the warm-up (imports, codec set-up)."""

    def __init__(self, dataset: Any, clips: int, batch: int) -> None:
        from stadapt.data.dataset import VideoClipDataset

        self.dataset, self.batch = dataset, batch
        self.batches = max(1, -(-clips // batch))
        self.before = VideoClipDataset(dataset.entries, dataset.sampler, dataset.transform, train=True,
                                       seed=dataset.seed, decoder=dataset.decoder, decode_device=dataset.decode_device)

    def __len__(self) -> int:
        return self.batches + 1

    def __getitem__(self, n: int) -> dict[str, Any]:
        from stadapt.data.dataset import collate_clips
        from stadapt.data.shared_slots import release_batch

        ds = self.dataset
        keys = [divmod(max(n - 1, 0) * self.batch + b, len(ds)) for b in range(self.batch)]

        def decode() -> None:  # what the items decode: the same reader, the same (seed, epoch, index) draws
            for epoch, index in keys:
                rng = np.random.default_rng([ds.seed, epoch, index])
                with ds.open_entry(ds.entries[index]) as reader:
                    reader.read(ds.sampler.train(reader.num_frames, rng))

        paths: dict[str, Callable[[], Any]] = {
            "decode": decode,
            # a worker's batch (items + collate), its shared slot released as the main process does after copying
            "worker_uint8": lambda: release_batch(collate_clips([ds[key] for key in keys])),
            "worker_float_before": lambda: collate_clips([self.before[key] for key in keys]),
        }
        # decode and the uint8 batch alternate who goes first and are never separated by the float path
        # (several times their cost: it would slow whichever path follows it)
        pair = WORKER_PATHS[:2] if n % 2 else WORKER_PATHS[1::-1]
        out: dict[str, Any] = {"torch_threads": torch.get_num_threads(),
                               "in_worker": torch.utils.data.get_worker_info() is not None}
        for name in (*pair, WORKER_PATHS[2]):
            wall, cpu = time.perf_counter(), time.process_time()
            paths[name]()  # the batch is freed inside the timing, as a worker drops it once handed over
            out[name] = ((time.perf_counter() - wall) / self.batch, (time.process_time() - cpu) / self.batch)
        return out


def time_worker_paths(dataset: Any, clips: int, *, batch: int = 1, progress: bool) -> dict[str, Any]:
    """Per-clip seconds of decode alone, the uint8 worker pipeline and the old float one, interleaved batch
    by batch in one DataLoader worker process, on the wall clock and in CPU time (all threads of the
    worker: on a busy machine the steadier of the two, since waiting for a core is not the worker's work)."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    timed = WorkerPaths(dataset, clips, batch)
    loader = DataLoader(timed, batch_size=None, num_workers=1)
    rows = list(tqdm(loader, total=len(timed), desc="worker paths", unit="batch", disable=not progress))[1:]
    report: dict[str, Any] = {"process": "DataLoader worker", "in_worker": all(r["in_worker"] for r in rows),
                              "torch_threads": sorted({r["torch_threads"] for r in rows}), "batch": batch,
                              "batches": len(rows)}
    for clock, column in (("", 0), ("_cpu", 1)):
        seconds = {name: np.asarray([float(r[name][column]) for r in rows]) for name in WORKER_PATHS}
        report["ms_per_clip" + clock] = {name: _spread(list(1000 * s)) for name, s in seconds.items()}
        report["ratio_to_decode" + clock] = {name: _spread(list(seconds[name] / seconds["decode"]))
                                             for name in WORKER_PATHS[1:]}
    return report


def time_loader(dataset: Any, *, workers: int, batch: int, batches: int, seed: int,
                device: torch.device) -> tuple[float, dict[str, Any]]:
    """Clips/s the training DataLoader supplies after its first batch; returns it and one batch."""
    from torch.utils.data import BatchSampler, DataLoader

    from stadapt.data.dataset import collate_clips
    from stadapt.data.shared_slots import release_batch
    from stadapt.training.stream import ClipStream

    loader = DataLoader(dataset, batch_sampler=BatchSampler(ClipStream(len(dataset), seed=seed), batch, False),
                        num_workers=workers, collate_fn=collate_clips, pin_memory=device.type == "cuda")
    it = iter(loader)
    first = next(it)  # workers starting up: not counted
    tick = time.perf_counter()
    count = 0
    for _ in range(batches):
        loaded = next(it)
        count += len(loaded["label"])
        release_batch(loaded)  # as to_model_input does: the worker reuses the batch's shared slot
    rate = count / (time.perf_counter() - tick)
    del it
    return rate, first


def time_model(recipe: Any, dataset: Any, batch: dict[str, Any], *, steps: int, device: torch.device,
               num_classes: int) -> dict[str, Any]:
    """Clips/s of training steps on one batch held in memory (one warm-up step not counted)."""
    import torch.nn.functional as F

    from stadapt.data.on_device import to_model_input
    from stadapt.model.classifier import build_model
    from stadapt.runtime.build import model_config
    from stadapt.runtime.precision import apply_memory_options, resolve_precision
    from stadapt.training.optim import build_optimizer

    precision = resolve_precision(recipe.train.precision, device)
    built = build_model(model_config(recipe, num_classes), weights=None, seed=recipe.train.seed)  # random: no I/O
    apply_memory_options(built.model, storage=recipe.train.backbone_storage, checkpointing=recipe.train.checkpointing,
                         precision=precision, device=device)
    model = built.model.to(device).train()
    optimizer = build_optimizer(model, recipe.optim, device)
    labels = batch["label"].to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        video = to_model_input(batch, dataset.transform, device)
        with precision.autocast(device):
            logits = model(video)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    sync()
    tick = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - tick
    return {"clips_per_s": steps * len(labels) / seconds, "precision": precision.name,
            "backbone": recipe.backbone.name}


def bench_pipeline(recipe: Any, entries: Sequence[Any], *, clips: int, workers: int, batch: int, batches: int,
                   model_steps: int, device: torch.device, num_classes: int, progress: bool = True) -> dict[str, Any]:
    """The whole report: worker paths, loader throughput, model throughput, and whether data bounds the run."""
    import platform

    from stadapt.backbones.registry import parse_backbone
    from stadapt.runtime.build import train_dataset

    _, variant = parse_backbone(recipe.backbone.name, dict(recipe.backbone.options))
    dataset = train_dataset(recipe, entries, variant)
    seed = recipe.train.seed
    report: dict[str, Any] = {
        "recipe": recipe.name, "videos": len(entries), "clips": clips, "workers": workers, "batch": batch,
        "device": str(device), "transform": _describe(recipe, variant),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
    }
    report["worker"] = time_worker_paths(dataset, clips, batch=batch, progress=progress)
    loader_rate, first = time_loader(dataset, workers=workers, batch=batch, batches=batches, seed=seed, device=device)
    report["loader_clips_per_s"] = loader_rate
    report["model"] = None
    if model_steps > 0:
        report["model"] = time_model(recipe, dataset, first, steps=model_steps, device=device, num_classes=num_classes)
        report["data_bound"] = loader_rate < report["model"]["clips_per_s"]
    return report


def _describe(recipe: Any, variant: Any) -> str:
    a, d = recipe.data.augment, recipe.data
    crop = f"jitter x{tuple(a.scale)}" if a.crop == "jitter" else f"resized area {tuple(a.area)}"
    extra = (", flip" if a.flip else "") + (f", {a.randaugment}" if a.randaugment else "")
    return (f"{d.frames} frames, {d.sampling}" + (f" {d.stride}" if d.sampling == "stride" else "")
            + f", {variant.image_size} px {crop}{extra}, {variant.interpolation}")


def format_report(report: dict[str, Any]) -> str:
    w = report["worker"]
    ms, ratio, ratio_cpu = w["ms_per_clip"], w["ratio_to_decode"], w["ratio_to_decode_cpu"]
    labels = {"decode": "decode alone", "worker_uint8": "worker pipeline (uint8, now)",
              "worker_float_before": "worker pipeline (float, before)"}
    rows = [(f"one worker, per clip (batches of {w['batch']})", "median ms", "p10-p90 ms", "x decode (p10-p90)",
             "CPU time: x decode")]
    for name in WORKER_PATHS:
        r, c = ratio.get(name), ratio_cpu.get(name)
        rows.append((labels[name], f"{ms[name]['median']:.1f}", f"{ms[name]['p10']:.1f}-{ms[name]['p90']:.1f}",
                     f"{r['median']:.2f}x ({r['p10']:.2f}-{r['p90']:.2f})" if r else "1.00x",
                     f"{c['median']:.2f}x ({c['p10']:.2f}-{c['p90']:.2f})" if c else "1.00x"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(wd) if i == 0 else c.rjust(wd)
                       for i, (c, wd) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.append(f"(timed in a {w['process']} process, torch threads {', '.join(map(str, w['torch_threads']))})")
    lines.append(f"loader: {report['loader_clips_per_s']:.1f} clips/s with {report['workers']} worker(s), "
                 f"batch {report['batch']}")
    model = report.get("model")
    if model:
        verdict = "DATA-BOUND" if report["data_bound"] else "not data-bound"
        lines.append(f"model: {model['clips_per_s']:.1f} clips/s ({model['backbone']}, {model['precision']}, "
                     f"{report['device']}, in-memory batch) -> {verdict}")
    lines.append(f"{report['recipe']}: {report['transform']}; {report['clips']} clips from {report['videos']} videos")
    return "\n".join(lines)
