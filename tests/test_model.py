"""VideoClassifier: parameter counts of the paper, freezing, and the reference model's math."""

import pytest
import torch
from helpers import tiny_visual
from reference_impl import reference_logits

from stadapt.model.adapters import AdapterConfig
from stadapt.model.classifier import ModelConfig, VideoClassifier, build_model


@pytest.mark.parametrize(
    "positions, classes, total, trainable",
    [
        (("pre_mlp",), 400, 93_217_168, 7_417_744),  # K400, "12x384"
        (("pre_attn", "pre_mlp"), 174, 100_153_518, 14_354_094),  # SSv2, "24x384"
    ],
)
def test_parameter_counts_of_clip_vit_b16(positions, classes, total, trainable):
    config = ModelConfig("clip:ViT-B-16", classes, 8, AdapterConfig(384, (3, 1, 1), positions))
    counts = build_model(config).model.parameter_counts()
    assert counts == {"total": total, "trainable": trainable}


def _tiny(adapter=AdapterConfig(bottleneck=16), frames=4, classes=6) -> VideoClassifier:
    torch.manual_seed(0)
    return build_model(ModelConfig("clip:tiny", classes, frames, adapter)).model


def test_only_adapters_and_head_train_and_the_backbone_stays_in_eval_mode():
    model = _tiny(AdapterConfig(bottleneck=16, positions=("pre_attn", "pre_mlp"))).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("adapters.", "head.")) for n in trainable)
    assert {n.split(".")[0] for n in trainable} == {"adapters", "head"}
    assert model.training and model.head.training and not model.backbone.training
    assert set(model.trainable_state_dict()) == trainable


def test_adapters_only_in_chosen_blocks():
    model = _tiny(AdapterConfig(bottleneck=16, blocks=(-1, 1)))
    assert sorted(model.adapters.keys()) == ["1", "3"]
    with pytest.raises(ValueError, match="does not exist"):
        _tiny(AdapterConfig(bottleneck=16, blocks=(9,)))


def test_linear_probe_has_no_adapters_and_is_blind_to_frame_order():
    model = _tiny(adapter=None).eval()
    assert len(model.adapters) == 0
    video = torch.randn(2, 3, 4, 32, 32)
    torch.testing.assert_close(model(video), model(video.flip(2)))


def test_adapted_model_sees_frame_order():
    model = _tiny().eval()
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    video = torch.randn(2, 3, 4, 32, 32)
    assert not torch.allclose(model(video), model(video.flip(2)), atol=1e-4)


def test_wrong_frame_count_is_a_clear_error():
    with pytest.raises(ValueError, match="clips of 4 frames, got 8"):
        _tiny()(torch.randn(1, 3, 8, 32, 32))


@pytest.mark.parametrize("positions", [("pre_mlp",), ("pre_attn", "pre_mlp"), ("pre_attn",)])
def test_logits_match_the_reference_formulation(positions, tmp_path):
    """Same weights through stadapt (open_clip blocks) and through the reference's math, written out."""
    visual = tiny_visual(seed=3)
    weights = tmp_path / "visual.pt"
    torch.save(visual.state_dict(), weights)
    built = build_model(ModelConfig("clip:tiny", 5, 4, AdapterConfig(16, (3, 1, 1), positions)), weights)
    model = built.model.eval()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.head.fc.bias.copy_(torch.randn(5, generator=g))
    trained = {}
    for name, tensor in model.trainable_state_dict().items():
        if name.startswith("adapters."):
            _, block, position, rest = name.split(".", 3)
            trained[f"transformer.resblocks.{block}.adapter_{position}.{rest}"] = tensor
        else:
            trained[name.removeprefix("head.")] = tensor
    video = torch.randn(2, 3, 4, 32, 32, generator=g)
    with torch.no_grad():
        ours = model(video)
        theirs = reference_logits(video, visual.state_dict(), trained, heads=4, patch=8)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_bottleneck_ratio_sizes_each_adapter_from_its_token_width():
    config = AdapterConfig(bottleneck=999, bottleneck_ratio=0.25, positions=("pre_attn", "pre_mlp"))
    model = _tiny(config)  # clip:tiny is 128 wide: round(0.25 * 128) = 32, the fixed 999 is overridden
    assert {a.bottleneck for slot in model.adapters.values() for a in (slot.pre_attn, slot.pre_mlp)} == {32}
    assert config.bottleneck_for(1024) == 256 and config.bottleneck_for(2) == 1  # never zero
    assert AdapterConfig.from_dict(config.to_dict()) == config
    assert "bottleneck_ratio" not in AdapterConfig().to_dict()  # checkpoints without it read as before
    with pytest.raises(ValueError, match="bottleneck_ratio"):
        AdapterConfig(bottleneck_ratio=0.0)
