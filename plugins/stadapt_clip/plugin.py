"""The `clip` backbone plugin: variants, building, weight conversion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stadapt.backbones.plugin import CLIP_MEAN, CLIP_STD, BackbonePlugin, VariantInfo
from stadapt.errors import UnknownBackboneError, WeightsError

if TYPE_CHECKING:
    import torch

    from stadapt.backbones.base import FrameBackbone


@dataclass(frozen=True)
class _Arch:
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    output_dim: int
    description: str
    aliases: tuple[str, ...] = ()
    open_clip_name: str | None = None  # the name open_clip's pretrained registry knows


_ARCHS: dict[str, _Arch] = {
    "ViT-B-16": _Arch(224, 16, 768, 12, 12, 512, "CLIP ViT-B/16, 224 px (the paper's main backbone)",
                      ("ViT-B/16",), "ViT-B-16"),
    "ViT-L-14": _Arch(224, 14, 1024, 24, 16, 768, "CLIP ViT-L/14, 224 px", ("ViT-L/14",), "ViT-L-14"),
    "ViT-L-14-336": _Arch(336, 14, 1024, 24, 16, 768, "CLIP ViT-L/14 at 336 px",
                          ("ViT-L/14@336px", "ViT-L-14@336px"), "ViT-L-14-336"),
    "tiny": _Arch(32, 8, 128, 4, 4, 64, "a tiny CLIP-architecture ViT (32 px, patch 8, width 128, 4 blocks) "
                  "for tests and the CPU quickstart"),
}


# clip:tiny pretrained as an image model on single synthetic frames (stadapt.quickstart.pretrain)
TINY_SYNTHETIC = "synthetic"


class ClipPlugin(BackbonePlugin):
    """OpenAI CLIP / OpenCLIP vision towers.

    Options: `quick_gelu` (default True, OpenAI's activation; OpenAI weights always imply it; pass
    False for OpenCLIP weights trained with GELU, which pretrained tags resolve by themselves).
    """

    name = "clip"
    test_variant = "tiny"

    def variants(self) -> Mapping[str, VariantInfo]:
        return {
            name: VariantInfo(
                name=name,
                description=arch.description,
                image_size=arch.image_size,
                mean=CLIP_MEAN,
                std=CLIP_STD,
                interpolation="bicubic",
                aliases=arch.aliases,
                family="CLIP (OpenAI / OpenCLIP ViT)",
                width=arch.width,
                blocks=arch.layers,
                patch_size=arch.patch_size,
                prefix_tokens=1,
            )
            for name, arch in _ARCHS.items()
        }

    def pretrained_tags(self, variant: str) -> tuple[str, ...]:
        if variant == "tiny":
            return (TINY_SYNTHETIC,)
        return _pretrained_tags(_ARCHS[variant])

    def build(self, variant: str, **options: Any) -> FrameBackbone:
        from stadapt_clip.backbone import ClipBackbone, build_visual

        unknown = set(options) - {"quick_gelu"}
        if unknown:
            raise UnknownBackboneError(
                f"clip backbones take no option(s) {', '.join(sorted(unknown))}", "the only option is quick_gelu"
            )
        arch = _ARCHS[variant]
        visual = build_visual(
            image_size=arch.image_size,
            patch_size=arch.patch_size,
            width=arch.width,
            layers=arch.layers,
            heads=arch.heads,
            output_dim=arch.output_dim,
            quick_gelu=bool(options.get("quick_gelu", True)),
        )
        return ClipBackbone(visual)

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
        """Full CLIP state dicts (OpenAI, OpenCLIP) keep the vision tower under `visual.`; the rest is it."""
        if any(k.startswith("visual.") for k in state_dict):
            return {"visual." + k[len("visual."):]: v for k, v in state_dict.items() if k.startswith("visual.")}
        return {"visual." + k: v for k, v in state_dict.items()}

    def ignored_keys(self, variant: str) -> frozenset[str]:
        # CLIP's image-text projection: the video head reads the width-sized CLS feature instead.
        return frozenset({"visual.proj"})

    def options_for_weights(self, variant: str, source: str | Path) -> dict[str, Any]:
        from stadapt.backbones.weights import is_torchscript_archive

        text = str(source)
        if Path(text).is_file():
            return {"quick_gelu": True} if is_torchscript_archive(text) else {}
        arch = _ARCHS.get(variant)
        if arch is None or arch.open_clip_name is None:
            return {}
        from open_clip.pretrained import get_pretrained_cfg

        cfg = get_pretrained_cfg(arch.open_clip_name, text)
        return {"quick_gelu": bool(cfg.get("quick_gelu", False))} if cfg else {}

    def resolve_pretrained(self, variant: str, tag: str) -> Path:
        if variant == "tiny" and tag == TINY_SYNTHETIC:  # shipped with the plugin: no download
            return Path(__file__).with_name("weights") / "tiny_synthetic.safetensors"
        arch = _ARCHS[variant]
        if arch.open_clip_name is None or tag not in self.pretrained_tags(variant):
            raise self.unknown_tag_error(variant, tag)
        from open_clip.pretrained import download_pretrained, get_pretrained_cfg

        try:
            path = download_pretrained(get_pretrained_cfg(arch.open_clip_name, tag))
        except Exception as exc:  # no network, hub errors
            raise WeightsError(
                f"could not download clip:{variant} weights '{tag}' ({type(exc).__name__})",
                "without a network, download the file elsewhere and pass its local path",
            ) from exc
        if not path:
            raise WeightsError(f"open_clip has no download for clip:{variant} '{tag}'", "pass a local weights file")
        return Path(path)


def _pretrained_tags(arch: _Arch) -> tuple[str, ...]:
    if arch.open_clip_name is None:
        return ()
    try:
        from open_clip.pretrained import list_pretrained_tags_by_model
    except ImportError:
        return ()
    return tuple(list_pretrained_tags_by_model(arch.open_clip_name))
