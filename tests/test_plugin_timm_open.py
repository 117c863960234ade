"""The timm plugin, open-ended: any timm ViT (DINOv2 registers, SigLIP attention pool), Eva (rotary
embeddings) or SwinV2 by name, sized down with timm.create_model's own arguments (backbone options).

Reference models come from `timm.create_model` directly, with perturbed norms and layer scales so that a
skipped or misplaced one shows; weight files are written from them; every comparison is against timm's
own forward pass. One CLI chain per family (train, export --onnx --verify, visualize)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from helpers import perturb_layer_norms, run_cli
from torch import nn

from stadapt.backbones import load_plugin, parse_backbone
from stadapt.errors import UnknownBackboneError, WeightsError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.model.conformance import assert_conformant

VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}
FAMILIES = {  # timm name -> the small configuration's create_model arguments (= stadapt backbone options)
    "vit_small_patch14_reg4_dinov2": VIT,  # class token + 4 registers, layer scale, token pooling
    "vit_base_patch16_siglip_224": VIT,  # no class token, attention-pool (MAP) head
    "eva02_tiny_patch14_224": VIT,  # Eva: rotary position embeddings, SwiGLU, fc_norm over the mean token
    "swinv2_tiny_window8_256": {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [2, 2],
                                "num_heads": [1, 2]},  # post-norm blocks, NHWC stages
}
BOTH = AdapterConfig(bottleneck=8, positions=("pre_attn", "pre_mlp"))


@pytest.fixture(scope="module")
def plugin():
    return load_plugin("timm")


def _reference(name: str, seed: int = 0, **overrides) -> nn.Module:
    """timm's own model of the small configuration WITH a 7-class head (as released files have), norms
    and layer scales perturbed (DINOv2's layer scale starts at 1e-5, SwinV2's post-norms at 0)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=7, **{**FAMILIES[name], **overrides})
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.endswith(("gamma", "gamma_1", "gamma_2")) or (key.endswith("norm1.weight") and "swinv2" in name):
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=generator))
    return perturb_layer_norms(model, seed + 100)


def _features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """timm's image features: what its classifier head sees."""
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def _images(count: int, size: int = 32, seed: int = 5) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _safetensors(model: nn.Module, path: Path) -> Path:
    """The hub's model.safetensors of timm/<name>.<tag>: timm keys, head included."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


class _Sized:
    """The timm plugin with a small configuration's options on every build, so that the conformance suite
    (which builds `plugin.build(variant)` and resolves the variant itself) checks the small model."""

    def __new__(cls, plugin, name: str):
        options = FAMILIES[name]

        class Sized(type(plugin)):
            def build(self, variant, **more):
                return super().build(variant, **{**options, **more})

            def resolve_variant(self, wanted):
                info = super().resolve_variant(wanted)
                return self.configure(info, options) if info is not None else None

        return Sized()


# --- 1. each family: conformance, timm's own forward, weights, attention --------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_conformance_of_a_small_configuration(plugin, name: str) -> None:
    results = assert_conformant(_Sized(plugin, name), name)
    assert all(r.ok for r in results) and f"checking {name}" in results[0].detail


@pytest.mark.parametrize("name", list(FAMILIES))
def test_features_equal_timms_forward_and_the_file_loads_without_a_missing_key(name: str, tmp_path: Path) -> None:
    source = _reference(name)
    built = build_model(ModelConfig(f"timm:{name}", 3, 1, BOTH, dropout=0.0, backbone_options=FAMILIES[name]),
                        weights=_safetensors(source, tmp_path / "model.safetensors"))
    report = built.load_report
    assert report.loaded == len(built.model.backbone.state_dict()) and not report.unexpected
    assert report.ignored and all(k.startswith("model.head") for k in report.ignored)  # the 7-class head
    images = _images(3)
    with torch.no_grad():  # adapters (before attention and MLP) at init; 3 clips of 1 frame
        features = built.model.eval().forward_features(images.unsqueeze(2))
    expected = _features(source, images)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)
    plain = _reference(name, seed=0)
    for module in plain.modules():  # identity norms: shows that the norms matter in this comparison
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    assert not torch.allclose(_features(plain, images), expected, atol=1e-3)


@pytest.mark.parametrize("name", [n for n in FAMILIES if "swin" not in n])
def test_block_attention_is_timms_own_attention(plugin, name: str) -> None:
    """The [CLS] query's attention (the mean query's for SigLIP, which has no class token), from the
    block's projections, q/k norms and rotary embedding: timm's unfused softmax, averaged over heads."""
    backbone = plugin.build(name, **FAMILIES[name]).eval()
    source = _reference(name)
    backbone.model.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("head")})
    x = backbone.embed(_images(2))
    last = len(backbone.block_layouts()) - 1
    for index in range(last):
        x = x + backbone.attn_branch(index, x)
        x = x + backbone.mlp_branch(index, x)
    block = backbone.model.blocks[last]
    captured: list[torch.Tensor] = []
    hook = block.attn.attn_drop.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    block.attn.fused_attn = False  # timm's own softmax path, where attn_drop sees the probabilities
    with torch.no_grad():
        block(x, rope=backbone._rope(last)) if "eva" in name else block(x)
        ours = backbone.block_attention(last, x)
    hook.remove()
    probs = captured[0]  # (N, heads, L, L)
    expected = probs.mean(dim=(1, 2)) if "siglip" in name else probs[:, :, 0].mean(dim=1)
    assert ours.shape == (2, x.shape[1])
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


def test_position_embeddings_of_another_size_are_resampled_with_a_notice(tmp_path: Path) -> None:
    from timm.layers import resample_abs_pos_embed

    name = "vit_small_patch14_reg4_dinov2"
    source = _reference(name)  # 32 px: a 4x4 grid
    path = _safetensors(source, tmp_path / "model.safetensors")
    options = {**VIT, "img_size": 48}  # 6x6
    with pytest.warns(UserWarning, match=r"position embeddings .* 4x4 patch grid\) were resampled to this "
                                         r"backbone's 6x6 grid \(48 px"):
        built = build_model(ModelConfig(f"timm:{name}", 3, 1, BOTH, backbone_options=options), weights=path)
    assert built.variant.image_size == 48
    ours = built.model.backbone.model.pos_embed
    # DINOv2-with-registers embeds positions of the patch tokens only (no_embed_class): no prefix rows
    assert source.pos_embed.shape == (1, 16, 64) and ours.shape == (1, 36, 64)
    theirs = resample_abs_pos_embed(source.pos_embed, new_size=(6, 6), num_prefix_tokens=0)
    torch.testing.assert_close(ours, theirs)


def test_a_file_of_another_architecture_names_expected_and_found_shapes(tmp_path: Path) -> None:
    wider = _reference("eva02_tiny_patch14_224", embed_dim=32, num_heads=2)
    with pytest.raises(WeightsError) as exc:
        build_model(ModelConfig("timm:eva02_tiny_patch14_224", 3, 1, BOTH, backbone_options=VIT),
                    weights=_safetensors(wider, tmp_path / "wider.safetensors"))
    assert "model.patch_embed.proj.weight expects (64, 3, 8, 8) but the file has (32, 3, 8, 8)" in exc.value.message
    patch = _reference("eva02_tiny_patch14_224", patch_size=4)  # timm's filter would resample it: refused
    with pytest.raises(WeightsError, match=r"patch_embed.proj.weight expects \(64, 3, 8, 8\) but the file has "
                                           r"\(64, 3, 4, 4\)"):
        build_model(ModelConfig("timm:eva02_tiny_patch14_224", 3, 1, BOTH, backbone_options=VIT),
                    weights=_safetensors(patch, tmp_path / "patch.safetensors"))


# --- 2. names: metadata from timm's config, instant counts, bad names ---------------------------------


def test_input_settings_come_from_timms_pretrained_config(plugin) -> None:
    import timm

    for name in ("vit_base_patch14_dinov2", "vit_base_patch16_siglip_224", "eva02_base_patch14_224.mim_in22k",
                 "swinv2_base_window8_256"):
        info = parse_backbone(f"timm:{name}")[1]
        cfg = timm.models.get_pretrained_cfg(name)
        assert (info.image_size, info.mean, info.std, info.interpolation) == (
            cfg.input_size[-1], tuple(cfg.mean), tuple(cfg.std), cfg.interpolation), name
    dino = parse_backbone("timm:vit_small_patch14_reg4_dinov2")[1]
    assert (dino.width, dino.blocks, dino.patch_size, dino.prefix_tokens, dino.family) == (384, 12, 14, 5, "ViT")
    sized = parse_backbone("timm:vit_small_patch14_reg4_dinov2", {"img_size": 224})[1]
    assert sized.image_size == 224 and sized.mean == dino.mean
    swin = parse_backbone("timm:swinv2_tiny_window8_256")[1]
    assert (swin.width, swin.blocks, swin.patch_size, swin.prefix_tokens, swin.family) == (768, 12, 4, 0, "SwinV2")
    curated = plugin.variants()  # the curated variants keep their names, now with typed sizes
    for name, info in curated.items():
        assert plugin.configure(info, {"img_size": info.image_size}) == info, name
    found = plugin.search("*dinov2*")
    assert "vit_small_patch14_reg4_dinov2" in found and "vit_small_patch14_dinov2" in found
    assert not plugin.search("resnet*") and "vit_small_patch16_18x2_224" not in plugin.search("vit_small*")


PARAMS = {  # full size, 400 classes, 1 adapter per block (bottleneck 384): (total, trainable)
    "vit_base_patch14_dinov2": (93_997_456, 7_417_744),
    "vit_base_patch16_siglip_224": (100_301_968, 7_417_744),
    "eva02_base_patch14_224": (93_176_464, 7_417_744),
    "swinv2_base_window8_256": (96_602_504, 9_708_688),
}


def test_params_of_full_size_names_are_instant_and_check_passes_at_full_size() -> None:
    from stadapt.tools.bench.params import parameter_report

    for name, counts in PARAMS.items():
        start = time.perf_counter()
        report = parameter_report(f"timm:{name}", adapter=AdapterConfig(), num_classes=400)
        assert time.perf_counter() - start < 5, name  # meta device: nothing allocated
        assert (report["with_adapters"]["total"], report["with_adapters"]["trainable"]) == counts, name
    shown = run_cli("backbones", "--params", "timm:vit_base_patch14_dinov2", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["with_adapters"] == {"total": 93_997_456, "trainable": 7_417_744}
    checked = run_cli("backbones", "--check", "timm:vit_small_patch16_224")  # full size; 518 px DINOv2: 2 min
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout and checked.stdout.count("PASS") >= 8
    assert "checking vit_small_patch16_224" in checked.stdout


@pytest.mark.parametrize(("name", "said"), [
    ("vit_base_patch16_dinov2", "did you mean 'vit_base_patch16_dinov3', 'vit_base_patch14_dinov2'"),  # a typo
    ("resnet50", "it is a ResNet, not a transformer"),  # a CNN
    ("vit_base_r50_s16_224", "it is a hybrid: a HybridEmbed (a CNN stem)"),
    ("no_such_model_at_all", "has no variant 'no_such_model_at_all'"),
])
def test_bad_names_are_one_line_with_the_closest_names(name: str, said: str) -> None:
    done = run_cli("backbones", "--params", f"timm:{name}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and said in done.stderr, done.stderr
    if "ResNet" in said or "hybrid" in said:
        assert "the timm plugin adapts ViT" in done.stderr and "Swin / SwinV2" in done.stderr


def test_unknown_tag_and_reserved_options_are_refused(plugin) -> None:
    with pytest.raises(UnknownBackboneError, match="has no pretrained tag 'nope'; .*tags: lvd142m"):
        parse_backbone("timm:vit_small_patch14_dinov2.nope")
    with pytest.raises(UnknownBackboneError, match="pretrained are set by stadapt"):
        parse_backbone("timm:vit_small_patch14_dinov2", {"pretrained": True})
    with pytest.raises(UnknownBackboneError, match="timm could not build .* no_such_argument"):
        parse_backbone("timm:vit_small_patch14_dinov2", {"no_such_argument": 1})


# --- 3. hub tags from huggingface_hub's cache, offline ------------------------------------------------


def _hub_cache(root: Path, repo: str, source: nn.Module) -> Path:
    """huggingface_hub's documented cache layout: models--ORG--NAME/{refs/main, snapshots/<rev>/FILE}."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    _safetensors(source, snapshot / "model.safetensors")
    return root


def test_a_tag_resolves_offline_from_the_cache_and_names_the_file_without_it(plugin, tmp_path: Path,
                                                                             monkeypatch) -> None:
    import huggingface_hub.constants as hub

    name = "vit_small_patch14_reg4_dinov2"
    cache = _hub_cache(tmp_path / "hub", f"timm/{name}.lvd142m", _reference(name))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    path = plugin.resolve_pretrained(f"{name}.lvd142m", "lvd142m")
    assert path.name == "model.safetensors" and cache in path.parents
    assert plugin.resolve_pretrained(name, "lvd142m") == path
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError) as exc:
        plugin.resolve_pretrained("vit_small_patch14_dinov2", "lvd142m")
    assert ("timm:vit_small_patch14_dinov2 weights 'lvd142m' file model.safetensors" in exc.value.message
            and "neither in the Hugging Face cache nor downloadable" in exc.value.message)
    assert ("https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/model.safetensors"
            in exc.value.hint and "pass the local path" in exc.value.hint)
    with pytest.raises(WeightsError, match="use backbone timm:vit_small_patch14_dinov2.lvd142m"):
        plugin.resolve_pretrained("vit_small_patch14_dinov2.other", "lvd142m")


# --- 4. every command, one CLI chain per family -------------------------------------------------------

RECIPE = """\
backbone:
  name: {backbone}
  weights: {weights}
  options: {options}
adapter: {adapter}
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
  batch_size: 4
  steps: 3
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 3
  save_every: 100
output:
  dir: {run}
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    root = tmp_path_factory.mktemp("timm_open") / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=10,
                                        size=32, clutter=4))
    return root


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_command_runs_with_the_family(name: str, clips: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    options = dict(FAMILIES[name])
    backbone, weights = f"timm:{name}", str(_safetensors(_reference(name, seed=3), tmp_path / "model.safetensors"))
    if "dinov2" in name:  # DINOv2 through its pretrained tag, from a hub cache, offline, at another input size
        backbone, weights, options["img_size"] = f"timm:{name}.lvd142m", "lvd142m", 40
        env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(_hub_cache(tmp_path / "hub", f"timm/{name}.lvd142m",
                                                                         _reference(name, seed=3)))}
    adapter = {"bottleneck_ratio": 0.5} if "swin" in name else {"bottleneck": 16}
    run = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(backbone=backbone, weights=json.dumps(weights), options=json.dumps(options),
                                    adapter=json.dumps({**adapter, "positions": ["pre_attn", "pre_mlp"]}),
                                    root=json.dumps(str(clips)), run=json.dumps(str(run))))
    trained = run_cli("train", str(recipe), "-q", env=env, cwd=tmp_path)  # DINOv2: a process, offline by env
    if env:  # the other commands in this process, pointed at the same cache (huggingface_hub reads its
        from huggingface_hub import constants  # environment when imported)

        monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert trained.returncode == 0, trained.stderr
    if "dinov2" in name:
        assert "4x4 patch grid) were resampled to this backbone's 5x5 grid (40 px" in trained.stderr
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in events if e["split"] == "train") == 3
    meta = json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())
    assert meta["model"]["backbone_options"] == options

    exported = run_cli("export", "--onnx", "--checkpoint", str(run), "--verify", "--out", str(tmp_path / "m.onnx"),
                       cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "verif" in exported.stdout.lower() and (tmp_path / "m.onnx").is_file()
    assert "dynamo exporter" in exported.stdout and "TorchScript" not in exported.stdout  # no fallback needed

    if "eva" in name:  # the reloaded checkpoint evaluates as the trained model did at its last step
        evaluated = run_cli("eval", str(run), "--views", "1x1", "--out", str(tmp_path / "eval.json"), "-q",
                            cwd=tmp_path)
        assert evaluated.returncode == 0, evaluated.stderr
        [val] = [e for e in events if e["split"] == "val"]
        assert json.loads((tmp_path / "eval.json").read_text())["top1"] == val["top1"]

    video = clips / (clips / "val.txt").read_text().split()[0]
    png = tmp_path / "attention.png"
    shown = run_cli("visualize", str(video), "--checkpoint", str(run), "--out", str(png), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr  # Swin too: its windows' mean-query attention
    assert png.stat().st_size > 0
