"""`stadapt visualize`: last-block [CLS] attention before (adapters skipped) and after adaptation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from stadapt.backbones.attention import mha_query_attention
from stadapt.backbones.base import FrameBackbone
from stadapt.data.synthetic import SyntheticSpec, write_synthetic
from stadapt.errors import StadaptError
from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.tools.visualize import attention_maps, figure_size
from stadapt.tools.visualize.attention import _last_attention_input

RECIPE = """\
backbone:
  name: clip:tiny
  weights: synthetic
adapter:
  bottleneck: 32
  positions: [pre_attn, pre_mlp]
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  lr: 1.0e-2
  batch_size: 4
  micro_batch: 4
  steps: 2
  warmup_steps: 1
train:
  device: cpu
  log_every: 1
  val_every: 100
  save_every: 100
"""

FRAMES, GRID = 4, (4, 4)  # clip:tiny: 32 px, patch 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, a video) of a 2-step tiny run on a synthetic data set."""
    folder = tmp_path_factory.mktemp("visualize")
    root = folder / "data"
    write_synthetic(root, SyntheticSpec(motions=("horizontal",), train_per_class=2, val_per_class=1, frames=10,
                                        size=32, clutter=4))
    recipe = folder / "tiny.yaml"
    recipe.write_text(RECIPE.format(root=json.dumps(str(root))))
    run = folder / "run"
    result = run_cli("train", str(recipe), f"output.dir={run}", "-q")
    assert result.returncode == 0, result.stderr
    video = root / (root / "val.txt").read_text().split()[0]
    return run, video


def fresh_model():
    config = ModelConfig("clip:tiny", num_classes=2, num_frames=FRAMES,
                         adapter=AdapterConfig(bottleneck=16, positions=("pre_attn", "pre_mlp")))
    return build_model(config, weights="synthetic").model.eval()


def random_clip() -> torch.Tensor:
    return torch.randn(3, FRAMES, 32, 32, generator=torch.Generator().manual_seed(0))


def test_identity_adapters_give_equal_maps_and_a_perturbed_one_changes_them() -> None:
    model = fresh_model()
    clip = random_clip()
    before, after = attention_maps(model, clip)
    assert before.shape == after.shape == (FRAMES, *GRID)
    assert torch.allclose(before.sum(dim=(1, 2)), torch.ones(FRAMES), atol=1e-5)
    assert torch.equal(before, after)  # the adapters' conv starts at zero: each adapter is exactly the identity
    with torch.no_grad():
        model.adapters["1"].pre_mlp.conv.weight.normal_(std=0.5)
    before2, after2 = attention_maps(model, clip[None])
    assert torch.equal(before2, before)  # the plain image model does not see the adapters
    assert not torch.allclose(after2, before2, atol=1e-4)


def test_block_attention_matches_multihead_attention() -> None:
    """The plugin's block_attention (the [CLS] query) and the mean-query form both equal the weights
    nn.MultiheadAttention itself returns."""
    model = fresh_model()
    with torch.no_grad():
        for slot in model.adapters.values():
            slot.pre_attn.conv.weight.normal_(std=0.5)
        images = random_clip().transpose(0, 1)
        tokens = _last_attention_input(model, images, adapted=True)
        block = model.backbone._blocks[-1]
        h = block.ln_1(tokens)
        _, reference = block.attn(h, h, h, need_weights=True, average_attn_weights=True)
        ours = model.backbone.block_attention(model.num_blocks - 1, tokens)
        mean_query = mha_query_attention(block.attn, h, first_query=False)
    assert torch.allclose(ours, reference[:, 0], atol=1e-6)
    assert torch.allclose(mean_query, reference.mean(dim=1), atol=1e-6)
    assert torch.allclose(ours.sum(dim=-1), torch.ones(len(ours)), atol=1e-6)


def test_a_backbone_without_attention_is_a_clear_error() -> None:
    """A plugin that does not implement the optional block_attention gets one clear error."""
    model = fresh_model()
    backbone = model.backbone

    class NoAttention(type(backbone)):  # the same backbone, without the optional hook
        block_attention = FrameBackbone.block_attention

    backbone.__class__ = NoAttention
    with pytest.raises(StadaptError, match="does not provide attention maps"):
        attention_maps(model, random_clip())


def test_visualize_writes_the_figure(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from matplotlib.image import imread

    from stadapt.api import load_model
    from stadapt.tools.visualize.attention import load_video_clip

    run, video = trained
    png = tmp_path / "attention.png"
    result = run_cli("visualize", str(video), "--checkpoint", str(run), "--out", str(png))
    assert result.returncode == 0, result.stderr
    assert str(png) in result.stdout
    width, height = figure_size(FRAMES)
    assert (width, height) == (680, 540)  # 3 rows (frame, before, after) x 4 frames
    assert imread(png).shape[:2] == (height, width)

    again = run_cli("visualize", str(video), "--checkpoint", str(run), "--out", str(png))
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr

    default = tmp_path / f"{video.stem}.attention.png"  # the default name, in the current directory
    default.write_bytes(b"old")  # a user's file there: never replaced, --overwrite or not
    kept = run_cli("visualize", str(video), "--checkpoint", str(run), "--overwrite", "-q", cwd=tmp_path)
    assert kept.returncode == 2 and "stadapt did not write it" in kept.stderr and default.read_bytes() == b"old"
    default.write_bytes(png.read_bytes())  # a figure stadapt wrote: replaced with --overwrite
    replaced = run_cli("visualize", str(video), "--checkpoint", str(run / "checkpoints" / "last"), "--overwrite",
                       "-q", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout == ""
    assert imread(default).shape[:2] == (height, width)

    missing = run_cli("visualize", str(tmp_path / "nope.mp4"), "--checkpoint", str(run))
    assert missing.returncode == 2
    assert "nope.mp4" in missing.stderr and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    checkpoint = run / "checkpoints" / "last"
    model = load_model(checkpoint)
    clip, shown, indices = load_video_clip(video, model.input_spec)
    assert clip.shape == (3, FRAMES, 32, 32) and shown.shape == (FRAMES, 32, 32, 3) and len(indices) == FRAMES
    before, after = attention_maps(model, clip)
    for maps in (before, after):
        assert maps.shape == (FRAMES, *GRID)
        assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(FRAMES), atol=1e-5)
        assert (maps >= 0).all()
    assert not torch.allclose(before, after, atol=1e-6)  # trained adapters change where [CLS] looks
