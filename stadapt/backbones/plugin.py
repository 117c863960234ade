"""The backbone plugin protocol.

A plugin knows one family of image models and tells the core what the core cannot guess: its
variants and their input spec, how to build a randomly initialised model (no I/O), how to convert a
weights file's keys into the model's own (a pure function), and where the transformer blocks are
(the `FrameBackbone` it builds). This module imports no torch, so listing plugins is instant.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from stadapt.backbones.base import FrameBackbone
    from stadapt.backbones.text import TextTower

@dataclass(frozen=True)
class VariantInfo:
    """What a user and the data pipeline need to know about one variant."""

    name: str
    description: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    aliases: tuple[str, ...] = ()
    #: the model family users know it by ("CLIP ViT", "Swin", ...), shown by `stadapt backbones`
    family: str = ""
    #: token width of the blocks (for hierarchical models such as Swin: of the last stage)
    width: int | None = None
    #: number of transformer blocks (all stages together)
    blocks: int | None = None
    #: pixels per patch side at the input
    patch_size: int | None = None
    #: tokens before the patch tokens in each block's input ([CLS] and register tokens); 0 for none
    prefix_tokens: int | None = None
    #: whether `BackbonePlugin.text_tower` gives this variant one (zero-shot, text heads); `stadapt backbones`
    #: shows it, the conformance suite holds the plugin to it
    text_tower: bool = False
    #: the plugin's own notes on the variant; the core never reads them
    extra: Mapping[str, Any] = field(default_factory=dict)


class BackbonePlugin:
    """Base class for backbone plugins; a plugin is an instance registered under `stadapt.backbones`.

    Required: `name`, `variants()`, `build()`. The rest have working defaults.
    """

    #: the name users type before the colon, e.g. "clip" in "clip:ViT-B-16"
    name: str = ""
    #: a small variant the conformance suite and tests build quickly
    test_variant: str | None = None
    #: True when `resolve_variant` accepts names that `variants()` does not list (e.g. any timm model)
    open_ended: bool = False

    def pretrained_tags(self, variant: str) -> tuple[str, ...]:
        """Hub tags `resolve_pretrained` accepts for `variant` (may import the plugin's library)."""
        return ()

    def variants(self) -> Mapping[str, VariantInfo]:
        raise NotImplementedError

    def resolve_variant(self, name: str) -> VariantInfo | None:
        """The VariantInfo of a name `variants()` does not list, or None when the plugin does not know it.

        Open-ended plugins take size, mean, std and interpolation from their library's own configuration.
        A name the plugin knows but cannot adapt (a CNN, say) raises UnknownBackboneError saying why and
        which families work. The returned `info.name` is what `build` receives and checkpoints record."""
        return None

    def search(self, pattern: str) -> list[str]:
        """Names this plugin accepts that match a shell-style `pattern` (case-insensitive), sorted: the
        listed variants here; open-ended plugins add the adaptable models their library can build."""
        return sorted(n for n in self.variants() if fnmatch.fnmatch(n.lower(), pattern.lower()))

    def configure(self, info: VariantInfo, options: Mapping[str, Any]) -> VariantInfo:
        """The variant as `build(info.name, **options)` builds it: an option that changes the input (e.g.
        timm's `img_size`) changes the VariantInfo here too, so the data pipeline feeds the right size."""
        return info

    def build(self, variant: str, **options: Any) -> FrameBackbone:
        """A randomly initialised backbone; no file or network I/O."""
        raise NotImplementedError

    def read_weights(self, path: Path, variant: str) -> Mapping[str, torch.Tensor] | None:
        """Read a weights file in a format only this plugin knows (e.g. JAX .npz), or return None to let
        the core read it (.safetensors, PyTorch pickles with weights_only=True, TorchScript archives).
        The result then goes through `convert_state_dict` like any other. Never unpickle code here."""
        return None

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
        """Pure key conversion from a weights file's state dict to the backbone's own keys."""
        return dict(state_dict)

    def ignored_keys(self, variant: str) -> frozenset[str]:
        """Backbone keys a weights file may carry that the video model does not use (not an error)."""
        return frozenset()

    def options_for_weights(self, variant: str, source: str | Path) -> dict[str, Any]:
        """Build options implied by a weights source (e.g. OpenAI CLIP weights imply QuickGELU). A value of
        None says the source does not decide that option and the user must: the user's own value stands,
        and without one `build` receives None and refuses, naming the choices."""
        return {}

    def text_tower(self, variant: str, weights: str | Path | None = None, **options: Any) -> TextTower:
        """Optional: the text side of an image-text model (tokenizer, text encoder, the image side's
        projection, logit scale and bias), built from the same `weights` source as the image tower (a tag
        `resolve_pretrained` knows, or a local file holding both towers; None: random weights) with the
        image tower's build `options`. It lives on the plugin, not the FrameBackbone, so the image tower,
        its checkpoints and fingerprints stay image-only. Default: the variant has none."""
        from stadapt.backbones.text import NoTextTowerError

        raise NoTextTowerError(f"{self.name}:{variant} is an image model without a text tower, so it cannot "
                               "classify by label text", "pick an image-text backbone (e.g. clip:ViT-B-16)")

    def resolve_pretrained(self, variant: str, tag: str) -> Path:
        """Turn a hub tag into a local file (may download); plugins without a hub keep the default."""
        raise self.unknown_tag_error(variant, tag)

    def unknown_tag_error(self, variant: str, tag: str) -> Exception:
        """The error for a tag `resolve_pretrained` does not know, listing the tags `pretrained_tags` names
        (one place, so that the list in the message is always the plugin's real one)."""
        from stadapt.errors import WeightsError

        tags = self.pretrained_tags(variant)
        return WeightsError(
            f"{self.name}:{variant} has no pretrained tag '{tag}' and no such file exists",
            f"tags: {', '.join(tags) or 'none'}; or pass a local weights file",
        )
