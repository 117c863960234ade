"""The `regvit` plugin object: variants, building, and reading the released checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stadapt.backbones import BackbonePlugin, VariantInfo
from stadapt.errors import UnknownBackboneError

if TYPE_CHECKING:
    import torch

    from stadapt.backbones import FrameBackbone

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# size, patch, width, depth, heads, registers
_ARCHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "small": (224, 16, 384, 12, 6, 4),
    "tiny": (32, 8, 64, 3, 2, 1),
}


class RegViTPlugin(BackbonePlugin):
    """ViTs with register tokens. Released checkpoints are `{"model": state_dict}` in RegViT's own
    keys with an ImageNet head; stadapt's reader unwraps `"model"`, this plugin prefixes the keys."""

    name = "regvit"
    test_variant = "tiny"

    def variants(self) -> Mapping[str, VariantInfo]:
        return {
            "small": VariantInfo("small", "ViT-S/16 with 4 register tokens, 224 px", 224, MEAN, STD,
                                 aliases=("ViT-S-16-reg4",), family="RegViT (example plugin)"),
            "tiny": VariantInfo("tiny", "a tiny RegViT (32 px, width 64, 3 blocks) for tests", 32, MEAN, STD,
                                family="RegViT (example plugin)"),
        }

    def build(self, variant: str, **options: Any) -> FrameBackbone:
        from torch import nn

        from stadapt_regvit.backbone import RegViTBackbone
        from stadapt_regvit.model import RegViT

        if options:
            raise UnknownBackboneError(f"regvit backbones take no options, got {', '.join(options)}",
                                       "remove backbone.options")
        size, patch, width, depth, heads, registers = _ARCHS[variant]
        model = RegViT(size=size, patch=patch, width=width, depth=depth, heads=heads, registers=registers)
        model.head = nn.Identity()  # the video model brings its own classifier: the ImageNet head would be dead weight
        return RegViTBackbone(model)

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
        return {"model." + k: v for k, v in state_dict.items()}

    def ignored_keys(self, variant: str) -> frozenset[str]:
        return frozenset({"model.head.weight", "model.head.bias"})
