"""The clip plugin, open-ended: any open_clip model whose vision tower is a ViT (open_clip's own, or a timm
tower), by open_clip name or `hf-hub:ORG/NAME` read through a Hugging Face cache the test lays out in
huggingface_hub's documented layout (HF_HUB_OFFLINE=1: nothing is downloaded). The models are built by
open_clip's own constructor from small configurations; their weights files are open_clip's own state dicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import perturb_layer_norms, run_cli
from torch import nn

from stadapt.data.synthetic import SyntheticSpec, write_synthetic

# a text tower as open_clip's tokenizer needs it (its 49,408-token vocabulary): the conformance suite embeds text
TEXT = {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
REPOS = {
    # an OpenCLIP-style ViT trained with GELU (no -quickgelu), with its own preprocessing
    "stadapt-test/tiny-gelu": {
        "model_cfg": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                                                      "patch_size": 8}, "text_cfg": TEXT},
        "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic"},
    },
    # a SigLIP-style model: timm ViT tower with an attention-pool (map) head and no projection
    "stadapt-test/tiny-siglip": {
        "model_cfg": {"embed_dim": 96, "custom_text": True,
                      "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit3", "timm_model_pretrained": False,
                                     "timm_pool": "map", "timm_proj": "none"}, "text_cfg": TEXT},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"},
    },
}
GELU, TIMM = (f"clip:hf-hub:{repo}" for repo in REPOS)
REVISION = "0123456789abcdef0123456789abcdef01234567"

RECIPE = """\
backbone:
  name: {backbone}
  weights: hf-hub
adapter:
  bottleneck: 16
  positions: [pre_attn, pre_mlp]
model:
  dropout: 0.0
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: 1.0e-2
  batch_size: 2
  micro_batch: 2
  steps: 3
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 100
  save_every: 100
"""


def _open_clip_model(config_dir: Path) -> nn.Module:
    """The whole CLIP model of an open_clip configuration folder, by open_clip's own constructor."""
    import open_clip

    torch.manual_seed(0)
    return perturb_layer_norms(open_clip.create_model(f"local-dir:{config_dir}", load_weights=False))


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A Hugging Face cache holding both repositories (config + open_clip_model.safetensors), the
    environment that points the console script at it offline, and the open_clip models written there."""
    from safetensors.torch import save_file

    cache = tmp_path_factory.mktemp("hf") / "hub"
    models = {}
    for repo, config in REPOS.items():
        folder = cache / f"models--{repo.replace('/', '--')}"
        snapshot = folder / "snapshots" / REVISION
        snapshot.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(REVISION)
        (snapshot / "open_clip_config.json").write_text(json.dumps(config))
        model = _open_clip_model(snapshot)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(snapshot / "open_clip_model.safetensors"))
        models[repo] = model
    return {"env": {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}, "cache": cache, "models": models}


@pytest.fixture()
def offline_cache(hub: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The same cache for in-process calls."""
    _use_cache_in_process(hub, monkeypatch)
    return hub


def _weights(hub: dict, repo: str) -> Path:
    return hub["cache"] / f"models--{repo.replace('/', '--')}" / "snapshots" / REVISION / "open_clip_model.safetensors"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips") / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=10,
                                        size=32, clutter=4))
    return root


def _ok(done) -> None:
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("backbone", [GELU, TIMM], ids=["open_clip_vit_gelu", "timm_tower_siglip"])
def test_every_command_works_with_the_family(backbone: str, hub: dict, clips: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Conformance (features equal open_clip's own forward), 3 training steps from the hub cache's weights,
    reload with identical logits, ONNX verified in onnxruntime, visualize's PNG: all offline."""
    from stadapt.backbones import load_plugin
    from stadapt.model.conformance import assert_conformant

    _use_cache_in_process(hub, monkeypatch)  # the commands below run in this process, offline from the cache
    assert_conformant(load_plugin("clip"), backbone.split(":", 1)[1])

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(backbone=backbone, root=json.dumps(str(clips))))
    run = tmp_path / "run"
    _ok(run_cli("train", str(recipe), f"output.dir={run}", "-q"))
    checkpoint = run / "checkpoints" / "last"
    meta = json.loads((checkpoint / "stadapt.json").read_text())
    assert meta["model"]["backbone"] == backbone and meta["backbone_weights"]["source"] == "hf-hub"

    exported = run_cli("export", "--onnx", "--checkpoint", str(run), "--out", str(tmp_path / "m.onnx"), "--verify")
    _ok(exported)
    assert "verified with onnxruntime" in exported.stdout
    video = clips / (clips / "val.txt").read_text().split()[0]
    png = tmp_path / "attention.png"
    _ok(run_cli("visualize", str(video), "--checkpoint", str(run), "--out", str(png), "-q"))
    assert png.stat().st_size > 0

    _assert_reload_gives_identical_logits(checkpoint, hub, backbone)


def _use_cache_in_process(hub: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's cache for in-process calls (huggingface_hub reads its environment when imported)."""
    from huggingface_hub import constants

    from stadapt_clip.models import open_clip_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub["env"]["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    open_clip_model.cache_clear()


def _assert_reload_gives_identical_logits(checkpoint: Path, hub: dict, backbone: str) -> None:
    """load_model (weights through the hub cache) against the model built from the plain weights file."""
    from safetensors.torch import load_file

    from stadapt.api import load_model
    from stadapt.checkpoints.format import load_trainable
    from stadapt.model.classifier import ModelConfig, build_model

    loaded = load_model(checkpoint, device="cpu")
    meta = json.loads((checkpoint / "stadapt.json").read_text())
    built = build_model(ModelConfig.from_dict(meta["model"]), _weights(hub, backbone.split("hf-hub:")[1])).model
    load_trainable(built, load_file(str(checkpoint / "trainable.safetensors")), str(checkpoint))
    size = REPOS[backbone.split("hf-hub:")[1]]["model_cfg"]["vision_cfg"]["image_size"]
    clip = torch.randn(1, 3, 4, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(clip), built.eval()(clip))


@pytest.mark.parametrize("repo", list(REPOS))
def test_open_clip_state_dict_loads_whole_and_features_match_open_clip(repo: str, offline_cache: dict) -> None:
    """The file open_clip's own model wrote loads with no missing or unexpected key, and the backbone's
    per-frame features equal open_clip's image tower (before its projection) within 1e-5: a GELU model
    is built with GELU because its name says so, not QuickGELU."""
    from stadapt.model.classifier import ModelConfig, build_model

    built = build_model(ModelConfig(f"clip:hf-hub:{repo}", 3, 1, adapter=None), _weights(offline_cache, repo))
    assert built.load_report.unexpected == []
    assert "quick_gelu" not in built.config.backbone_options
    visual = offline_cache["models"][repo].visual
    size = REPOS[repo]["model_cfg"]["vision_cfg"]["image_size"]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    backbone = built.model.backbone.eval()
    with torch.no_grad():
        if hasattr(visual, "trunk"):  # timm tower: the trunk's pooled feature, before open_clip's head
            expected = visual.trunk.forward_head(visual.trunk.forward_features(images), pre_logits=True)
        else:
            proj, visual.proj = visual.proj, None
            expected = visual(images)
            visual.proj = proj
        x = backbone.embed(images)
        for index in range(len(backbone.block_layouts())):
            x = x + backbone.attn_branch(index, x)
            x = x + backbone.mlp_branch(index, x)
        ours = backbone.video_norm(backbone.frame_features(x))
    assert (ours - expected).abs().max() <= 1e-5
    assert built.variant.mean == tuple(REPOS[repo]["preprocess_cfg"]["mean"])
    assert built.variant.image_size == size


def test_gelu_weights_are_never_built_as_quick_gelu_unasked(hub: dict, tmp_path: Path, clips: Path) -> None:
    """A plain state dict for a curated variant (whose name does not say the activation) is refused with the
    two choices; an open_clip name decides (`-quickgelu` or not); the user's option decides otherwise."""
    from stadapt.backbones import load_plugin

    weights = _weights(hub, "stadapt-test/tiny-gelu")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(backbone="clip:ViT-B-16", root=json.dumps(str(clips))).replace(
        "weights: hf-hub", f"weights: {json.dumps(str(weights))}"))
    asked = run_cli("train", str(recipe), f"output.dir={tmp_path / 'run'}", "-q")
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    assert "quick_gelu: true" in asked.stderr and "quick_gelu: false" in asked.stderr
    assert "clip:ViT-B-16-quickgelu" in asked.stderr
    said = run_cli("train", str(recipe), f"output.dir={tmp_path / 'run'}", "backbone.options.quick_gelu=false", "-q")
    assert said.returncode == 2 and "visual.class_embedding expects (768,) but the file has (64,)" in said.stderr

    plugin = load_plugin("clip")
    with torch.device("meta"):
        gelu = plugin.build("ViT-B-32").visual.transformer.resblocks[0].mlp.gelu
        quick = plugin.build("ViT-B-32-quickgelu").visual.transformer.resblocks[0].mlp.gelu
    assert type(gelu) is nn.GELU and type(quick).__name__ == "QuickGELU"


def test_weights_of_another_architecture_name_expected_and_found_shapes(hub: dict) -> None:
    from stadapt.errors import WeightsError
    from stadapt.model.classifier import ModelConfig, build_model

    with pytest.raises(WeightsError, match=r"visual\.class_embedding expects \(128,\) but the file has \(64,\)"):
        build_model(ModelConfig("clip:tiny", 3, 1), _weights(hub, "stadapt-test/tiny-gelu"))


def test_full_size_names_count_instantly_and_curated_counts_stay() -> None:
    """`backbones --params` builds on the meta device: full-size names of each family count at once."""
    from stadapt.model.adapters import AdapterConfig
    from stadapt.tools.bench.params import parameter_report

    done = run_cli("backbones", "--params", "clip:ViT-bigG-14", "--json")
    _ok(done)
    assert json.loads(done.stdout)["with_adapters"] == {"total": 1_904_957_072, "trainable": 62_179_728}
    expected = {"ViT-B-16": (93_217_168, 7_417_744), "ViT-B-16-quickgelu": (93_217_168, 7_417_744),
                "ViT-H-14": (662_838_160, 32_072_080), "ViT-B-16-SigLIP2": (100_301_968, 7_417_744),
                "PE-Core-B-16": (100_304_272, 7_417_744), "EVA02-B-16": (93_287_056, 7_417_744)}
    for name, counts in expected.items():
        report = parameter_report(f"clip:{name}", adapter=AdapterConfig(), num_classes=400)
        assert (report["with_adapters"]["total"], report["with_adapters"]["trainable"]) == counts, name


def test_check_passes_on_a_full_size_model() -> None:
    done = run_cli("backbones", "--check", "clip:ViT-B-32")
    _ok(done)
    assert "FAIL" not in done.stdout


@pytest.mark.parametrize(("name", "expected"), [
    ("ViT-B-61", "did you mean 'ViT-B-16'"),  # a typo
    ("RN50", "clip:RN50 cannot be adapted: its vision tower is a ResNet (a CNN)"),
])
def test_bad_names_are_one_line_with_the_closest_names(name: str, expected: str) -> None:
    done = run_cli("backbones", "--params", f"clip:{name}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert expected in done.stderr, done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("stadapt: error")]) == 1


def test_unknown_and_unadaptable_names_say_why() -> None:
    from stadapt.backbones import parse_backbone
    from stadapt.errors import UnknownBackboneError

    with pytest.raises(UnknownBackboneError, match=r"no variant 'ViT-B-16-SigLIP3'.*did you mean 'ViT-B-16-SigLIP2?'"):
        parse_backbone("clip:ViT-B-16-SigLIP3")
    with pytest.raises(UnknownBackboneError, match=r"timm's convnext_base, not a ViT or EVA"):
        parse_backbone("clip:convnext_base")


def test_hub_name_without_cache_or_network_names_the_file_to_fetch(tmp_path: Path) -> None:
    done = run_cli("backbones", "--params", "clip:hf-hub:stadapt-test/absent",
                   env={"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "open_clip_config.json" in done.stderr and "stadapt-test/absent" in done.stderr
    assert "https://huggingface.co/stadapt-test/absent/resolve/main/open_clip_config.json" in done.stderr
