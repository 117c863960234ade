"""`stadapt bench` GFLOPs per clip (against a hand count) and the achieved fraction of a GPU's bf16 peak."""

import json

import pytest
import torch
from helpers import run_cli

from stadapt.tools.bench.flops import bf16_peak_tflops, count_flops
from stadapt.tools.bench.inference import (
    bench_inference,
    build_pair,
    format_report,
    peak_line,
)

# clip:tiny: 32 px, patch 8, width 128, 4 blocks, MLP 4x; 4 frames, 10 classes, adapters of bottleneck 16
FRAMES, SIZE, PATCH, WIDTH, BLOCKS, CLASSES, BOTTLENECK = 4, 32, 8, 128, 4, 10, 16


def _hand_count(adapters: bool, kernel_t: int = 3) -> int:
    """2 FLOPs per multiply-add of every matmul, convolution and attention product, per clip."""
    patches = (SIZE // PATCH) ** 2
    tokens = patches + 1
    embed = FRAMES * 2 * patches * WIDTH * 3 * PATCH * PATCH
    per_frame_block = (2 * tokens * WIDTH * 3 * WIDTH  # q, k, v
                       + 2 * 2 * tokens * tokens * WIDTH  # q k^T and attention x v, over all heads
                       + 2 * tokens * WIDTH * WIDTH  # output projection
                       + 2 * 2 * tokens * WIDTH * 4 * WIDTH)  # MLP up and down
    total = embed + BLOCKS * FRAMES * per_frame_block + 2 * WIDTH * CLASSES
    if adapters:  # one per block: fc1, depthwise temporal conv, fc2 on the patch tokens
        total += BLOCKS * FRAMES * patches * (2 * WIDTH * BOTTLENECK * 2 + 2 * BOTTLENECK * kernel_t)
    return total


def test_flops_per_clip_match_a_hand_count_with_and_without_adapters():
    pair = build_pair("clip:tiny", frames=FRAMES, num_classes=CLASSES, bottleneck=BOTTLENECK, positions=("pre_mlp",))
    clip = torch.randn(1, 3, FRAMES, SIZE, SIZE)
    assert count_flops(pair["without_adapters"].eval(), clip) == _hand_count(adapters=False)
    assert count_flops(pair["with_adapters"].eval(), clip) == _hand_count(adapters=True)
    assert count_flops(pair["with_adapters"].eval(), torch.randn(3, 3, FRAMES, SIZE, SIZE)) == 3 * _hand_count(True)


def test_bench_reports_gflops_per_clip_and_their_ratio(tmp_path):
    report = bench_inference("clip:tiny", frames=FRAMES, num_classes=CLASSES, bottleneck=BOTTLENECK, batch=2,
                             latency_runs=1, throughput_runs=1, warmup=0, device="cpu")
    plain, adapted = report["models"]["without_adapters"], report["models"]["with_adapters"]
    assert plain["gflops_per_clip"] * 1e9 == pytest.approx(_hand_count(False))
    assert adapted["gflops_per_clip"] * 1e9 == pytest.approx(_hand_count(True))
    assert report["ratio"]["gflops_per_clip"] == pytest.approx(_hand_count(True) / _hand_count(False))
    assert report["bf16_peak_tflops"] is None and plain["bf16_peak_fraction"] is None  # no peak on the CPU
    assert plain["achieved_tflops"] == pytest.approx(plain["gflops_per_clip"] * plain["throughput"] / 1e3)
    table = format_report(report)
    assert "GFLOPs/clip" in table and "GFLOPs 1.0" in table and "peak" not in table


def test_cli_prints_and_writes_gflops(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--backbone", "clip:tiny", "--frames", "4", "--bottleneck", "16", "--device", "cpu",
                     "--batch", "1", "--runs", "1", "--json", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert "GFLOPs/clip" in result.stdout
    report = json.loads(out.read_text())
    models = report["models"]
    assert models["with_adapters"]["gflops_per_clip"] > models["without_adapters"]["gflops_per_clip"]


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L4", 121.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA GH200 480GB", 989.0), ("Tesla V100-SXM2-16GB", None),
    ("NVIDIA GeForce GTX 1080", None),
])
def test_bf16_peaks_by_device_name(name, peak):
    assert bf16_peak_tflops(name) == peak


def _cuda_report(device_name: str) -> dict:
    peak = bf16_peak_tflops(device_name)
    models = {}
    for name, gflops, throughput in (("without_adapters", 140.0, 3000.0), ("with_adapters", 148.0, 2900.0)):
        achieved = gflops * throughput / 1e3
        models[name] = {"gflops_per_clip": gflops, "throughput": throughput, "achieved_tflops": achieved,
                        "bf16_peak_fraction": achieved / peak if peak else None}
    return {"device": "cuda:0", "device_name": device_name, "bf16_peak_tflops": peak, "precision": "bf16",
            "models": models}


def test_peak_line_on_a_known_and_an_unknown_gpu():
    line = peak_line(_cuda_report("NVIDIA H200"))
    assert "420 TFLOPS" in line and "42.5%" in line and "989 TFLOPS" in line  # 140 GFLOPs x 3000 clips/s
    unknown = peak_line(_cuda_report("NVIDIA Quantum X"))
    assert "not in stadapt's table" in unknown and "%" not in unknown
    assert peak_line({"device": "cpu"}) is None
