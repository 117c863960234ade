"""`tuning: aim` against tests/reference_aim.py, the line-by-line port of AIM's ViT_CLIP: the same weights in
stadapt's CLIP plugin (an open_clip tower of the port's tiny shape) and in AIM's modules give the port's logits,
with every path exercised (`perturb`: nonzero adapters and temporal embedding); the method passes the tuner
conformance suite, is listed by `stadapt methods` and trains through the console script."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import run_cli, train_synthetic_run
from reference_aim import Recognizer3D, tiny_aim, trainable_names

from stadapt.checkpoints.format import load_trainable
from stadapt.model.blocks import BlockHooks, run_blocks
from stadapt.model.classifier import VideoClassifier
from stadapt.model.tuner_conformance import assert_tuner_conformant
from stadapt.tools.interop.aim import aim_to_stadapt
from stadapt_clip.backbone import ClipBackbone, build_open_clip_tower
from stadapt_tuners.aim import AimSettings

B, T, SIZE, CLASSES = 2, 4, 32, 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest on a busy machine. Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stadapt_aim(port: Recognizer3D, num_tadapter: int, adapter_scale: float = 0.5) -> VideoClassifier:
    """stadapt's AIM on the CLIP plugin (open_clip's tower of the port's shape, QuickGELU) with the port's weights."""
    visual = build_open_clip_tower(32, dict(image_size=SIZE, patch_size=16, width=64, layers=3, head_width=16,
                                            mlp_ratio=4.0), quick_gelu=True)
    settings = AimSettings(num_tadapter=num_tadapter, adapter_scale=adapter_scale)
    model = VideoClassifier(ClipBackbone(visual), CLASSES, T, settings, dropout=0.5, tuning="aim")
    tower, trainable = aim_to_stadapt(port.state_dict())
    model.backbone.load_state_dict(tower, strict=True)
    load_trainable(model, trainable, "the port")
    return model.eval()


def _video(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, 3, T, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_tadapter, scale", [(1, 0.5), (2, 0.5), (1, 1.0)])
def test_logits_equal_the_port(num_tadapter: int, scale: float):
    port = tiny_aim(num_tadapter=num_tadapter, adapter_scale=scale)
    ours = stadapt_aim(port, num_tadapter, scale)
    video = _video()
    with torch.no_grad():
        want, got = port(video), ours(video)
    diff = (got - want).abs().max().item()
    print(f"num_tadapter={num_tadapter} scale={scale}: max |diff| {diff:.2e} (logits up to {want.abs().max():.2f})")
    assert want.abs().max() > 0.1 and diff <= 1e-4


def test_trainable_set_is_aims():
    """What trains is what AIM's tools/train.py trains, tensor for tensor (the CLIP tower's ln_post included)."""
    port = tiny_aim(num_tadapter=2)
    ours = stadapt_aim(port, 2)
    theirs = {k: v for k, v in port.state_dict().items() if k in set(trainable_names(port))}
    want = sorted(aim_to_stadapt(theirs)[1])
    assert sorted(ours.trainable_state_dict()) == want
    assert "backbone.visual.ln_post.weight" in want
    assert ours.tuner.checkpoint_keys(ours.parts()) == want


def test_fresh_model_is_the_image_model_per_frame():
    """At AIM's init (fc2 zero, temporal embedding zero) the blocks compute CLIP's per frame."""
    visual = build_open_clip_tower(32, dict(image_size=SIZE, patch_size=16, width=64, layers=3, head_width=16,
                                            mlp_ratio=4.0), quick_gelu=True)
    model = VideoClassifier(ClipBackbone(visual), CLASSES, T, AimSettings(), tuning="aim").eval()
    frames = _video().transpose(1, 2).flatten(0, 1)
    with torch.no_grad():
        plain = run_blocks(model.backbone, model.backbone.embed(frames), BlockHooks())
        adapted = model.frame_features(_video())
    torch.testing.assert_close(adapted.flatten(0, 1), model.backbone.frame_features(plain), rtol=0, atol=1e-5)


def test_conformance_and_methods():
    assert_tuner_conformant("aim")
    listed = run_cli("methods")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^\s*aim\b", listed.stdout, re.M), listed.stdout


RECIPE = """\
backbone:
  name: clip:tiny
tuning: aim
aim:
  num_tadapter: 2
data:
  root: {root}
  frames: 4
  stride: 2
  views: 1x1
  num_workers: 0
optim:
  batch_size: 4
  steps: 2
  warmup_steps: 0
train:
  device: cpu
  log_every: 1
  val_every: 100
  save_every: 100
"""


def test_train_through_the_cli(tmp_path: Path):
    """Two steps of `tuning: aim` (num_tadapter 2) on the tiny synthetic set; the checkpoint records the method,
    its settings and AIM's trainable tensors (adapters, temporal embedding, ln_post, head)."""
    run = train_synthetic_run(tmp_path, RECIPE)
    record = json.loads((run / "checkpoints" / "last" / "stadapt.json").read_text())
    assert record["model"]["tuning"] == "aim"
    assert record["model"]["adapter"] == {"mlp_ratio": 0.25, "adapter_scale": 0.5, "num_tadapter": 2,
                                          "temporal_embedding": True}


def test_hook_points_that_do_nothing_change_nothing():
    """Identity hooks at the points inside the branches (which run them as norm and body), a zero parallel
    term and an identity post_embed give the plain loop's tokens; each point sees what it says."""
    from stadapt.model.blocks import embed

    visual = build_open_clip_tower(32, dict(image_size=SIZE, patch_size=16, width=64, layers=3, head_width=16,
                                            mlp_ratio=4.0), quick_gelu=True)
    backbone = ClipBackbone(visual).eval()
    frames = _video().transpose(1, 2).flatten(0, 1)
    seen: dict[str, int] = {}

    def same(point: str):
        def hook(index: int, x: torch.Tensor) -> torch.Tensor:
            seen[point] = seen.get(point, 0) + 1
            return x
        return hook

    hooks = BlockHooks(attn_in=same("attn_in"), attn_out=same("attn_out"), mlp_in=same("mlp_in"),
                       mlp_out=same("mlp_out"), mlp_parallel=lambda index, y: torch.zeros_like(y),
                       post_embed=lambda x: x)
    with torch.no_grad():
        plain = run_blocks(backbone, backbone.embed(frames))
        hooked = run_blocks(backbone, embed(backbone, frames, hooks), hooks)
        # a parallel term of ones adds exactly one per block to every token
        ones = run_blocks(backbone, backbone.embed(frames), BlockHooks(mlp_parallel=lambda i, y: torch.ones_like(y)))
    torch.testing.assert_close(hooked, plain, rtol=0, atol=1e-6)
    assert seen == {point: 3 for point in ("attn_in", "attn_out", "mlp_in", "mlp_out")}
    assert (ones - plain).abs().max() > 0.5


def test_vit_b_16_counts_are_aims():
    """On clip:ViT-B-16 (meta device) with 8 frames and 400 classes, `stadapt methods` counts AIM's own trainable
    parameters (tools/train.py's names in the port at the released shape): 10,966,672, the README's 11M; and the
    total is the port's (CLIP without `proj`, the adapters, the temporal embedding, the head)."""
    from reference_aim import VIT_B16, build_aim

    from stadapt.tools.methods import method_rows

    rows = {r["name"]: r for r in method_rows("clip:ViT-B-16", num_classes=400, frames=8)}
    with torch.device("meta"):
        port = build_aim(num_classes=400, num_frames=8, **VIT_B16)
    params = dict(port.named_parameters())
    assert rows["aim"]["trainable"] == sum(params[n].numel() for n in trainable_names(port)) == 10_966_672
    assert rows["aim"]["total"] == sum(p.numel() for p in port.parameters())
