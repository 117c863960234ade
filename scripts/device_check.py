#!/usr/bin/env python3
"""`make device-check`: what stadapt achieves on this machine's CUDA GPU, in one summary table, in < 8 minutes.

Parts, each a real `stadapt` command in a subprocess with its own time box (a part that fails or runs out
of time gets a row saying so; the others still run), all within one overall budget:

1. `stadapt bench` CLIP ViT-B/16, 8 x 224, bf16: throughput, latency, GFLOPs, fraction of the bf16 peak,
   and the with/without adapters ratio; again with `--compile`;
2. `stadapt bench-train`: ST-Adapter vs full fine-tuning, peak memory and step time in bf16;
3. K400-like clips written on the spot (`bench-data --synthetic`: 320x240 H.264, 300 frames), then a
   50-step training run from them with as many DataLoader workers as cores: clips/s, GPU memory, and
   whether it is data-bound (its clips/s against what the model consumes from memory in bench-train);
4. `stadapt eval` of that run (bf16 where `eval --precision` exists), `stadapt export --onnx --verify`;
5. the adapter's temporal convolution in its three forms (`python -m stadapt.tools.bench.temporal_conv`).

Without a CUDA GPU it says so and exits 0. `--dry-run` runs every part tiny on the CPU (clip:tiny): a check
of this script, not a measurement. The table and every part's output land in --out (default: a new
temporary folder; $OUT when set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 450  # the whole check: 7.5 minutes, under the 8 the issue allows


@dataclass
class Settings:
    """What the parts run with: full size on CUDA, tiny for --dry-run on the CPU."""

    device: str
    backbone: str
    batch: int
    micro_batch: int
    steps: int
    videos: int
    workers: int
    runs: int | None = None
    recipe: str = "recipes/k400_vitb.yaml"
    extra: list[str] = field(default_factory=list)


def settings(dry_run: bool) -> Settings:
    cores = os.cpu_count() or 1
    if dry_run:
        return Settings("cpu", "clip:tiny", batch=2, micro_batch=2, steps=2, videos=2, workers=1, runs=1,
                        recipe="recipes/synthetic_tiny.yaml", extra=["backbone.weights=null"])
    return Settings("cuda", "clip:ViT-B-16", batch=32, micro_batch=32, steps=50, videos=64, workers=cores,
                    extra=["backbone.weights=null"])


class Check:
    """Runs the parts under one deadline and collects the table's rows."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.deadline = out, time.monotonic() + budget_s
        self.rows: list[tuple[str, str]] = []
        self.results: dict[str, Any] = {}

    def stadapt(self, name: str, args: list[str], limit_s: float, module: str = "stadapt") -> bool:
        """Run `python -m module args` within min(limit_s, what is left); its output goes to NAME.log."""
        left = self.deadline - time.monotonic()
        limit = min(limit_s, left)
        if limit < 5:
            self.rows.append((name, "skipped: the check's time budget is spent"))
            return False
        tick = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=limit, check=False)
            text, ok, why = proc.stdout + proc.stderr, proc.returncode == 0, f"exit {proc.returncode}"
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            ok, why = False, f"timed out after {limit:.0f} s"
        log = f"{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.log"
        self._save(log, text)
        seconds = time.monotonic() - tick
        self.results.setdefault("seconds", {})[name] = round(seconds, 1)
        if not ok:
            tail = [line for line in text.strip().splitlines() if line.strip()][-1:] or [""]
            self.rows.append((name, f"FAILED ({why}): {tail[0][:120]} (see {log})"))
        return ok

    def _save(self, name: str, text: str) -> None:
        from stadapt.fileio import atomic_write_text

        atomic_write_text(self.out / name, text)

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads((self.out / name).read_text())

    def add(self, name: str, text: str) -> None:
        self.rows.append((name, text))

    def table(self) -> str:
        width = max(len(name) for name, _ in self.rows) if self.rows else 10
        return "\n".join(f"{name:<{width}}  {text}" for name, text in self.rows)


def bench_rows(check: Check, s: Settings, compile: bool) -> None:
    """`stadapt bench` with and without adapters (and --compile): throughput, latency, GFLOPs, peak."""
    from stadapt.tools.bench.inference import peak_line

    name = "bench --compile" if compile else "bench"
    out = f"bench{'_compile' if compile else ''}.json"
    args = ["bench", "--backbone", s.backbone, "--device", s.device, "--precision", "bf16", "--batch", str(s.batch),
            "--json", str(check.out / out), "-q"] + (["--runs", str(s.runs)] if s.runs else [])
    if not check.stadapt(name, args + (["--compile"] if compile else []), 240 if compile else 120):
        return
    r = check.read_json(out)
    check.results[name] = r
    for key, label in (("without_adapters", "w/o adapters"), ("with_adapters", "w/ adapters")):
        m = r["models"][key]
        check.add(f"{name}: {label}", f"{m['throughput']:.0f} clips/s (b={r['batch']}), {m['latency_ms']:.1f} ms "
                                      f"(b=1), {m['gflops_per_clip']:.1f} GFLOPs/clip")
    ratio, spread = r["ratio"], r["spread"]["throughput"]["max"]
    check.add(f"{name}: ratio", f"throughput w/ / w/o adapters {ratio['throughput']:.3f}x (spread "
                                f"{'-' if spread is None else f'{100 * spread:.1f}%'}), "
                                f"latency {ratio['latency']:.3f}x")
    line = peak_line(r)
    if line:
        check.add(f"{name}: peak", line)


def train_memory_rows(check: Check, s: Settings) -> None:
    """`stadapt bench-train` ST-Adapter vs full fine-tuning in bf16, backbone stored in 16 bits."""
    args = ["bench-train", "--backbone", s.backbone, "--device", s.device, "--precision", "bf16",
            "--micro-batch", str(s.micro_batch), "--steps", "3", "--json", str(check.out / "bench_train.json"), "-q"]
    if not check.stadapt("bench-train", args, 150):
        return
    r = check.read_json("bench_train.json")
    check.results["bench-train"] = r
    for mode, m in r["modes"].items():
        peak = m.get("peak_increase_bytes") or m.get("peak_bytes") or 0
        step = m.get("step_seconds")
        step_text = "-" if step is None else f"{step:.3f} s"
        check.add(f"bench-train: {mode}", f"peak +{peak / 2**30:.2f} GiB, step {step_text}"
                                          f" ({s.micro_batch} clips, {m['precision']}, backbone {m['backbone_dtype']})")
    if r.get("ratio"):
        check.add("bench-train: ratio", f"ST-Adapter / full fine-tuning: memory {r['ratio']['peak_increase']:.2f}x, "
                                        f"step time {r['ratio']['step_seconds']:.2f}x")


def consumed_clips_per_s(check: Check) -> float | None:
    """What the model consumes from memory (bench-train's ST-Adapter step), for the data-bound verdict."""
    r = check.results.get("bench-train") or {}
    m = r.get("modes", {}).get("st_adapter") or {}
    return r["micro_batch"] / m["step_seconds"] if m.get("step_seconds") else None


def train_rows(check: Check, s: Settings, data: Path, run: Path) -> bool:
    """A short training run from real files with as many workers as cores: clips/s, memory, data-bound?"""
    args = ["train", s.recipe, *s.extra, f"backbone.name={s.backbone}", f"data.root={data}",
            "data.train_list=train.txt", "data.val_list=train.txt", f"data.num_workers={s.workers}",
            f"optim.steps={s.steps}", "optim.warmup_steps=1",
            f"optim.batch_size={s.batch * 4 if s.device == 'cuda' else s.batch}",
            f"optim.micro_batch={s.micro_batch}", "train.val_every=100000", "train.save_every=100000",
            "train.log_every=5", f"train.device={s.device}", f"output.dir={run}", "--overwrite", "-q"]
    name = f"train {s.steps} steps"
    if not check.stadapt(name, args, 200):
        return False
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train" and "clips_per_s" in r]
    if not train:
        check.add(name, "no training rows in metrics.jsonl (see its log)")
        return True
    late = train[len(train) // 2:] or train
    speed = sum(r["clips_per_s"] for r in late) / max(1, len(late))
    memory = max((r.get("peak_memory_mb") or 0 for r in train), default=0)
    consumed = consumed_clips_per_s(check)
    verdict = ("unknown (no bench-train figure)" if consumed is None else
               f"{'DATA-BOUND' if speed < 0.9 * consumed else 'not data-bound'} (the model consumes "
               f"{consumed:.0f} clips/s from memory)")
    check.results[name] = {"clips_per_s": speed, "peak_memory_mb": memory, "consumed_clips_per_s": consumed}
    check.add(name, f"{speed:.0f} clips/s (second half), {s.workers} workers, GPU memory {memory / 1024:.1f} GiB; "
                    f"{verdict}")
    return True


def eval_export_rows(check: Check, s: Settings, run: Path) -> None:
    """`stadapt eval` in bf16 where it takes --precision, then `stadapt export --onnx --verify`."""
    helptext = subprocess.run([sys.executable, "-m", "stadapt", "eval", "--help"], cwd=ROOT, capture_output=True,
                              text=True, check=False).stdout
    bf16 = ["--precision", "bf16"] if "--precision" in helptext else []
    args = ["eval", str(run), "--device", s.device, "--workers", str(s.workers), "--out", str(check.out / "eval.json"),
            "-q", *bf16]
    tick = time.monotonic()
    if check.stadapt("eval", args, 120):
        r = check.read_json("eval.json")
        videos = r.get("videos") or r.get("num_videos") or r.get("count")
        check.add("eval", f"{'bf16' if bf16 else 'fp32 (this stadapt has no eval --precision)'}, "
                          f"{videos if videos is not None else '?'} videos in {time.monotonic() - tick:.1f} s "
                          f"(top-1 {r.get('top1', r.get('accuracy', '?'))})")
    providers = "unknown"
    try:
        import onnxruntime  # type: ignore[import-untyped]

        providers = ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        providers = "onnxruntime not installed"
    args = ["export", "--onnx", "--checkpoint", str(run), "--out", str(check.out / "model.onnx"), "--verify",
            "--overwrite", "-q"]
    if check.stadapt("export", args, 150):  # logs to export.log
        text = (check.out / "export.log").read_text().strip().splitlines()  # the log of the part named "export"
        check.add("export --verify", f"{text[-1][:140] if text else 'ok'} (onnxruntime providers: {providers})")


def temporal_conv_rows(check: Check, s: Settings) -> None:
    """The adapter's temporal convolution: Conv3d vs Conv1d vs shifted multiply-adds, fwd+bwd, bf16 on CUDA."""
    args = ["--device", s.device, "--json", str(check.out / "temporal_conv.json")]
    args += ["--clips", "1", "--runs", "2"] if s.device == "cpu" else []
    if not check.stadapt("temporal conv", args, 90, module="stadapt.tools.bench.temporal_conv"):
        return
    r = check.read_json("temporal_conv.json")
    check.results["temporal conv"] = r
    forms = ", ".join(f"{name} {f['ms']:.2f} ms" for name, f in r["forms"].items())
    check.add("temporal conv", f"{forms} ({r['dtype']}, {r['clips']} clips); fastest {r['faster']}, default "
                               f"{r['default']}{'' if r['faster'] == r['default'] else ': change TEMPORAL_CONV'}")


def run_all(check: Check, s: Settings) -> None:
    parts: list[Callable[[], Any]] = [
        lambda: temporal_conv_rows(check, s),
        lambda: bench_rows(check, s, compile=False),
        lambda: train_memory_rows(check, s),
    ]
    for part in parts:
        part()
    data, run = check.out / "k400_like", check.out / "run"
    if check.stadapt("bench-data", ["bench-data", "--synthetic", str(data), "--videos", str(s.videos), "--clips",
                                    str(min(16, s.videos)), "--json", str(check.out / "bench_data.json"), "-q"], 120):
        r = check.read_json("bench_data.json")
        seek = r["decoders"]["seeking"]
        check.add("decode (one process)", f"{seek['median_ms_per_clip']:.1f} ms per K400-like clip, "
                                          f"{seek['clips_per_s']:.0f} clips/s")
        if train_rows(check, s, data, run):
            eval_export_rows(check, s, run)
    bench_rows(check, s, compile=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    parser.add_argument("--dry-run", action="store_true", help="every part tiny on the CPU (checks the script)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("device-check: no CUDA GPU on this machine (torch.cuda.is_available() is False), so there is "
              "nothing to measure; run it on a machine with one (or --dry-run to check the script on the CPU)")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="stadapt-device-check-"))
    out.mkdir(parents=True, exist_ok=True)
    s = settings(args.dry_run)
    check = Check(out, args.budget)
    name = torch.cuda.get_device_name(0) if s.device == "cuda" else "CPU (dry run: not a measurement)"
    check.add("device", f"{name}, torch {torch.__version__}, {os.cpu_count()} cores")
    started = time.monotonic()
    run_all(check, s)
    check.add("total", f"{time.monotonic() - started:.0f} s")
    table = check.table()
    check._save("summary.txt", table + "\n")
    check._save("device_check.json", json.dumps(check.results, indent=2, default=str) + "\n")
    print(table)
    print(f"(every part's output: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
