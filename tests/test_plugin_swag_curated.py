"""The SWAG plugin (classy-vision's ViT): conformance, the three weight formats people have (SWAG's
release files, classy-vision task checkpoints, torchvision state dicts), wrong files, full sizes,
pretrained tags. Every weights file is written here; nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import perturb_layer_norms
from torch import nn

from stadapt.backbones import installed_plugins, load_plugin, parse_backbone
from stadapt.errors import WeightsError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, VideoClassifier, build_model, load_backbone_weights
from stadapt.model.conformance import assert_conformant

# the architecture of swag:tiny, in torchvision's VisionTransformer arguments
TINY = dict(image_size=32, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=256)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEAD_KEYS = ["vit.head.bias", "vit.head.weight"]


@pytest.fixture(scope="module")
def plugin():
    return load_plugin("swag")  # through the entry point, as users get it


def _torchvision_tiny(seed: int = 0, **changes: int) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return perturb_layer_norms(VisionTransformer(num_classes=10, **{**TINY, **changes}), seed)


def _swag_tiny(plugin, seed: int = 0) -> nn.Module:
    """A classy-vision VisionTransformer of the tiny shape: the source of SWAG-format files."""
    torch.manual_seed(seed)
    return perturb_layer_norms(plugin.build("tiny").vit, seed)


def _images(count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _loaded(plugin, path: Path):
    torch.manual_seed(123)  # a random init unlike every source model here
    backbone = plugin.build("tiny").eval()
    report = load_backbone_weights(backbone, plugin, "tiny", path)
    return backbone, report


def test_conformance_through_the_entry_point(plugin) -> None:
    [entry] = [e for e in installed_plugins() if e.name == "swag"]
    assert entry.target == "stadapt_swag:plugin" and entry.distribution.startswith("stadapt ")
    assert type(plugin).__module__ == "stadapt_swag.plugin" and plugin.test_variant == "tiny"
    results = assert_conformant(plugin)
    assert len(results) >= 7 and all(r.ok for r in results)
    assert "decomposition matches the model's own forward" in [r.name for r in results]


def test_variants_name_the_family_sizes_and_release_tags(plugin) -> None:
    variants = plugin.variants()
    sizes = {"ViT-B-16": 224, "ViT-L-16": 224, "ViT-H-14": 224, "ViT-B-16-384": 384, "ViT-L-16-512": 512,
             "ViT-H-14-518": 518, "tiny": 32}
    assert {name: info.image_size for name, info in variants.items()} == sizes
    for name, info in variants.items():
        assert info.name == name and info.family == "SWAG ViT" and info.interpolation == "bicubic", name
        assert info.mean == IMAGENET_MEAN and info.std == IMAGENET_STD, name
    patches = {name: info.patch_size for name, info in variants.items()}
    assert patches == {"ViT-B-16": 16, "ViT-L-16": 16, "ViT-H-14": 14, "ViT-B-16-384": 16, "ViT-L-16-512": 16,
                       "ViT-H-14-518": 14, "tiny": 8}
    # the IG-3.6B trunks at 224 px are tagged `swag`; the end-to-end ImageNet-1k fine-tunes `swag_in1k`
    tags = {name: plugin.pretrained_tags(name) for name in variants}
    assert tags == {"ViT-B-16": ("swag",), "ViT-L-16": ("swag",), "ViT-H-14": ("swag",),
                    "ViT-B-16-384": ("swag_in1k",), "ViT-L-16-512": ("swag_in1k",), "ViT-H-14-518": ("swag_in1k",),
                    "tiny": ()}
    # SWAG's own names are aliases
    assert parse_backbone("swag:ViT-H/14")[1].name == "ViT-H-14"
    assert parse_backbone("swag:vit_l16_in1k")[1].name == "ViT-L-16-512"


def test_torchvision_weights_give_torchvisions_features(plugin, tmp_path: Path) -> None:
    source = _torchvision_tiny()
    path = tmp_path / "vit_tiny_swag_e2e.pth"
    torch.save(source.state_dict(), path)  # heads.head.* included, as torchvision's SWAG weights have
    backbone, report = _loaded(plugin, path)
    assert report.ignored == HEAD_KEYS and not report.unexpected  # the head is reported, not an error
    assert report.loaded == len(backbone.state_dict())
    source.heads = nn.Identity()
    images = _images()
    with torch.no_grad():
        expected = source(images)  # torchvision's features: the class token after its final norm
        torch.testing.assert_close(backbone.native_forward(images), expected)
        # the video model on 1-frame clips, adapters at their identity init: frame_features + video_norm
        # give the same feature
        torch.manual_seed(0)
        video = VideoClassifier(backbone, num_classes=3, num_frames=1, dropout=0.0,
                                adapter=AdapterConfig(bottleneck=16, positions=("pre_attn", "pre_mlp"))).eval()
        torch.testing.assert_close(video.forward_features(images.unsqueeze(2)), expected)


def test_swag_release_file_with_an_in1k_head_loads(plugin, tmp_path: Path) -> None:
    source = _swag_tiny(plugin, seed=1)
    released = {**source.state_dict(), "head.weight": torch.randn(1000, 64), "head.bias": torch.zeros(1000)}
    torch.save(released, tmp_path / "vit_tiny.torch")
    backbone, report = _loaded(plugin, tmp_path / "vit_tiny.torch")
    assert report.loaded == len(source.state_dict()) and report.ignored == HEAD_KEYS and not report.unexpected
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(backbone.native_forward(images), source(images))


def test_classy_vision_task_checkpoint_loads_its_trunk(plugin, tmp_path: Path) -> None:
    source = _swag_tiny(plugin, seed=2)
    checkpoint = {"classy_state_dict": {"train": True, "phase_idx": 3,
                                        "base_model": {"model": {"trunk": source.state_dict(), "heads": {}}}}}
    torch.save(checkpoint, tmp_path / "checkpoint.torch")
    built = build_model(ModelConfig("swag:tiny", num_classes=4, num_frames=2), tmp_path / "checkpoint.torch")
    assert built.load_report.loaded == len(source.state_dict()) and not built.load_report.unexpected
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(built.model.backbone.native_forward(images), source(images))

    no_trunk = {"classy_state_dict": {"train": True, "phase_idx": 3, "base_model": {"model": {"heads": {}}}}}
    torch.save(no_trunk, tmp_path / "no_trunk.torch")
    with pytest.raises(WeightsError, match=r"no_trunk\.torch is a classy-vision checkpoint without a model trunk"):
        build_model(ModelConfig("swag:tiny", num_classes=4, num_frames=2), tmp_path / "no_trunk.torch")


def test_wrong_size_and_wrong_family_name_the_shapes(plugin, tmp_path: Path) -> None:
    narrower = _torchvision_tiny(hidden_dim=32, mlp_dim=128)  # swag:tiny is 64 wide
    torch.save(narrower.state_dict(), tmp_path / "narrower.pth")
    with pytest.raises(WeightsError) as exc:
        _loaded(plugin, tmp_path / "narrower.pth")
    assert "vit.class_token expects (1, 1, 64) but the file has (1, 1, 32)" in str(exc.value)
    assert "pick the matching variant" in str(exc.value)

    from helpers import tiny_visual

    torch.save(tiny_visual().state_dict(), tmp_path / "clip_tiny.pt")  # an open_clip vision tower
    with pytest.raises(WeightsError) as exc:
        _loaded(plugin, tmp_path / "clip_tiny.pt")
    message = str(exc.value)
    assert "expected e.g. vit.class_token (1, 1, 64)" in message
    assert "the file has instead e.g. vit.class_embedding (128,)" in message
    assert "belongs to another model family" in message


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
    assert "Traceback" not in done.stdout + done.stderr


class _Exploit:
    """Unpickling this would run a shell command."""

    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_pickled_code_is_refused(plugin, tmp_path: Path) -> None:
    _Exploit.marker = tmp_path / "pwned"
    source = _swag_tiny(plugin)
    evil = {"classy_state_dict": {"base_model": {"model": {"trunk": source.state_dict(), "hook": _Exploit()}}}}
    torch.save(evil, tmp_path / "evil.torch")
    with pytest.raises(WeightsError, match=r"refusing to load .*evil\.torch: it pickles the Python object "
                                           r"(posix|os)\.system"):
        plugin.read_weights(tmp_path / "evil.torch", "tiny")
    assert not _Exploit.marker.exists()


# name -> torchvision builder of the same architecture, for the parameter count
FULL_SIZE = {"ViT-B-16": "vit_b_16", "ViT-L-16": "vit_l_16", "ViT-H-14": "vit_h_14", "ViT-B-16-384": "vit_b_16",
             "ViT-L-16-512": "vit_l_16", "ViT-H-14-518": "vit_h_14"}


@pytest.mark.parametrize("variant", list(FULL_SIZE))
def test_full_size_variants_count_like_torchvision(plugin, variant: str) -> None:
    import torchvision

    info = plugin.variants()[variant]
    with torch.device("meta"):  # no memory, no init time
        model = build_model(ModelConfig(f"swag:{variant}", num_classes=5, num_frames=2)).model.eval()
        reference = getattr(torchvision.models, FULL_SIZE[variant])(image_size=info.image_size)
        # shapes only: the adapters reshape by the declared token layouts, so a wrong grid would fail here
        logits = model(torch.empty(1, 3, 2, info.image_size, info.image_size))
    assert logits.shape == (1, 5)
    ours = model.backbone
    head = sum(p.numel() for n, p in reference.named_parameters() if n.startswith("heads.head."))
    assert head > 0
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters()) - head
    assert len(ours.block_layouts()) == len(reference.encoder.layers) == info.blocks
    assert ours.feature_width == reference.hidden_dim == info.width
    assert ours.block_layouts()[0].grid == (info.image_size // info.patch_size,) * 2


@pytest.mark.slow  # a full-size ViT-B video forward
def test_full_size_vit_b_16_video_model_runs(plugin) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig("swag:ViT-B-16", num_classes=5, num_frames=2)).model.eval()
    assert len(model.adapters) == 12
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 2, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (1, 5) and bool(torch.isfinite(logits).all())


@pytest.mark.slow  # a full-size ViT-L forward
# ViT-H-14 takes 15-20 s on a 2-core CPU (8 s to build, 7-10 s per frame), the 384-518 px variants longer:
# they run on `meta` above only
@pytest.mark.parametrize("variant", ["ViT-L-16"])
def test_full_size_backbone_runs_one_frame(plugin, variant: str) -> None:
    torch.manual_seed(0)
    backbone = plugin.build(variant).eval()
    with torch.no_grad():
        features = backbone.native_forward(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert features.shape == (1, plugin.variants()[variant].width)
    assert bool(torch.isfinite(features).all())


def test_pretrained_tags_resolve_or_name_the_download(plugin, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(WeightsError, match="has no pretrained tag 'laion2b'.*tags: swag;"):
        plugin.resolve_pretrained("ViT-B-16", "laion2b")
    with pytest.raises(WeightsError, match="tags: swag_in1k;"):
        plugin.resolve_pretrained("ViT-H-14-518", "swag")
    with pytest.raises(WeightsError, match="tags: none;"):
        plugin.resolve_pretrained("tiny", "swag")

    # a file already in torch.hub's cache is used as it is
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cached"))
    cached = tmp_path / "cached" / "hub" / "checkpoints" / "swag" / "vit_b16.torch"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert plugin.resolve_pretrained("ViT-B-16", "swag") == cached

    # without a network the error names the URL to fetch. A child process whose proxy refuses every
    # connection stands in for "offline": it fails at once and never downloads the real file, even where
    # a network exists (urllib caches its proxy settings per process, hence not this one).
    empty = tmp_path / "empty"
    env = {**os.environ, "TORCH_HOME": str(empty), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    code = ("from stadapt_swag import plugin\n"
            "from stadapt.errors import WeightsError\n"
            "try:\n    plugin.resolve_pretrained('ViT-L-16-512', 'swag_in1k')\n"
            "except WeightsError as exc:\n    print('WeightsError:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("WeightsError: could not download swag:ViT-L-16-512 weights 'swag_in1k'")
    assert "download https://dl.fbaipublicfiles.com/SWAG/vit_l16_in1k.torch elsewhere" in done.stdout
    assert list((empty / "hub" / "checkpoints" / "swag").iterdir()) == []  # no partial file left to be reused
