"""Every built-in backbone family end to end in the quickstart's tiny setting: synthetic motion clips,
the family's tiny variant, a few training steps on the CPU, a checkpoint that reloads, an ONNX export
checked in onnxruntime, and parameter counts with and without adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_cli

from stadapt.data.synthetic import SyntheticSpec, write_synthetic
from stadapt.model.adapters import AdapterConfig
from stadapt.tools.bench.params import parameter_report

# tiny variant -> adapter settings (Swin's stages differ in width: bottleneck proportional to each)
FAMILIES = {
    "clip:tiny": {"bottleneck": 32},
    "swag:tiny": {"bottleneck": 32},
    "timm:swin_tiny_test": {"bottleneck_ratio": 0.5},
    "timm:vit_tiny_test": {"bottleneck": 32},
}
FULL_SIZE_FAMILIES = {  # one variant per family, as `stadapt backbones` should list them
    "CLIP": "clip:ViT-B-16", "SWAG": "swag:ViT-B-16", "Swin": "timm:swin_base_patch4_window7_224",
    "ImageNet-21k ViT": "timm:vit_base_patch16_224.augreg_in21k",
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("families") / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=10,
                                        size=32, clutter=4))
    return root


def _released_weights(backbone: str, path: Path) -> Path:
    """A weights file in the plugin's native layout, as a model zoo would publish it."""
    from stadapt.backbones import parse_backbone

    plugin, variant = parse_backbone(backbone)
    torch.manual_seed(1)
    torch.save(plugin.build(variant.name).native_state_dict(), path)
    return path


def _recipe(backbone: str, adapter: dict, data: Path, out: Path):
    from stadapt.recipe import recipe_from_dict

    return recipe_from_dict({
        "name": "family",
        "backbone": {"name": backbone, "weights": str(_released_weights(backbone, out.parent / "weights.pt"))},
        "adapter": {**adapter, "positions": ["pre_attn", "pre_mlp"]},
        "model": {"dropout": 0.0},
        "data": {"root": str(data), "frames": 4, "stride": 2, "views": "1x1", "num_workers": 0},
        "optim": {"lr": 1e-2, "batch_size": 4, "micro_batch": 2, "steps": 3, "warmup_steps": 1},
        "train": {"device": "cpu", "log_every": 1, "val_every": 3, "save_every": 100},
        "output": {"dir": str(out)},
    })


@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_tiny_variant_trains_reloads_and_exports(backbone: str, clips: Path, tmp_path: Path) -> None:
    from stadapt.api import load_model
    from stadapt.tools.export.onnx import export_onnx
    from stadapt.training.loop import train

    result = train(_recipe(backbone, FAMILIES[backbone], clips, tmp_path / "run"), progress=False)
    assert result.steps == 3 and result.final_val is not None
    counts = result.parameters
    assert 0 < counts["trainable"] < counts["total"]

    checkpoint = tmp_path / "run" / "checkpoints" / "last"
    model = load_model(checkpoint, device="cpu")
    # zero at init, so training moved every adapter the loss depends on; with a class-token feature the
    # last block's pre-MLP adapter (patch tokens only, per-token MLP after it) cannot reach the output
    last = str(model.num_blocks - 1)
    cls_feature = model.backbone.block_layouts()[-1].prefix_tokens > 0
    convs = {(index, position): adapter.conv.weight for index, slot in model.adapters.items()
             for position, adapter in slot.named_children()}
    moved = {key: bool(w.abs().sum() > 0) for key, w in convs.items()}
    assert moved.pop((last, "pre_mlp")) is not cls_feature
    assert moved and all(moved.values()), moved

    videos = sorted((clips / "videos").rglob("*.mp4"))[:2]
    summary = export_onnx(checkpoint, tmp_path / "model.onnx", verify_clips=videos)
    assert summary["verification"]["max_abs_diff"] <= 1e-4
    assert summary["metadata"]["backbone"] == backbone
    assert summary["exporter"] == "dynamo" and summary["fallback_reason"] is None  # no family needs the fallback


@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_parameter_counts_with_and_without_adapters(backbone: str) -> None:
    adapter = AdapterConfig(**FAMILIES[backbone], positions=("pre_mlp",))
    report = parameter_report(backbone, adapter=adapter, num_classes=10)
    parts, adapted, plain = report["parts"], report["with_adapters"], report["without_adapters"]
    assert adapted["total"] == plain["total"] + parts["adapters"] == sum(parts.values())
    assert adapted["trainable"] == parts["adapters"] + parts["head"] and plain["trainable"] == parts["head"]
    torch.manual_seed(0)
    from stadapt.model.classifier import ModelConfig, build_model

    real = build_model(ModelConfig(backbone, 10, 8, adapter)).model  # the meta-device count is the real one
    assert real.parameter_counts() == adapted


def test_backbones_lists_the_four_families_with_their_distribution() -> None:
    listed = run_cli("backbones")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if ":" in line.split(" ")[0]}
    for family, backbone in FULL_SIZE_FAMILIES.items():
        assert family in rows[backbone] and "stadapt 0.1.0" in rows[backbone], (family, rows.get(backbone))
    counted = run_cli("backbones", "--params", "timm:swin_base_patch4_window7_224", "--bottleneck-ratio", "0.5")
    assert counted.returncode == 0, counted.stderr
    assert "bottleneck 0.5 x width = 64/128/256/512" in counted.stdout
