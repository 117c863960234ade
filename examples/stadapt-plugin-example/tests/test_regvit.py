"""The plugin's own tests: stadapt's conformance suite, and its checkpoint format."""

import pytest
import torch

from stadapt.backbones import load_plugin
from stadapt.model.classifier import ModelConfig, build_model
from stadapt.model.conformance import assert_conformant


@pytest.mark.parametrize("variant", ["tiny", "small"])
def test_conformance(variant):
    assert_conformant(load_plugin("regvit"), variant)


def test_released_checkpoints_load_with_their_head_ignored(tmp_path):
    from stadapt_regvit.model import RegViT

    source = RegViT(size=32, patch=8, width=64, depth=3, heads=2, registers=1).eval()
    torch.save({"model": source.state_dict(), "epoch": 300}, tmp_path / "regvit_tiny.pth")
    built = build_model(ModelConfig("regvit:tiny", num_classes=3, num_frames=1), tmp_path / "regvit_tiny.pth")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = built.model.eval().forward_features(images.unsqueeze(2))
        torch.testing.assert_close(features, source.features(images))
    assert built.load_report.ignored == ["model.head.bias", "model.head.weight"]
