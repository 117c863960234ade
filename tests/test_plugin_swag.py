"""The SWAG plugin (classy-vision's ViT): conformance, the three weight formats people have (SWAG's
release files, classy-vision task checkpoints, torchvision state dicts), wrong files, full sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from stadapt.adapters import AdapterConfig
from stadapt.backbones import load_plugin
from stadapt.backbones.conformance import assert_conformant
from stadapt.errors import WeightsError
from stadapt.model import ModelConfig, VideoClassifier, build_model, load_backbone_weights

TINY = dict(image_size=32, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=256)


@pytest.fixture(scope="module")
def plugin():
    return load_plugin("swag")  # through the entry point, as users get it


def _perturb_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial LayerNorms, so a skipped or misplaced norm shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(torch.randn(module.weight.shape, generator=generator) * 0.3)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def _torchvision_tiny(seed: int = 0) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return _perturb_norms(VisionTransformer(num_classes=10, **TINY), seed)


def _swag_tiny(plugin, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _perturb_norms(plugin.build("tiny").vit, seed)


def _images(count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _loaded(plugin, path: Path):
    backbone = plugin.build("tiny").eval()
    report = load_backbone_weights(backbone, plugin, "tiny", path)
    return backbone, report


def test_conformance(plugin) -> None:
    names = [r.name for r in assert_conformant(plugin)]
    assert "decomposition matches the model's own forward" in names


def test_variants_name_the_family_sizes_and_release_tags(plugin) -> None:
    variants = plugin.variants()
    assert set(variants) == {"ViT-B-16", "ViT-L-16", "ViT-H-14", "ViT-B-16-384", "ViT-L-16-512", "ViT-H-14-518",
                             "tiny"}
    sizes = {name: info.image_size for name, info in variants.items()}
    assert sizes["ViT-H-14"] == 224 and sizes["ViT-L-16-512"] == 512 and sizes["ViT-H-14-518"] == 518
    for info in variants.values():
        assert info.family == "SWAG ViT" and info.interpolation == "bicubic"
        assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    assert plugin.pretrained_tags("ViT-B-16") == ("swag",)
    assert plugin.pretrained_tags("ViT-L-16-512") == ("swag_in1k",)
    assert plugin.pretrained_tags("tiny") == ()


def test_torchvision_weights_give_torchvisions_features(plugin, tmp_path: Path) -> None:
    source = _torchvision_tiny()
    torch.save(source.state_dict(), tmp_path / "vit_tiny_swag_e2e.pth")  # heads.head.* included
    backbone, report = _loaded(plugin, tmp_path / "vit_tiny_swag_e2e.pth")
    assert report.ignored == ["vit.head.bias", "vit.head.weight"] and not report.unexpected
    source.heads = nn.Identity()
    images = _images()
    with torch.no_grad():
        expected = source(images)
        torch.testing.assert_close(backbone.native_forward(images), expected)
        # the video model on 1-frame clips (adapters at their identity init) sees the same feature
        video = VideoClassifier(backbone, num_classes=3, num_frames=1,
                                adapter=AdapterConfig(bottleneck=16, positions=("pre_attn", "pre_mlp"))).eval()
        torch.testing.assert_close(video.forward_features(images.unsqueeze(2)), expected)


def test_swag_release_file_with_an_in1k_head_loads(plugin, tmp_path: Path) -> None:
    source = _swag_tiny(plugin, seed=1)
    released = {**source.state_dict(), "head.weight": torch.randn(1000, 64), "head.bias": torch.zeros(1000)}
    torch.save(released, tmp_path / "vit_tiny_in1k.torch")
    backbone, report = _loaded(plugin, tmp_path / "vit_tiny_in1k.torch")
    assert report.loaded == len(source.state_dict()) and report.ignored == ["vit.head.bias", "vit.head.weight"]
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(backbone.native_forward(images), source(images))


def test_classy_vision_task_checkpoint_loads_its_trunk(plugin, tmp_path: Path) -> None:
    source = _swag_tiny(plugin, seed=2)
    checkpoint = {"classy_state_dict": {"train": True, "phase_idx": 3,
                                        "base_model": {"model": {"trunk": source.state_dict(), "heads": {}}}}}
    torch.save(checkpoint, tmp_path / "checkpoint.torch")
    built = build_model(ModelConfig("swag:tiny", num_classes=4, num_frames=2), tmp_path / "checkpoint.torch")
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(built.model.backbone.native_forward(images), source(images))

    torch.save({"classy_state_dict": {"train": True, "base_model": {}}}, tmp_path / "broken.torch")
    with pytest.raises(WeightsError, match="classy-vision checkpoint without a model trunk"):
        _loaded(plugin, tmp_path / "broken.torch")


def test_wrong_size_and_wrong_family_name_the_shapes(plugin, tmp_path: Path) -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    wider = VisionTransformer(**{**TINY, "hidden_dim": 32, "mlp_dim": 128})
    torch.save(wider.state_dict(), tmp_path / "wider.pth")
    with pytest.raises(WeightsError) as exc:
        _loaded(plugin, tmp_path / "wider.pth")
    assert "vit.class_token expects (1, 1, 64) but the file has (1, 1, 32)" in str(exc.value)

    from helpers import tiny_visual

    torch.save(tiny_visual().state_dict(), tmp_path / "clip_tiny.pt")
    with pytest.raises(WeightsError) as exc:
        _loaded(plugin, tmp_path / "clip_tiny.pt")
    message = str(exc.value)
    assert "expected e.g. vit.class_token (1, 1, 64)" in message
    assert "the file has instead e.g. vit.class_embedding (128,)" in message


def test_wrong_file_fails_in_the_cli_without_a_traceback(tmp_path: Path) -> None:
    from helpers import run_cli

    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    torch.save({"conv_proj.weight": torch.zeros(64, 3, 4, 4)}, tmp_path / "bad.torch")  # another patch size

    data = tmp_path / "data"
    write_synthetic(data, SyntheticSpec(motions=("horizontal",), train_per_class=1, val_per_class=1, frames=6,
                                        size=32, clutter=2))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: bad\nbackbone: {{name: 'swag:tiny', weights: '{tmp_path / 'bad.torch'}'}}\n"
        f"data: {{root: '{data}', frames: 2, views: 1x1, num_workers: 0}}\n"
        f"optim: {{batch_size: 2, steps: 1}}\ntrain: {{device: cpu}}\noutput: {{dir: '{tmp_path / 'run'}'}}\n"
    )
    done = run_cli("train", str(recipe))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "vit.conv_proj.weight expects (64, 3, 8, 8) but the file has (64, 3, 4, 4)" in done.stderr
    assert "Traceback" not in done.stderr


def test_pickled_code_is_refused(plugin, tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "config": Path("x")}, tmp_path / "evil.torch")
    with pytest.raises(WeightsError, match="unpickling it could run code"):
        plugin.read_weights(tmp_path / "evil.torch", "tiny")


# name -> torchvision builder (same architecture) for the parameter count
FULL_SIZE = {"ViT-B-16": "vit_b_16", "ViT-L-16": "vit_l_16", "ViT-H-14": "vit_h_14", "ViT-B-16-384": "vit_b_16",
             "ViT-L-16-512": "vit_l_16", "ViT-H-14-518": "vit_h_14"}


@pytest.mark.parametrize("variant", list(FULL_SIZE))
def test_full_size_variants_count_like_torchvision(plugin, variant: str) -> None:
    import torchvision

    size = plugin.variants()[variant].image_size
    with torch.device("meta"):
        ours = plugin.build(variant)
        reference = getattr(torchvision.models, FULL_SIZE[variant])(image_size=size)
    head = sum(p.numel() for p in reference.heads.parameters())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters()) - head
    assert ours.block_layouts()[0].grid == (size // ours.vit.patch_size,) * 2


@pytest.mark.parametrize("variant", list(FULL_SIZE))
def test_full_size_variants_run_a_forward_pass(plugin, variant: str) -> None:
    size = plugin.variants()[variant].image_size
    frames = 2 if size == 224 else 1  # the 512/518 px ones are many seconds per frame on a CPU
    torch.manual_seed(0)
    model = build_model(ModelConfig(f"swag:{variant}", num_classes=5, num_frames=frames)).model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, frames, size, size))
    assert logits.shape == (1, 5) and bool(torch.isfinite(logits).all())


def test_pretrained_tags_resolve_or_name_the_download(plugin, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(WeightsError, match="tags: swag"):
        plugin.resolve_pretrained("ViT-B-16", "laion2b")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "swag" / "vit_b16.torch"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert plugin.resolve_pretrained("ViT-B-16", "swag") == cached  # downloaded once, then read locally
