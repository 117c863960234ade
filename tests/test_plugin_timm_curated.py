"""The timm plugin: Swin (adapters on NHWC tokens in every stage, bottleneck per stage, mean over
space and time after the final norm) and ImageNet-21k ViTs; timm, Microsoft and JAX weight files.

Reference models come from `timm.create_model` directly (not through the plugin), weight files are
written here in each format's own layout, and every comparison is against timm's own forward pass."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import perturb_layer_norms
from torch import nn

from stadapt.backbones import installed_plugins, load_plugin
from stadapt.errors import WeightsError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, VideoClassifier, build_model, load_backbone_weights
from stadapt.model.conformance import assert_conformant

# the tiny variants' architectures as their descriptions state them: timm model name + overrides
ARCH = {
    "swin_tiny_test": ("swin_tiny_patch4_window7_224",
                       dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2, 2),
                            num_heads=(1, 2, 4))),
    "vit_tiny_test": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4)),
}
TINY = tuple(ARCH)
HALF = AdapterConfig(bottleneck_ratio=0.5)  # the paper's 384 / 768, per stage for Swin
ADAPTER = {"swin_tiny_test": HALF, "vit_tiny_test": AdapterConfig(bottleneck=24)}
HEADS = {"model.head.weight", "model.head.bias", "model.head.fc.weight", "model.head.fc.bias"}


@pytest.fixture(scope="module")
def plugin():
    return load_plugin("timm")  # through the `stadapt.backbones` entry point, as users get it


def _timm_model(variant: str, seed: int = 0, **overrides) -> nn.Module:
    """timm's own model of the variant WITH a 7-class head (as released files have), norms perturbed so
    that a skipped or misplaced norm shows."""
    import timm

    name, kwargs = ARCH[variant]
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=7, **{**kwargs, **overrides})
    return perturb_layer_norms(model, seed + 100)


def _features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """timm's image features: what its classifier head sees."""
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def _images(count: int = 2, size: int = 32, seed: int = 5) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _headless(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head")}


def _load(plugin, variant: str, path: Path):
    backbone = plugin.build(variant).eval()
    return backbone, load_backbone_weights(backbone, plugin, variant, path)


def _assert_same_tensors(backbone, source: nn.Module) -> None:
    ours, theirs = backbone.native_state_dict(), _headless(source)
    assert sorted(ours) == sorted(theirs)
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"tensors differ from the source model: {different[:5]}"


# --- weight files in their original layouts ---------------------------------------------------------


def _microsoft_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """A timm Swin written back as Microsoft's release (the inverse of timm's `checkpoint_filter_fn`):
    each stage's patch merging at the END of the stage before, `head.fc` -> `head`, and the
    `relative_position_index` / `attn_mask` buffers their files carry (timm keeps them non-persistent)."""
    out = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[re.sub(r"^head\.fc\.", "head.", key)] = value.clone()
    for name, buffer in model.named_buffers():
        if name.endswith(("relative_position_index", "attn_mask")):
            out[name] = buffer.clone()
    return out


def _jax_npz(model: nn.Module, path: Path, pre_logits: bool = True) -> Path:
    """A timm ViT written as Google's original JAX checkpoints (the inverse of timm's `_load_weights`),
    with the in21k representation layer (`pre_logits`) and classifier those files carry."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    width, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # (C, 3, p, p) -> (p, p, 3, C)
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    if pre_logits:
        w["pre_logits/kernel"] = np.eye(width, dtype=np.float32)
        w["pre_logits/bias"] = np.zeros(width, dtype=np.float32)
    for i in range(len(model.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        for j, name in enumerate(("query", "key", "value")):
            rows = slice(j * width, (j + 1) * width)
            w[p + f"MultiHeadDotProductAttention_1/{name}/kernel"] = (
                sd[b + "attn.qkv.weight"][rows].T.reshape(width, heads, -1))
            w[p + f"MultiHeadDotProductAttention_1/{name}/bias"] = sd[b + "attn.qkv.bias"][rows].reshape(heads, -1)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = (
            sd[b + "attn.proj.weight"].reshape(width, heads, -1).transpose(1, 2, 0))
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
        for r in range(2):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **{k: np.ascontiguousarray(v) for k, v in w.items()})
    return path


def test_microsoft_writer_is_the_inverse_of_timms_filter() -> None:
    """The test's own Microsoft layout is what timm's filter reads back into exactly timm's keys."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    source = _timm_model("swin_tiny_test")
    microsoft = _microsoft_layout(source)
    assert "layers.0.downsample.reduction.weight" in microsoft and "layers.2.downsample.norm.weight" not in microsoft
    assert "head.weight" in microsoft and "head.fc.weight" not in microsoft
    assert "layers.0.blocks.1.attn_mask" in microsoft and "layers.0.blocks.0.attn.relative_position_index" in microsoft
    back = checkpoint_filter_fn({"model": microsoft}, source)
    assert sorted(back) == sorted(source.state_dict())
    assert all(torch.equal(back[k], v) for k, v in source.state_dict().items())


def test_jax_writer_is_the_inverse_of_timms_reader(tmp_path: Path) -> None:
    from timm.models.vision_transformer import _load_weights

    source = _timm_model("vit_tiny_test", seed=1)
    target = _timm_model("vit_tiny_test", seed=2)
    assert not torch.equal(source.blocks[0].attn.qkv.weight, target.blocks[0].attn.qkv.weight)
    with torch.no_grad():
        _load_weights(target, str(_jax_npz(source, tmp_path / "ViT-T_8.npz")))
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


# --- 1. entry point and conformance -----------------------------------------------------------------


def test_timm_is_registered_through_its_entry_point(plugin) -> None:
    [entry] = [e for e in installed_plugins() if e.name == "timm"]
    assert entry.target == "stadapt_timm:plugin"
    assert type(plugin).__module__ == "stadapt_timm.plugin" and plugin.name == "timm"
    assert plugin.test_variant == "swin_tiny_test"


@pytest.mark.parametrize("variant", TINY)
def test_conformance(plugin, variant: str) -> None:
    results = assert_conformant(plugin, variant)
    assert len(results) >= 7 and all(r.ok for r in results)
    assert f"checking {variant}" in results[0].detail  # the requested variant, not the default one


# --- 2. metadata ------------------------------------------------------------------------------------


def test_variants_name_families_statistics_and_tags(plugin) -> None:
    variants = plugin.variants()
    assert sorted(variants) == sorted(["swin_base_patch4_window7_224", "vit_base_patch16_224.augreg_in21k", *TINY])
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for name, family, stats, size in [
        ("swin_base_patch4_window7_224", "Swin", imagenet, 224),
        ("swin_tiny_test", "Swin", imagenet, 32),
        ("vit_base_patch16_224.augreg_in21k", "ImageNet-21k ViT", ((0.5,) * 3, (0.5,) * 3), 224),
        ("vit_tiny_test", "ImageNet-21k ViT", ((0.5,) * 3, (0.5,) * 3), 32),
    ]:
        info = variants[name]
        assert (info.name, info.family, (info.mean, info.std), info.image_size) == (name, family, stats, size)
        assert info.interpolation == "bicubic"
    assert variants["swin_tiny_test"].extra["timm_kwargs"] == ARCH["swin_tiny_test"][1]
    assert variants["vit_tiny_test"].extra["timm_kwargs"] == ARCH["vit_tiny_test"][1]
    assert plugin.pretrained_tags("swin_base_patch4_window7_224") == ("ms_in22k",)
    assert plugin.pretrained_tags("vit_base_patch16_224.augreg_in21k")[0] == "augreg_in21k"
    assert plugin.pretrained_tags("swin_tiny_test") == plugin.pretrained_tags("vit_tiny_test") == ()


# --- 3. semantics -----------------------------------------------------------------------------------


def test_swin_layouts_are_channels_last_grids_and_adapters_scale_per_stage(plugin) -> None:
    backbone = plugin.build("swin_tiny_test")
    layouts = backbone.block_layouts()
    assert [(t.width, t.grid) for t in layouts] == [(16, (16, 16))] * 2 + [(32, (8, 8))] * 2 + [(64, (4, 4))] * 2
    assert all(t.channels_last_grid and t.prefix_tokens == 0 for t in layouts)
    assert layouts[0].shape(3) == (3, 16, 16, 16)
    both = AdapterConfig(bottleneck_ratio=0.5, positions=("pre_attn", "pre_mlp"))
    model = VideoClassifier(backbone, num_classes=3, num_frames=2, adapter=both)
    for position in ("pre_attn", "pre_mlp"):
        adapters = [getattr(model.adapters[str(i)], position) for i in range(len(layouts))]
        assert [a.bottleneck for a in adapters] == [8, 8, 16, 16, 32, 32]
        assert [a.fc2.out_features for a in adapters] == [16, 16, 32, 32, 64, 64]
        assert all(a.layout.channels_last_grid for a in adapters)

    vit = plugin.build("vit_tiny_test").block_layouts()
    assert vit == [vit[0]] * 3 and (vit[0].width, vit[0].grid, vit[0].prefix_tokens) == (64, (4, 4), 1)
    assert not vit[0].channels_last_grid


@pytest.mark.parametrize("variant", TINY)
def test_one_frame_clips_give_timms_image_features(plugin, variant: str, tmp_path: Path) -> None:
    source = _timm_model(variant)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    built = build_model(ModelConfig(f"timm:{variant}", 3, 1, ADAPTER[variant], dropout=0.0), tmp_path / "weights.pth")
    model, images = built.model.eval(), _images(2)
    expected = _features(source, images)
    with torch.no_grad():
        features = model.forward_features(images.unsqueeze(2))  # 2 clips of 1 frame
    plain = _timm_model(variant)  # the same model with identity norms: a skipped norm would show
    for module in plain.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    assert features.shape == (2, source.num_features)
    torch.testing.assert_close(features, expected)
    assert not torch.allclose(_features(plain, images), expected, atol=1e-3)


def test_swin_video_features_are_the_mean_over_time_of_timms(plugin, tmp_path: Path) -> None:
    source = _timm_model("swin_tiny_test", seed=1)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = build_model(ModelConfig("timm:swin_tiny_test", 3, 3, HALF, dropout=0.0),
                        tmp_path / "weights.pth").model.eval()
    images = _images(3, seed=6)
    single = _features(source, images)
    with torch.no_grad():
        same = model.forward_features(images[:1].unsqueeze(2).expand(-1, -1, 3, -1, -1))  # one image, 3 times
        moving = model.forward_features(images.transpose(0, 1).unsqueeze(0))  # 3 different frames
    torch.testing.assert_close(same, single[:1])
    # the final norm acts per token before pooling: the video feature is the mean of timm's frame features
    torch.testing.assert_close(moving, single.mean(dim=0, keepdim=True))
    assert not torch.allclose(moving, single[:1], atol=1e-3)


# --- 4. weight formats ------------------------------------------------------------------------------


def _write(fmt: str, source: nn.Module, directory: Path) -> Path:
    if fmt == "safetensors":  # the hub's model.safetensors of timm/<name>.<tag>: timm keys, head included
        from safetensors.torch import save_file

        path = directory / "model.safetensors"
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    elif fmt == "pth":
        path = directory / "checkpoint.pth"
        torch.save({"state_dict": source.state_dict(), "epoch": 300}, path)
    elif fmt == "microsoft":
        path = directory / "swin_tiny_patch4_window7_224_22k.pth"
        torch.save({"model": _microsoft_layout(source)}, path)
    else:
        path = _jax_npz(source, directory / "ViT-T_8.npz")
    return path


FORMATS = [("swin_tiny_test", "safetensors"), ("swin_tiny_test", "pth"), ("swin_tiny_test", "microsoft"),
           ("vit_tiny_test", "safetensors"), ("vit_tiny_test", "pth"), ("vit_tiny_test", "jax_npz")]


@pytest.mark.parametrize(("variant", "fmt"), FORMATS)
def test_weight_formats_load_to_timms_model(plugin, variant: str, fmt: str, tmp_path: Path) -> None:
    source = _timm_model(variant, seed=3)
    path = _write(fmt, source, tmp_path)
    built = build_model(ModelConfig(f"timm:{variant}", 3, 1, ADAPTER[variant], dropout=0.0), weights=path)
    report = built.load_report
    assert not report.unexpected
    if fmt != "jax_npz":  # the head of the file is named as unused, not silently dropped or loaded
        assert set(report.ignored) == HEADS & {"model." + k for k in source.state_dict()} and report.ignored
    _assert_same_tensors(built.model.backbone, source)
    images = _images(2)
    with torch.no_grad():
        features = built.model.eval().forward_features(images.unsqueeze(2))
    torch.testing.assert_close(features, _features(source, images))
    torch.testing.assert_close(built.model.backbone.native_forward(images), _features(source, images))


def test_backbone_saved_from_stadapt_reloads(plugin, tmp_path: Path) -> None:
    """A file saved from the backbone module itself (`model.` + timm keys) reads back too."""
    source = _timm_model("swin_tiny_test", seed=4)
    first, _ = _load(plugin, "swin_tiny_test", _write("safetensors", source, tmp_path))
    torch.save(first.state_dict(), tmp_path / "backbone.pt")
    second, report = _load(plugin, "swin_tiny_test", tmp_path / "backbone.pt")
    assert report.loaded == len(first.state_dict()) and not report.ignored
    _assert_same_tensors(second, source)


# --- 5. wrong size, wrong family, damaged files -----------------------------------------------------


def test_swin_file_of_another_width_names_the_shapes(plugin, tmp_path: Path) -> None:
    narrow = _timm_model("swin_tiny_test", embed_dim=8)
    torch.save(narrow.state_dict(), tmp_path / "narrow.pth")
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "swin_tiny_test", tmp_path / "narrow.pth")
    assert "model.patch_embed.proj.weight expects (16, 3, 2, 2) but the file has (8, 3, 2, 2)" in exc.value.message
    assert "another architecture or size" in exc.value.hint


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's resampling, called here on purpose
@pytest.mark.parametrize(("overrides", "key", "expected", "found"), [
    (dict(img_size=64, patch_size=4), "model.patch_embed.proj.weight", (16, 3, 2, 2), (16, 3, 4, 4)),
    (dict(window_size=8), "model.layers.0.blocks.0.attn.relative_position_bias_table", (49, 1), (225, 1)),
])
def test_swin_file_of_another_patch_or_window_is_refused_not_resampled(plugin, tmp_path: Path, overrides, key,
                                                                       expected, found) -> None:
    from timm.models.swin_transformer import checkpoint_filter_fn

    other = _timm_model("swin_tiny_test", **overrides)
    # timm's own filter would quietly resample this file to fit: the plugin must not
    resampled = checkpoint_filter_fn(other.state_dict(), _timm_model("swin_tiny_test"))
    assert tuple(resampled[key.removeprefix("model.")].shape) == expected
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "swin_tiny_test", tmp_path / "other.pth")
    assert f"{key} expects {expected} but the file has {found}" in exc.value.message


def test_other_families_into_swin_name_what_is_expected_and_found(plugin, tmp_path: Path) -> None:
    torch.save(_timm_model("vit_tiny_test").state_dict(), tmp_path / "vit.pth")
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "swin_tiny_test", tmp_path / "vit.pth")
    assert "model.patch_embed.proj.weight expects (16, 3, 2, 2) but the file has (64, 3, 8, 8)" in exc.value.message

    # a family with no key in common: the error lists the expected keys with shapes and the file's instead
    from helpers import tiny_visual

    torch.save(tiny_visual().state_dict(), tmp_path / "clip_visual.pt")
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "swin_tiny_test", tmp_path / "clip_visual.pt")
    message = exc.value.message
    assert "expected e.g. model.patch_embed.proj.weight (16, 3, 2, 2)" in message
    assert "the file has instead e.g. model.class_embedding (128,), model.positional_embedding (17, 128)" in message


def test_jax_npz_of_another_size_names_the_shapes(plugin, tmp_path: Path) -> None:
    from timm.models.vision_transformer import _load_weights

    cases = [  # (overrides, what the message names)
        (dict(embed_dim=32, num_heads=2), "embedding/kernel expects (8, 8, 3, 64) but the file has (8, 8, 3, 32)"),
        (dict(patch_size=4), "embedding/kernel expects (8, 8, 3, 64) but the file has (4, 4, 3, 64)"),
        (dict(img_size=48), "pos_embedding expects (1, 17, 64) but the file has (1, 37, 64)"),
        (dict(depth=4), "the model has 3 encoder blocks but the file has 4"),
        (dict(depth=2), "the model has 3 encoder blocks but the file has 2"),
    ]
    for i, (overrides, named) in enumerate(cases):
        path = _jax_npz(_timm_model("vit_tiny_test", **overrides), tmp_path / f"other{i}.npz")
        with pytest.raises(WeightsError) as exc:
            _load(plugin, "vit_tiny_test", path)
        assert named in exc.value.message, exc.value.message
        assert str(path) in exc.value.message
    # timm itself would take the other patch size, image size and depth quietly (resampled or partly read)
    for i in (1, 2, 3):
        with torch.no_grad():
            _load_weights(_timm_model("vit_tiny_test"), str(tmp_path / f"other{i}.npz"))


def test_jax_npz_into_swin_is_refused(plugin, tmp_path: Path) -> None:
    path = _jax_npz(_timm_model("vit_tiny_test"), tmp_path / "ViT-T_8.npz")
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "swin_tiny_test", path)
    assert "JAX .npz checkpoint, which only timm ViT variants read, not timm:swin_tiny_test" in exc.value.message
    assert "pick a ViT variant" in exc.value.hint


def test_damaged_jax_npz_files_are_weights_errors(plugin, tmp_path: Path) -> None:
    good = _jax_npz(_timm_model("vit_tiny_test"), tmp_path / "good.npz")
    data = good.read_bytes()
    for cut in (0, 500, len(data) // 2, len(data) - 10):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="truncated, corrupt or not an .npz"):
            _load(plugin, "vit_tiny_test", tmp_path / "cut.npz")

    # damage inside a block's tensor (the zip directory intact): found only when timm reads that member
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    broken = bytearray(data)
    broken[start:start + 16] = bytes(16 * [0xFF])
    (tmp_path / "crc.npz").write_bytes(bytes(broken))
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "vit_tiny_test", tmp_path / "crc.npz")
    assert "could not load the JAX checkpoint" in exc.value.message and "CRC" in exc.value.message

    with np.load(good) as archive:  # a block's tensor left out
        arrays = {k: archive[k] for k in archive.files if k != "Transformer/encoderblock_2/LayerNorm_2/scale"}
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(WeightsError) as exc:
        _load(plugin, "vit_tiny_test", tmp_path / "missing.npz")
    assert "Transformer/encoderblock_2/LayerNorm_2/scale" in exc.value.message

    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3, dtype=np.float32))  # an .npz, but no ViT in it
    with pytest.raises(WeightsError, match="could not load the JAX checkpoint"):
        _load(plugin, "vit_tiny_test", tmp_path / "foreign.npz")
    with pytest.raises(WeightsError, match="does not exist"):
        _load(plugin, "vit_tiny_test", tmp_path / "absent.npz")


# --- 6. pretrained tags -----------------------------------------------------------------------------


def test_unknown_tags_list_the_known_ones(plugin, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(WeightsError) as exc:
        plugin.resolve_pretrained("swin_base_patch4_window7_224", "in1k")
    assert "no pretrained tag 'in1k'" in exc.value.message and exc.value.hint.startswith("tags: ms_in22k;")
    with pytest.raises(WeightsError) as exc:
        plugin.resolve_pretrained("vit_base_patch16_224.augreg_in21k", "in1k")
    assert exc.value.hint.startswith("tags: augreg_in21k, orig_in21k;")
    monkeypatch.chdir(tmp_path)  # through the core path: a bare word that names no file is a tag
    with pytest.raises(WeightsError, match="tags: none"):
        build_model(ModelConfig("timm:swin_tiny_test", 3, 2, HALF), weights="in22k")


URL = "https://huggingface.co/timm/swin_base_patch4_window7_224.ms_in22k/resolve/main/model.safetensors"


def test_known_tag_offline_names_the_download(plugin, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # a fresh interpreter reads both variables as users set them; the timeout keeps a hang from hanging us
    code = ("import json\nfrom stadapt.backbones import load_plugin\nfrom stadapt.errors import WeightsError\n"
            "try:\n    load_plugin('timm').resolve_pretrained('swin_base_patch4_window7_224', 'ms_in22k')\n"
            "except WeightsError as e:\n    print(json.dumps([e.message, e.hint]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr
    message, hint = json.loads(done.stdout)
    assert "timm:swin_base_patch4_window7_224 weights 'ms_in22k'" in message and "neither in the Hugging Face cache" \
        in message
    assert URL in hint

    # in this process huggingface_hub has read its settings already: set them where it looks now
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WeightsError) as exc:
        plugin.resolve_pretrained("swin_base_patch4_window7_224", "ms_in22k")
    assert URL in exc.value.hint
    assert not list((tmp_path / "hf").rglob("*.safetensors"))


# --- 7. full-size variants --------------------------------------------------------------------------

# parameters without the classifier (observed); the published counts include a 1000-class head:
# Swin-B 87.77M (timm; "88M" in the Swin paper), ViT-B/16 86.57M (timm; "86M" in the ViT paper)
FULL_SIZE = {
    "swin_base_patch4_window7_224": ("swin_base_patch4_window7_224", 86_743_224, 1024, 87.77e6),
    "vit_base_patch16_224.augreg_in21k": ("vit_base_patch16_224", 85_798_656, 768, 86.57e6),
}


def _adapter_parameters(width: int, bottleneck: int) -> int:
    """fc1 (C x b + b), depthwise Conv3d 3x1x1 (3b + b), fc2 (b x C + C)."""
    return width * bottleneck + bottleneck + 3 * bottleneck + bottleneck + bottleneck * width + width


@pytest.mark.parametrize("variant", list(FULL_SIZE))
def test_full_size_parameter_counts(plugin, variant: str) -> None:
    import timm

    timm_name, count, width, published = FULL_SIZE[variant]
    with torch.device("meta"):
        reference = timm.create_model(timm_name, pretrained=False, num_classes=0)
        backbone = plugin.build(variant)
    ours = sum(p.numel() for p in backbone.parameters())
    assert ours == sum(p.numel() for p in reference.parameters()) == count
    assert backbone.feature_width == width
    assert abs(count + width * 1000 + 1000 - published) < 0.001 * published
    assert len(backbone.block_layouts()) == (24 if "swin" in variant else 12)


def test_full_size_adapter_counts(plugin) -> None:
    with torch.device("meta"):
        swin = VideoClassifier(plugin.build("swin_base_patch4_window7_224"), 400, 8, HALF)
        vit = VideoClassifier(plugin.build("vit_base_patch16_224.augreg_in21k"), 400, 8, AdapterConfig())
    # Swin-B: depths 2, 2, 18, 2 at widths 128, 256, 512, 1024; bottleneck 0.5 x width; one adapter per block
    stages = [(2, 128), (2, 256), (18, 512), (2, 1024)]
    expected = sum(depth * _adapter_parameters(c, c // 2) for depth, c in stages)
    assert expected == 7_021_696
    assert len(swin.adapters) == 24
    assert sum(p.numel() for p in swin.adapters.parameters()) == expected
    bottlenecks = [swin.adapters[str(i)].pre_mlp.bottleneck for i in range(24)]
    assert bottlenecks == [64] * 2 + [128] * 2 + [256] * 18 + [512] * 2
    # ViT-B/16, bottleneck 384: 12 x 592,512 (the paper's "7M" tunable parameters)
    assert sum(p.numel() for p in vit.adapters.parameters()) == 12 * _adapter_parameters(768, 384) == 7_110_144


@pytest.mark.slow  # full-size video forwards
@pytest.mark.parametrize("variant", list(FULL_SIZE))
def test_full_size_video_forward(plugin, variant: str) -> None:
    torch.manual_seed(0)
    adapter = HALF if "swin" in variant else AdapterConfig()
    model = build_model(ModelConfig(f"timm:{variant}", 5, 2, adapter)).model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 2, 224, 224, generator=torch.Generator().manual_seed(1)))
    assert logits.shape == (1, 5) and bool(torch.isfinite(logits).all())
