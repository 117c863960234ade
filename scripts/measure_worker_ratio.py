"""Independent check of `stadapt bench-pipeline`'s "x decode" ratio (issue 22.5), written apart from the bench.

What a DataLoader worker does per training clip, against decoding the same sampled frames:

* item: `collate_clips([dataset[epoch, i] for i in batch])`, what a worker makes of each batch of
  `--batch` clips (1: one clip a batch, which charges each clip a whole batch's allocation), on the K400
  recipe's training dataset and transform as `stadapt train` builds them (`train_dataset`); with `--handover` also what
  the worker's queue then does to hand the batch to the main process (`share_memory_()`, a copy into
  shared memory unless the batch is there already); the batch's shared slot is then released, as the main
  process's `to_model_input` does once it has copied the batch out;
* decode: the dataset's own reader (`open_entry`: its decoder, at the size its transform needs) on the
  same file, reading the frames the same (seed, epoch, index) draw samples.

Both run in one real DataLoader worker process (`--where worker`, the default: torch gives it one thread,
as it does every training worker) or in this process after `torch.set_num_threads(1)` (`--where main`),
interleaved batch by batch, alternating which goes first, on K400-like clips from `write_k400_like` (what
`--synthetic` writes). Prints the median and p10-p90 of the per-batch ratio item / decode. `--clock cpu`
times with `time.process_time` (all threads of the process): steadier on a busy machine, where waiting
for a core is not the worker's work.

    .venv/bin/python scripts/measure_worker_ratio.py --data /tmp/k400like --clips 192 --batch 8 --clock cpu
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


class Timed(torch.utils.data.Dataset):
    """Item n = seconds of (item, decode) for clip n, both run where `__getitem__` runs."""

    def __init__(self, dataset, batches: int, batch: int, clock: Callable[[], float], handover: bool) -> None:
        self.dataset, self.batches, self.batch, self.clock, self.handover = dataset, batches, batch, clock, handover

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, n: int) -> tuple[float, float]:
        from stadapt.data.dataset import collate_clips
        from stadapt.data.shared_slots import release_batch

        ds = self.dataset
        keys = [divmod(n * self.batch + b, len(ds)) for b in range(self.batch)]

        def item() -> None:
            batch = collate_clips([ds[key] for key in keys])
            if self.handover:
                for value in batch.values():
                    if isinstance(value, torch.Tensor):
                        value.share_memory_()
            release_batch(batch)  # what the main process's to_model_input does once it has copied the batch

        def decode() -> None:
            for epoch, index in keys:
                rng = np.random.default_rng([ds.seed, epoch, index])
                with ds.open_entry(ds.entries[index]) as reader:
                    reader.read(ds.sampler.train(reader.num_frames, rng))

        seconds = {}
        for name, run in ((("item", item), ("decode", decode)) if n % 2 else (("decode", decode), ("item", item))):
            tick = self.clock()
            run()
            seconds[name] = self.clock() - tick
        return seconds["item"], seconds["decode"]


def main() -> None:
    from stadapt.backbones.registry import parse_backbone
    from stadapt.data.bench import write_k400_like
    from stadapt.data.prepared import open_prepared
    from stadapt.recipe import load_recipe
    from stadapt.runtime.build import train_dataset

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/k400like"), help="K400-like clips (written if absent)")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/k400_vitb.yaml"))
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8, help="clips per batch, as the loader's batch size")
    parser.add_argument("--where", choices=("worker", "main"), default="worker")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--handover", action="store_true", help="include the worker queue's share_memory_()")
    args = parser.parse_args()

    prepared = open_prepared(write_k400_like(args.data, args.videos, progress=False))
    recipe = load_recipe(args.recipe, [f"data.root={prepared.root}"], check_files=False)
    _, variant = parse_backbone(recipe.backbone.name, dict(recipe.backbone.options))
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    batches = max(1, -(-args.clips // args.batch))
    timed = Timed(train_dataset(recipe, prepared.entries("train"), variant), batches + 2, args.batch, clock,
                  args.handover)
    if args.where == "worker":
        results = list(torch.utils.data.DataLoader(timed, batch_size=None, num_workers=1))
    else:
        torch.set_num_threads(1)
        results = [timed[n] for n in range(len(timed))]
    results = results[2:]  # the first two: warm-up (imports, codec initialisation)
    item_s = np.array([float(i) for i, _ in results])
    decode_s = np.array([float(d) for _, d in results])
    p10, p50, p90 = np.percentile(item_s / decode_s, [10, 50, 90])
    print(f"{batches} batches of {args.batch} clips, {args.where} (torch threads 1), {args.clock} clock"
          f"{', with hand-over' if args.handover else ''}: decode {1000 * np.median(decode_s) / args.batch:.1f} ms, "
          f"item {1000 * np.median(item_s) / args.batch:.1f} ms per clip, "
          f"item / decode {p50:.3f}x (p10-p90 {p10:.2f}-{p90:.2f})")


if __name__ == "__main__":
    main()
