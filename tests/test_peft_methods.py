"""PEFT's LoRA, DoRA and IA3 as stadapt tuning methods (plugins/stadapt_tuners/peft_methods.py).

The key check: stadapt's `lora` / `dora` model computes, frame by frame, what PEFT's own `get_peft_model` computes
on the same timm model with the same adapter weights. Then the conformance suite on CLIP and timm, a checkpoint
written and loaded back as every command loads one (the backbone's fingerprint taken before injection), and the
merge back to a backbone with only its native keys. Everything tiny: 2 frames of 32 px, a few blocks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from stadapt.model.classifier import ModelConfig, VideoClassifier, build_model
from stadapt.model.merge import merge_model
from stadapt.model.tuner_conformance import assert_tuner_conformant
from stadapt.recipe.schema import Recipe
from stadapt.tuners import ModelConfigError, load_tuner

VIT = "timm:vit_tiny_test"  # timm's vit_tiny_patch16_224 at 32 px, patch 8, width 64, 3 blocks
VIT_ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4}


def _model(method: str, backbone: str = VIT, weights: str | None = None, **settings: object) -> VideoClassifier:
    """The method's model on `backbone` (seed 0), every trainable tensor moved off its init (LoRA's B is 0)."""
    config = ModelConfig(backbone, 5, 2, load_tuner(method).read_settings(settings), dropout=0.0, tuning=method)
    model = build_model(config, weights=weights, seed=None if weights else 0).model.eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model


def _clip(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, 2, size, size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_frame_features_equal_peft_get_peft_model_on_the_same_timm_model(method: str) -> None:
    import timm
    from peft import LoraConfig, get_peft_model

    ours = _model(method, r=4, alpha=16)
    bare = build_model(ModelConfig(VIT, 5, 2, None, tuning="linear"), seed=0).model.backbone  # same seed: same weights
    names = [n for i in range(3) for n in bare.peft_target_modules(i)]
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **VIT_ARGS)
    theirs.load_state_dict(bare.native_state_dict())
    config = LoraConfig(r=4, lora_alpha=16, use_dora=method == "dora",
                        target_modules=[n.removeprefix("model.") for n in names])
    peft_model = get_peft_model(theirs, config).eval()
    adapters = {"base_model.model." + k.removeprefix("backbone.model."): v
                for k, v in ours.trainable_state_dict().items() if k.startswith("backbone.")}
    assert adapters and all(".default." in k for k in adapters)
    result = peft_model.load_state_dict(adapters, strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k]  # every adapter tensor of PEFT's came across

    clip = _clip()
    with torch.no_grad():
        mine = ours.backbone.video_norm(ours.frame_features(clip)).flatten(0, 1)  # (B*T, C), frames of a clip together
        frames = clip.transpose(1, 2).flatten(0, 1)
        expected = peft_model(frames)
        plain = bare.native_forward(frames)
    assert (mine - expected).abs().max().item() <= 1e-5
    assert (mine - plain).abs().max().item() > 1e-2  # the adapters change the features: the comparison can fail


@pytest.mark.parametrize("backbone", ["clip:tiny", VIT])
@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_the_methods_pass_the_tuner_conformance_suite(method: str, backbone: str) -> None:
    results = assert_tuner_conformant(method, backbone=backbone)
    assert results[-1].detail.startswith("max |diff|")  # the merge was checked


def test_targets_blocks_and_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """`targets` picks the attention or MLP layers the plugin names (CLIP's packed q/k/v is not an nn.Linear, so
    its attention is `out_proj`), `blocks` the blocks; LoRA's dropout acts in training although the frozen
    backbone runs in eval mode; a missing peft names the extra."""
    model = _model("lora", "clip:tiny", targets="attention", blocks=[-1], dropout=0.1)
    adapted = sorted(k for k in model.trainable_state_dict() if k.startswith("backbone."))
    assert adapted == [f"backbone.visual.transformer.resblocks.3.attn.out_proj.lora_{ab}.default.weight"
                       for ab in "AB"]
    model.train()
    layer = model.backbone.get_submodule("visual.transformer.resblocks.3.attn.out_proj")
    assert layer.training and layer.lora_dropout["default"].training and not model.backbone.training
    assert not model.backbone.get_submodule("visual.transformer.resblocks.3").training
    model.eval()
    assert not layer.training

    ia3 = _model("ia3", VIT, targets="mlp")
    fc1, fc2 = (ia3.backbone.get_submodule(f"model.blocks.0.mlp.{n}") for n in ("fc1", "fc2"))
    assert fc1.is_feedforward and fc2.is_feedforward and fc2.ia3_l["default"].shape == (1, 256)  # scales fc2's input

    base = {"backbone": {"name": "clip:tiny"}, "data": {"root": "/x"}, "tuning": "lora"}
    with pytest.raises(ValidationError, match=r"is empty, so tuning: lora would adapt no layer"):
        Recipe.model_validate({**base, "lora": {"blocks": []}})
    with pytest.raises(ModelConfigError, match=r"lora.blocks: block 4 does not exist: clip:tiny has 4 blocks"):
        build_model(ModelConfig("clip:tiny", 5, 2, load_tuner("lora").read_settings({"blocks": [4]}), tuning="lora"))
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(Exception, match=r"tuning=dora needs the package peft.*pip install 'stadapt\[peft\]'"):
        build_model(ModelConfig("clip:tiny", 5, 2, load_tuner("dora").read_settings(None), tuning="dora"))


def test_a_checkpoint_round_trip_keeps_the_logits(tmp_path: Path) -> None:
    """Written and loaded as training and every command do, over weights from a file whose fingerprint is
    checked: the fingerprint is the loaded backbone's before PEFT injects its layers."""
    from stadapt.checkpoints.format import model_meta, write_checkpoint
    from stadapt.checkpoints.load import load_checkpoint
    from stadapt.data.input_spec import input_spec_from_data

    config = ModelConfig("clip:tiny", 5, 2, load_tuner("lora").read_settings({"r": 2}), dropout=0.0, tuning="lora")
    built = build_model(config, weights="synthetic")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
    spec = input_spec_from_data({"frames": 2, "sampling": "stride", "stride": 2, "views": "1x1"}, built.variant)
    tensors = built.model.trainable_state_dict()
    assert "backbone.visual.transformer.resblocks.0.mlp.c_fc.lora_B.default.weight" in tensors
    path = write_checkpoint(tmp_path / "ckpt", tensors, model_meta(built, None, input_spec=spec))
    loaded = load_checkpoint(path)
    clip = _clip(spec.image_size)
    with torch.no_grad():
        assert torch.equal(loaded(clip), built.model.eval()(clip))


def test_merge_model_folds_into_a_backbone_with_native_keys() -> None:
    """(DoRA's and IA3's merges are checked by the conformance suite above.)"""
    import timm

    method = "lora"

    model = _model(method, rslora=True)
    config = ModelConfig(VIT, 5, 2, load_tuner(method).read_settings({"rslora": True}), dropout=0.0, tuning=method)
    clip = _clip()
    with torch.no_grad():
        before = model(clip)
        merged, merged_config = merge_model(model, config)
        after = merged(clip)
    assert (after - before).abs().max().item() <= 1e-4
    assert merged_config.adapter.merged and merged.trainable_state_dict().keys() == {"head.fc.weight", "head.fc.bias"}
    native = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **VIT_ARGS).state_dict()
    assert set(merged.backbone.native_state_dict()) == set(native)
    assert set(merged.backbone.state_dict()) == {"model." + k for k in native}
    assert ModelConfig.from_dict(merged_config.to_dict()) == merged_config  # a merged checkpoint rebuilds it
