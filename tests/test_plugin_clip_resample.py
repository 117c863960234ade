"""The clip plugin's `image_size` option: an open_clip ViT built for another input size, and a weights file
whose position embedding has another patch grid resampled to it (class token kept, grid bicubic, as
open_clip's own `resize_pos_embed` does) with a printed notice; a file of another architecture is still
refused naming its shapes. The models are open_clip's own (`create_model` of a small configuration read
from a Hugging Face cache the test lays out, offline); every comparison is against open_clip's forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import perturb_layer_norms, run_cli
from torch import nn

from stadapt.errors import StadaptError, WeightsError
from stadapt.model.classifier import ModelConfig, build_model

TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
VISION = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}  # a 4x4 grid
REPOS = {
    "stadapt-test/resample-gelu": {"embed_dim": 32, "vision_cfg": VISION, "text_cfg": TEXT},
    # another architecture: width 96
    "stadapt-test/resample-wide": {"embed_dim": 32, "vision_cfg": {**VISION, "width": 96}, "text_cfg": TEXT},
}
NAME = "clip:hf-hub:stadapt-test/resample-gelu"
# a timm tower (SigLIP-style): its size is the timm model's, so image_size does not apply (configuration only)
TIMM_REPO = "stadapt-test/resample-timm"
TIMM_CFG = {"embed_dim": 96, "custom_text": True, "text_cfg": TEXT,
            "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit3", "timm_model_pretrained": False,
                           "timm_pool": "map", "timm_proj": "none"}}
REVISION = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A Hugging Face cache holding both repositories (config + open_clip's own state dict, GELU)."""
    import open_clip
    from safetensors.torch import save_file

    cache = tmp_path_factory.mktemp("hf") / "hub"
    files, folders = {}, {}
    for repo, model_cfg in {**REPOS, TIMM_REPO: TIMM_CFG}.items():
        folder = cache / f"models--{repo.replace('/', '--')}"
        snapshot = folder / "snapshots" / REVISION
        snapshot.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(REVISION)
        (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
        if repo == TIMM_REPO:
            continue
        torch.manual_seed(0)
        model = perturb_layer_norms(open_clip.create_model(f"local-dir:{snapshot}", load_weights=False))
        with torch.no_grad():  # a position embedding that varies smoothly and not: resampling shows
            model.visual.positional_embedding.normal_(generator=torch.Generator().manual_seed(1))
        files[repo] = snapshot / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files[repo]))
        folders[repo] = snapshot
    return {"env": {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}, "files": files, "folders": folders}


@pytest.fixture()
def offline(hub: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The test's cache for in-process calls (huggingface_hub reads its environment when imported)."""
    from huggingface_hub import constants

    from stadapt_clip.models import open_clip_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub["env"]["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    open_clip_model.cache_clear()
    return hub


def _open_clip_at(hub: dict, repo: str, size: int) -> nn.Module:
    """open_clip's own model of `repo` built for `size` px and loaded from the repository's file by open_clip's
    own loader (which resamples the position embedding)."""
    import open_clip

    model = open_clip.create_model(f"local-dir:{hub['folders'][repo]}", load_weights=False, force_image_size=size)
    open_clip.load_checkpoint(model, str(hub["files"][repo]))
    model.visual.proj = None
    return model.eval()


def test_a_file_of_another_grid_is_resampled_with_a_notice_as_open_clip_does(offline: dict) -> None:
    repo = "stadapt-test/resample-gelu"
    with pytest.warns(UserWarning, match=r"position embeddings \(visual\.positional_embedding \(17, 64\), a 4x4 "
                                         r"patch grid\) were resampled to this backbone's 6x6 grid \(48 px: "
                                         r"\(37, 64\)\)"):
        built = build_model(ModelConfig(NAME, 3, 1, adapter=None, backbone_options={"image_size": 48}),
                            offline["files"][repo])
    assert built.variant.image_size == 48 and built.config.backbone_options == {"image_size": 48}
    assert not built.load_report.unexpected
    reference = _open_clip_at(offline, repo, 48)
    ours = built.model.backbone.visual.positional_embedding
    torch.testing.assert_close(ours, reference.visual.positional_embedding, atol=0, rtol=0)
    from safetensors.torch import load_file

    original = load_file(str(offline["files"][repo]))["visual.positional_embedding"]
    assert torch.equal(ours[0], original[0])  # the class token's position is kept as it is
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    backbone = built.model.backbone.eval()
    with torch.no_grad():
        x = backbone.embed(images)
        for index in range(len(backbone.block_layouts())):
            x = x + backbone.attn_branch(index, x)
            x = x + backbone.mlp_branch(index, x)
        features = backbone.video_norm(backbone.frame_features(x))
        torch.testing.assert_close(features, reference.visual(images), atol=1e-5, rtol=0)


def test_a_file_of_another_architecture_is_refused_naming_shapes_not_resampled(offline: dict) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no resampling notice
        with pytest.raises(WeightsError, match=r"does not fit this backbone: visual\.class_embedding expects "
                                               r"\(64,\) but the file has \(96,\); visual\.conv1\.weight expects"):
            build_model(ModelConfig(NAME, 3, 1, adapter=None, backbone_options={"image_size": 48}),
                        offline["files"]["stadapt-test/resample-wide"])


def test_the_same_grid_loads_unchanged_and_without_a_notice(offline: dict) -> None:
    import warnings

    repo = "stadapt-test/resample-gelu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        built = build_model(ModelConfig(NAME, 3, 1, adapter=None), offline["files"][repo])
    assert built.variant.image_size == 32
    from safetensors.torch import load_file

    original = load_file(str(offline["files"][repo]))["visual.positional_embedding"]
    assert torch.equal(built.model.backbone.visual.positional_embedding, original)


def test_image_size_is_refused_where_it_cannot_apply(offline: dict) -> None:
    """Not a multiple of the patch size; a timm tower (timm's model name fixes its size): one clear line."""
    with pytest.raises(StadaptError, match=r"image_size 50 is not a multiple of .* patch size 8"):
        build_model(ModelConfig(NAME, 3, 1, adapter=None, backbone_options={"image_size": 50}))
    from stadapt.backbones import parse_backbone

    with pytest.raises(StadaptError, match=r"image_size 50 is not a multiple"):
        parse_backbone(NAME, {"image_size": 50})
    with pytest.raises(StadaptError, match=r"timm tower test_vit3.*image_size"):
        parse_backbone(f"clip:hf-hub:{TIMM_REPO}", {"image_size": 64})


def test_train_prints_the_notice_through_the_console_script(hub: dict, tmp_path: Path) -> None:
    """A 1-step training run from the hub cache, offline, prints the resampling notice on stderr and records
    the option in the checkpoint, so every later command rebuilds the model at that size."""
    from stadapt.data.synthetic import SyntheticSpec, write_synthetic

    root = tmp_path / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=6,
                                        size=48, clutter=2))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "backbone": {"name": NAME, "weights": "hf-hub", "options": {"image_size": 48}},
        "adapter": {"bottleneck": 8, "positions": ["pre_mlp"]},
        "data": {"root": str(root), "frames": 2, "stride": 2, "views": "1x1", "num_workers": 0},
        "optim": {"batch_size": 2, "steps": 1, "warmup_steps": 0},
        "train": {"device": "cpu", "log_every": 1, "val_every": 100, "save_every": 100},
        "output": {"dir": str(tmp_path / "run")},
    }))
    done = run_cli("train", str(recipe), "-q", env=hub["env"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4x4 patch grid) were resampled to this backbone's 6x6 grid (48 px" in done.stderr
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last" / "stadapt.json").read_text())
    assert meta["model"]["backbone_options"] == {"image_size": 48}
