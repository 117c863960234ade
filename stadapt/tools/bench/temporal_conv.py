"""The adapter's temporal convolution, both forms side by side: `python -m stadapt.tools.bench.temporal_conv`.

PyTorch's depthwise Conv3d is known to be slow on CUDA, above all backward; the adapter can run the same
(kT, 1, 1) convolution as a grouped Conv1d or shifted multiply-adds instead (stadapt.model.adapters.module).
This times what differs
between the two, `STAdapter.temporal` (fc1's output -> temporal conv, with the permutes Conv3d needs),
forward + backward, at ViT-B/16 shapes (8 frames x 14 x 14 patches, bottleneck 384) in each form, runs
alternating, and reports the medians, their spread and which
form is faster, so that `TEMPORAL_CONV` in stadapt/model/adapters/module.py can keep the faster one per device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from stadapt.model.adapters.module import TEMPORAL_CONV, TEMPORAL_FORMS


def bench_temporal_conv(*, device: str = "cpu", dtype: str = "float32", clips: int = 4, frames: int = 8,
                        grid: int = 14, width: int = 768, bottleneck: int = 384, kernel: int = 3,
                        runs: int = 5, warmup: int = 2) -> dict[str, Any]:
    """Median forward+backward ms of one adapter's temporal convolution per form, on `clips` clips of
    `frames` x grid x grid tokens, in `dtype` (autocast off: the tensors are of that dtype)."""
    import torch

    from stadapt.backbones.layout import TokenLayout
    from stadapt.model.adapters import STAdapter

    dev = torch.device(device)
    kind = getattr(torch, dtype)
    torch.manual_seed(0)
    adapter = STAdapter(TokenLayout(width=width, grid=(grid, grid), prefix_tokens=1), frames, bottleneck,
                        (kernel, 1, 1)).to(dev, kind)
    torch.nn.init.normal_(adapter.conv.weight, std=0.1)
    z = torch.randn(clips * frames, grid * grid, bottleneck, device=dev, dtype=kind, requires_grad=True)
    grad = torch.randn_like(z)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step(form: str) -> float:
        adapter.temporal_conv = form
        sync()
        tick = time.perf_counter()
        adapter.temporal(z).backward(grad)
        sync()
        return time.perf_counter() - tick

    times: dict[str, list[float]] = {form: [] for form in TEMPORAL_FORMS}
    for form in TEMPORAL_FORMS:
        for _ in range(warmup):
            step(form)
    for run in range(runs):
        for form in TEMPORAL_FORMS if run % 2 == 0 else TEMPORAL_FORMS[::-1]:
            times[form].append(step(form))
    result: dict[str, Any] = {"device": str(dev), "dtype": dtype, "clips": clips, "frames": frames, "grid": grid,
                              "width": width, "bottleneck": bottleneck, "kernel": kernel, "runs": runs,
                              "default": TEMPORAL_CONV.get(dev.type, "conv3d"), "forms": {}}
    for form, values in times.items():
        middle = statistics.median(values)
        result["forms"][form] = {"ms": 1000 * middle, "spread": (max(values) - min(values)) / middle}
    forms = result["forms"]
    result["faster"] = min(forms, key=lambda f: forms[f]["ms"])
    return result


def format_result(r: dict[str, Any]) -> str:
    """One line per form, then the verdict against the current default."""
    lines = [(f"adapter temporal conv ({r['kernel']},1,1), fwd+bwd, {r['clips']} clips x {r['frames']} frames x "
              f"{r['grid']}x{r['grid']} tokens, bottleneck {r['bottleneck']}, {r['device']} "
              f"{r['dtype']}, medians of {r['runs']} runs")]
    base = r["forms"]["conv3d"]["ms"]
    for form, f in r["forms"].items():
        lines.append(f"  {form:<7} {f['ms']:9.2f} ms  (spread {100 * f['spread']:.1f}%)  conv3d / this = "
                     f"{base / f['ms']:.2f}x")
    keep = "keep" if r["faster"] == r["default"] else "CHANGE"
    lines.append(f"  fastest: {r['faster']}; default here: {r['default']} ({keep} TEMPORAL_CONV in "
                 f"stadapt/model/adapters/module.py)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stadapt.tools.bench.temporal_conv",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 on the CPU, bfloat16 on CUDA unless given")
    parser.add_argument("--clips", type=int, default=None, help="4 on the CPU, 32 on CUDA unless given")
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--runs", type=int, default=None, help="5 on the CPU, 20 on CUDA unless given")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    result = bench_temporal_conv(device=args.device, dtype=args.dtype or ("bfloat16" if cuda else "float32"),
                                 clips=args.clips or (32 if cuda else 4), kernel=args.kernel,
                                 runs=args.runs or (20 if cuda else 5), warmup=5 if cuda else 2)
    print(format_result(result))
    if args.json:
        from stadapt.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
