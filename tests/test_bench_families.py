"""`stadapt bench` on every backbone family issue 15 names: a small configuration of each timm family
(DINOv2 registers, SigLIP attention pool, Eva rotary, SwinV2), sized with timm's own create_model
arguments through `--option`, and open_clip towers at full width and depth (its own ViT at 32 px, a timm
tower at its 224 px and one frame). Each report must describe the model it was asked for: the image
size the options set, adapters that add trainable parameters, and a throughput for both models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

VIT = ["img_size=32", "patch_size=8", "embed_dim=64", "depth=2", "num_heads=2"]
CASES = {
    "timm:vit_small_patch14_reg4_dinov2": VIT,
    "timm:vit_base_patch16_siglip_224": VIT,
    "timm:eva02_tiny_patch14_224": VIT,
    "timm:swinv2_tiny_window8_256": ["img_size=32", "window_size=4", "embed_dim=16", "depths=[2,2]",
                                     "num_heads=[1,2]"],
    "clip:ViT-S-16": ["image_size=32"],  # open_clip's own VisionTransformer, full width and depth
    "clip:ViT-B-16-SigLIP": [],  # a timm tower inside open_clip (its input size is timm's): full size
}


@pytest.mark.parametrize("backbone", list(CASES))
def test_bench_reports_both_models_of_each_family(backbone: str, tmp_path: Path) -> None:
    options = [arg for text in CASES[backbone] for arg in ("--option", text)]
    out = tmp_path / "bench.json"
    done = run_cli("bench", "--backbone", backbone, *options, "--device", "cpu", "--runs", "1", "--batch", "1",
                   "--frames", "2" if options else "1", "--bottleneck", "8", "-q", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["backbone"] == backbone
    assert report["image_size"] == (32 if options else 224)
    plain, adapted = report["models"]["without_adapters"], report["models"]["with_adapters"]
    assert adapted["adapter_parameters"] > 0 == plain["adapter_parameters"]
    assert adapted["trainable_parameters"] - plain["trainable_parameters"] == adapted["adapter_parameters"]
    assert plain["throughput"] > 0 and adapted["throughput"] > 0


@pytest.mark.parametrize("backbone", [name for name in CASES if CASES[name]])  # the full-size tower only benches
def test_bench_train_steps_each_family_with_its_options(backbone: str, tmp_path: Path) -> None:
    """bench-train runs the training loop's own step on the model the options describe."""
    options = [arg for text in CASES[backbone] for arg in ("--option", text)]
    out = tmp_path / "bench_train.json"
    done = run_cli("bench-train", "--backbone", backbone, *options, "--device", "cpu", "--modes", "st_adapter",
                   "--steps", "1", "--micro-batch", "1", "--frames", "2", "-q", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["image_size"] == 32  # the size the options set, not the variant's default
    [mode] = report["modes"].values()
    assert 0 < mode["trainable_parameters"] < mode["total_parameters"] and mode["step_seconds"] > 0
