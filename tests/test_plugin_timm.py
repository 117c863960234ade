"""The timm plugin: Swin (adapters on NHWC tokens in every stage, bottleneck per stage, mean over
space and time after the final norm) and ImageNet-21k ViTs; timm, Microsoft and JAX weight files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stadapt.adapters import AdapterConfig
from stadapt.backbones import load_plugin
from stadapt.backbones.conformance import assert_conformant
from stadapt.errors import WeightsError
from stadapt.model import ModelConfig, VideoClassifier, build_model, load_backbone_weights

TINY = ("swin_tiny_test", "vit_tiny_test")
RATIO = AdapterConfig(bottleneck_ratio=0.5, positions=("pre_attn", "pre_mlp"))


@pytest.fixture(scope="module")
def plugin():
    return load_plugin("timm")  # through the entry point, as users get it


def _timm_model(variant: str, seed: int = 0, **overrides) -> nn.Module:
    """The variant's timm model WITH a classifier head (as released files have), norms perturbed so a
    skipped or misplaced norm shows."""
    from stadapt_timm.plugin import create_timm_model

    torch.manual_seed(seed)
    model = create_timm_model(variant, num_classes=7, **overrides)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(torch.randn(module.weight.shape, generator=generator) * 0.3)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def _features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def _images(count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _load(plugin, variant: str, path: Path):
    backbone = plugin.build(variant).eval()
    return backbone, load_backbone_weights(backbone, plugin, variant, path)


@pytest.mark.parametrize("variant", TINY)
def test_conformance(plugin, variant: str) -> None:
    assert_conformant(plugin, variant)


def test_variants_name_families_statistics_and_tags(plugin) -> None:
    variants = plugin.variants()
    assert set(variants) == {"swin_base_patch4_window7_224", "vit_base_patch16_224.augreg_in21k", *TINY}
    swin, vit = variants["swin_base_patch4_window7_224"], variants["vit_base_patch16_224.augreg_in21k"]
    assert swin.family == "Swin" and vit.family == "ImageNet-21k ViT"
    assert swin.mean == (0.485, 0.456, 0.406) and vit.mean == vit.std == (0.5, 0.5, 0.5)
    assert plugin.pretrained_tags(swin.name) == ("ms_in22k",) and "augreg_in21k" in plugin.pretrained_tags(vit.name)


@pytest.mark.parametrize("variant", TINY)
def test_video_features_are_timms_image_features(plugin, variant: str, tmp_path: Path) -> None:
    source = _timm_model(variant)
    from safetensors.torch import save_file

    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))  # the hub's file, head included
    built = build_model(ModelConfig(f"timm:{variant}", 3, 3, RATIO), tmp_path / "model.safetensors")
    assert sorted(built.load_report.ignored) == sorted(k for k in ("model.head.weight", "model.head.bias",
                                                                   "model.head.fc.weight", "model.head.fc.bias")
                                                       if k.removeprefix("model.") in source.state_dict())
    model, image = built.model.eval(), _images(1)
    expected = _features(source, image)
    with torch.no_grad():  # 3 frames of the same image, adapters at identity: timm's feature (mean over time)
        features = model.forward_features(image.unsqueeze(2).expand(-1, -1, 3, -1, -1))
    torch.testing.assert_close(features, expected)


def test_swin_adapters_sit_on_channels_last_grids_sized_per_stage(plugin) -> None:
    backbone = plugin.build("swin_tiny_test")
    layouts = backbone.block_layouts()
    assert [(t.width, t.grid) for t in layouts] == [(16, (16, 16))] * 2 + [(32, (8, 8))] * 2 + [(64, (4, 4))] * 2
    assert all(t.channels_last_grid and t.prefix_tokens == 0 for t in layouts)
    model = VideoClassifier(backbone, num_classes=3, num_frames=2, adapter=RATIO)
    widths = [model.adapters[str(i)].pre_mlp.fc1.out_features for i in range(len(layouts))]
    assert widths == [8, 8, 16, 16, 32, 32]


def _microsoft_layout(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's Swin keys back to Microsoft's release: each stage's patch merging at the END of the stage
    before, head.fc -> head, and the relative_position_index / attn_mask buffers their files carry."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    for name, module in model.named_modules():
        if hasattr(module, "relative_position_index"):
            out[f"{name}.relative_position_index"] = module.relative_position_index.clone()
            out[f"{name.rsplit('.', 1)[0]}.attn_mask"] = torch.zeros(1)
    return out


def test_microsoft_swin_checkpoint_loads(plugin, tmp_path: Path) -> None:
    source = _timm_model("swin_tiny_test", seed=3)
    microsoft = _microsoft_layout(source.state_dict(), source)
    assert "layers.0.downsample.reduction.weight" in microsoft and "head.weight" in microsoft
    torch.save({"model": microsoft}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    backbone, report = _load(plugin, "swin_tiny_test", tmp_path / "swin_tiny_patch4_window7_224.pth")
    assert not report.unexpected
    images = _images()
    torch.testing.assert_close(backbone.native_forward(images), _features(source, images))


def _jax_npz(model: nn.Module, path: Path) -> Path:
    """A timm ViT written as the original JAX checkpoints are (inverting timm's own .npz reader)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    width, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "embedding/bias":
         sd["patch_embed.proj.bias"], "cls": sd["cls_token"], "Transformer/posembed_input/pos_embedding":
         sd["pos_embed"], "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias":
         sd["norm.bias"], "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    for i in range(len(model.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        for j, name in enumerate(("query", "key", "value")):
            rows = slice(j * width, (j + 1) * width)
            w[p + f"MultiHeadDotProductAttention_1/{name}/kernel"] = sd[b + "attn.qkv.weight"][rows].T.reshape(
                width, heads, -1)
            w[p + f"MultiHeadDotProductAttention_1/{name}/bias"] = sd[b + "attn.qkv.bias"][rows].reshape(heads, -1)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attn.proj.weight"].reshape(
            width, heads, -1).transpose(1, 2, 0)
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for r in range(2):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **w)
    return path


def test_jax_npz_checkpoint_loads(plugin, tmp_path: Path) -> None:
    source = _timm_model("vit_tiny_test", seed=4)
    backbone, _ = _load(plugin, "vit_tiny_test", _jax_npz(source, tmp_path / "ViT-T_8.npz"))
    images = _images()
    torch.testing.assert_close(backbone.native_forward(images), _features(source, images))


def test_wrong_files_name_expected_and_found_shapes(plugin, tmp_path: Path) -> None:
    narrow = _timm_model("swin_tiny_test", embed_dim=8)  # timm's filter would resample; we refuse
    torch.save(narrow.state_dict(), tmp_path / "narrow.pth")
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "swin_tiny_test", tmp_path / "narrow.pth")
    assert "model.patch_embed.proj.weight expects (16, 3, 2, 2) but the file has (8, 3, 2, 2)" in str(exc.value)

    torch.save(_timm_model("vit_tiny_test").state_dict(), tmp_path / "vit.pth")
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "swin_tiny_test", tmp_path / "vit.pth")
    message = str(exc.value)
    assert "model.patch_embed.proj.weight expects (16, 3, 2, 2) but the file has (64, 3, 8, 8)" in message

    bigger = _timm_model("vit_tiny_test", embed_dim=32, num_heads=2)
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "vit_tiny_test", _jax_npz(bigger, tmp_path / "bigger.npz"))
    assert "expects (8, 8, 3, 64) but the file has (8, 8, 3, 32)" in str(exc.value)
    with pytest.raises(WeightsError, match="only timm ViT variants read"):
        _load(plugin, "swin_tiny_test", tmp_path / "bigger.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "bigger.npz").read_bytes()[:500])
    with pytest.raises(WeightsError, match="truncated, corrupt or not an .npz"):
        _load(plugin, "vit_tiny_test", tmp_path / "cut.npz")


def test_pretrained_tags_offline_name_the_download(plugin, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(WeightsError, match="tags: ms_in22k"):
        plugin.resolve_pretrained("swin_base_patch4_window7_224", "in1k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)  # read at import; the variable alone is too late here
    with pytest.raises(WeightsError) as exc:
        plugin.resolve_pretrained("swin_base_patch4_window7_224", "ms_in22k")
    assert "huggingface.co/timm/swin_base_patch4_window7_224.ms_in22k/resolve/main/model.safetensors" in exc.value.hint


FULL_SIZE = {  # variant -> (backbone parameters, adapter config)
    "swin_base_patch4_window7_224": (86_743_224, AdapterConfig(bottleneck_ratio=0.5)),
    "vit_base_patch16_224.augreg_in21k": (85_798_656, AdapterConfig()),
}


@pytest.mark.parametrize("variant", list(FULL_SIZE))
def test_full_size_variants_count_and_run(plugin, variant: str) -> None:
    from stadapt_timm.plugin import create_timm_model

    expected, adapter = FULL_SIZE[variant]
    with torch.device("meta"):
        reference = create_timm_model(variant)
        meta = plugin.build(variant)
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in reference.parameters()) == expected

    torch.manual_seed(0)
    model = build_model(ModelConfig(f"timm:{variant}", 5, 2, adapter)).model.eval()
    # each adapter: down (C x b + b), depthwise 3x1x1 conv (3b + b), up (b x C + C); 1 per block (pre_mlp)
    widths = [t.width for t in model.backbone.block_layouts()]
    per = [2 * c * b + 5 * b + c for c, b in ((c, adapter.bottleneck_for(c)) for c in widths)]
    assert sum(p.numel() for p in model.adapters.parameters()) == sum(per)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 2, 224, 224))
    assert logits.shape == (1, 5) and bool(torch.isfinite(logits).all())
