"""The `swag` backbone plugin: variants, building, weight formats (SWAG release, classy-vision, torchvision)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.errors import UnknownBackboneError, WeightsError, first_line

if TYPE_CHECKING:
    import torch

    from stadapt.backbones.base import FrameBackbone

# SWAG's README normalises with the ImageNet statistics and resizes bicubically
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FAMILY = "SWAG ViT"
RELEASE_URL = "https://dl.fbaipublicfiles.com/SWAG/{name}.torch"
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation, not for the whole file


@dataclass(frozen=True)
class _Arch:
    image_size: int
    patch_size: int
    layers: int
    heads: int
    width: int
    mlp_dim: int
    description: str
    release: dict[str, str]  # pretrained tag -> the SWAG release file's stem
    aliases: tuple[str, ...] = ()


def _arch(size: int, patch: int, layers: int, heads: int, width: int, name: str, stem: str, tag: str,
          aliases: tuple[str, ...] = ()) -> _Arch:
    what = "the IG-3.6B weakly supervised trunk" if tag == "swag" else "fine-tuned end to end on ImageNet-1k"
    return _Arch(size, patch, layers, heads, width, 4 * width, f"SWAG {name}, {size} px ({what}; tag {tag})",
                 {tag: stem}, aliases)


_ARCHS: dict[str, _Arch] = {
    "ViT-B-16": _arch(224, 16, 12, 12, 768, "ViT-B/16", "vit_b16", "swag", ("ViT-B/16", "vit_b16")),
    "ViT-L-16": _arch(224, 16, 24, 16, 1024, "ViT-L/16", "vit_l16", "swag", ("ViT-L/16", "vit_l16")),
    "ViT-H-14": _arch(224, 14, 32, 16, 1280, "ViT-H/14", "vit_h14", "swag", ("ViT-H/14", "vit_h14")),
    "ViT-B-16-384": _arch(384, 16, 12, 12, 768, "ViT-B/16", "vit_b16_in1k", "swag_in1k", ("vit_b16_in1k",)),
    "ViT-L-16-512": _arch(512, 16, 24, 16, 1024, "ViT-L/16", "vit_l16_in1k", "swag_in1k", ("vit_l16_in1k",)),
    "ViT-H-14-518": _arch(518, 14, 32, 16, 1280, "ViT-H/14", "vit_h14_in1k", "swag_in1k", ("vit_h14_in1k",)),
    "tiny": _Arch(32, 8, 4, 4, 64, 256, "a tiny SWAG-architecture ViT (32 px, patch 8, width 64, 4 blocks), random "
                  "init, for tests and the CPU quickstart", {}),
}

# classifier heads: SWAG's in1k files (head.*), torchvision's (heads.head.*, renamed to head.*)
_IGNORED = frozenset({"vit.head.weight", "vit.head.bias"})
_TORCHVISION_LAYER = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.")
_TORCHVISION_MLP = {".mlp.0.": ".mlp.linear_1.", ".mlp.3.": ".mlp.linear_2."}


def _variant(variant: str) -> _Arch:
    arch = _ARCHS.get(variant)
    if arch is None:
        raise UnknownBackboneError(f"backbone plugin 'swag' has no variant '{variant}'",
                                   f"variants: {', '.join(_ARCHS)}")
    return arch


class SwagPlugin(BackbonePlugin):
    """SWAG's ViTs (classy-vision's VisionTransformer: class token, sequence-first encoder).

    Weights: the SWAG release files (`vit_b16.torch`, ...: the trunk's own keys), classy-vision task
    checkpoints (`classy_state_dict` -> base_model -> model -> trunk) and torchvision's ViT state dicts
    (`torchvision.models.vit_b_16(weights="IMAGENET1K_SWAG_E2E_V1")`), all from a local file.
    """

    name = "swag"
    test_variant = "tiny"

    def variants(self) -> Mapping[str, VariantInfo]:
        return {
            name: VariantInfo(
                name=name,
                description=arch.description,
                image_size=arch.image_size,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                interpolation="bicubic",
                aliases=arch.aliases,
                family=FAMILY,
                width=arch.width,
                blocks=arch.layers,
                patch_size=arch.patch_size,
                prefix_tokens=1,
            )
            for name, arch in _ARCHS.items()
        }

    def pretrained_tags(self, variant: str) -> tuple[str, ...]:
        return tuple(_variant(variant).release)

    def build(self, variant: str, **options: Any) -> FrameBackbone:
        from stadapt_swag.backbone import SwagBackbone, build_vit

        if options:
            raise UnknownBackboneError(
                f"swag backbones take no option(s) {', '.join(sorted(options))}", "remove the backbone options"
            )
        arch = _variant(variant)
        return SwagBackbone(build_vit(image_size=arch.image_size, patch_size=arch.patch_size, layers=arch.layers,
                                      heads=arch.heads, width=arch.width, mlp_dim=arch.mlp_dim))

    def read_weights(self, path: Path, variant: str) -> Mapping[str, torch.Tensor] | None:
        """classy-vision task checkpoints keep the trunk three levels down; other files go to the core."""
        from stadapt.backbones.weights import is_torchscript_archive, torch_load_safely, unwrap_state_dict

        path = Path(path)
        if path.suffix == ".safetensors" or not path.is_file() or path.stat().st_size == 0 \
                or is_torchscript_archive(path):
            return None  # the core reads these and reports missing or empty files
        obj = torch_load_safely(path, "weights file")  # weights_only: nothing in the file runs
        if isinstance(obj, Mapping) and isinstance(obj.get("classy_state_dict"), Mapping):
            try:
                obj = obj["classy_state_dict"]["base_model"]["model"]["trunk"]
            except (KeyError, TypeError) as exc:
                raise WeightsError(f"{path} is a classy-vision checkpoint without a model trunk ({exc})",
                                   "pass a checkpoint written by a classy-vision classification task") from exc
        return unwrap_state_dict(obj, path)

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
        """SWAG / classy-vision keys are the trunk's own; torchvision's are renamed and its (1, S, C)
        position embedding becomes classy-vision's sequence-first (S, 1, C)."""
        tensors = dict(state_dict)
        if tensors and all(k.startswith("vit.") for k in tensors):  # saved from the backbone module itself
            tensors = {k[len("vit."):]: v for k, v in tensors.items()}
        if any(_TORCHVISION_LAYER.match(k) for k in tensors) or "heads.head.weight" in tensors:
            tensors = _from_torchvision(tensors)
        return {"vit." + k: v for k, v in tensors.items()}

    def ignored_keys(self, variant: str) -> frozenset[str]:
        return _IGNORED

    def resolve_pretrained(self, variant: str, tag: str) -> Path:
        arch = _variant(variant)
        stem = arch.release.get(tag)
        if stem is None:
            raise self.unknown_tag_error(variant, tag)
        url = RELEASE_URL.format(name=stem)
        from torch.hub import download_url_to_file, get_dir

        target = Path(get_dir()) / "checkpoints" / "swag" / f"{stem}.torch"
        if target.is_file():
            return target
        import socket

        target.parent.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub sets none: a silent network would hang forever
        try:
            download_url_to_file(url, str(target), progress=True)  # to a temporary file, moved into place
        except Exception as exc:  # no network, HTTP errors, timeouts
            raise WeightsError(f"could not download swag:{variant} weights '{tag}' ({first_line(exc)})",
                               f"without a network, download {url} elsewhere and pass the local path") from exc
        finally:
            socket.setdefaulttimeout(previous)
        return target


def _from_torchvision(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        key = _TORCHVISION_LAYER.sub(r"encoder.layers.layer_\1.", key)
        for old, new in _TORCHVISION_MLP.items():
            key = key.replace(old, new)
        if key.startswith("heads.head."):
            key = "head." + key[len("heads.head."):]
        if key == "encoder.pos_embedding" and value.dim() == 3 and value.shape[0] == 1:
            value = value.transpose(0, 1)  # torchvision (1, S, C) -> classy-vision (S, 1, C)
        out[key] = value
    return out
