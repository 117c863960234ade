"""The `timm` backbone plugin: any timm ViT, Eva or Swin / SwinV2 by name, the curated variants of the
first version, building, weight conversion (timm, Microsoft Swin, JAX .npz) and the hub's pretrained tags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stadapt.backbones.base import ForeignModule
from stadapt.backbones.plugin import BackbonePlugin, VariantInfo
from stadapt.errors import UnknownBackboneError, WeightsError, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from stadapt.backbones.base import FrameBackbone

# timm's IMAGENET_DEFAULT_* and IMAGENET_INCEPTION_* (copied: importing timm here would make listing slow)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

SWIN_FAMILY = "Swin"
VIT_FAMILY = "ImageNet-21k ViT"


@dataclass(frozen=True)
class _Spec:
    kind: str  # "swin" or "vit": which FrameBackbone wraps the model
    timm_name: str  # the timm architecture (without a pretrained tag)
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)  # overrides of the timm architecture
    tags: tuple[str, ...] = ()  # pretrained tags on the Hugging Face hub (timm/<timm_name>.<tag>)
    aliases: tuple[str, ...] = ()
    sizes: tuple[int, int, int, int] = (0, 0, 0, 0)  # width (last stage), blocks, patch size, prefix tokens


_SPECS: dict[str, _Spec] = {
    "swin_base_patch4_window7_224": _Spec(
        "swin", "swin_base_patch4_window7_224", 224, IMAGENET_MEAN, IMAGENET_STD,
        "Swin-B, patch 4, window 7, 224 px (ImageNet-22k weights: tag ms_in22k)",
        tags=("ms_in22k",), aliases=("swin_base_patch4_window7_224.ms_in22k", "Swin-B"), sizes=(1024, 24, 4, 0),
    ),
    "vit_base_patch16_224.augreg_in21k": _Spec(
        "vit", "vit_base_patch16_224", 224, INCEPTION_MEAN, INCEPTION_STD,
        "ViT-B/16, 224 px, ImageNet-21k weights (tag augreg_in21k; orig_in21k also fits)",
        tags=("augreg_in21k", "orig_in21k"), aliases=("vit_base_patch16_224_in21k", "ViT-B-16-in21k"),
        sizes=(768, 12, 16, 1),
    ),
    "swin_tiny_test": _Spec(
        "swin", "swin_tiny_patch4_window7_224", 32, IMAGENET_MEAN, IMAGENET_STD,
        "a tiny Swin (32 px, patch 2, window 4, widths 16/32/64, depths 2/2/2), random init, for tests and "
        "the CPU quickstart",
        timm_kwargs={"img_size": 32, "patch_size": 2, "window_size": 4, "embed_dim": 16, "depths": (2, 2, 2),
                     "num_heads": (1, 2, 4)}, sizes=(64, 6, 2, 0),
    ),
    "vit_tiny_test": _Spec(
        "vit", "vit_tiny_patch16_224", 32, INCEPTION_MEAN, INCEPTION_STD,
        "a tiny timm ViT (32 px, patch 8, width 64, 3 blocks), random init, for tests and the CPU quickstart",
        timm_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4},
        sizes=(64, 3, 8, 1),
    ),
}

# classifier heads (timm ViT: head.*, timm Swin: head.fc.*, Microsoft Swin: head.* before conversion) and the
# representation layer of the original in21k ViTs: the video model has its own head.
_IGNORED = frozenset(
    f"model.{name}.{p}" for name in ("head", "head.fc", "pre_logits.fc") for p in ("weight", "bias")
)


def _spec(variant: str) -> _Spec:
    spec = _SPECS.get(variant)
    if spec is None:
        raise UnknownBackboneError(f"backbone plugin 'timm' has no variant '{variant}'",
                                   f"variants: {', '.join(_SPECS)}")
    return spec


def _target(variant: str) -> tuple[str, dict[str, Any]]:
    """(the timm name to build, the variant's own create_model arguments): a curated variant's, or any
    timm name as it is (`arch.tag`: the tag's pretrained config sets the input size)."""
    spec = _SPECS.get(variant)
    if spec is not None:
        return spec.timm_name, dict(spec.timm_kwargs)
    import timm

    from stadapt_timm.catalog import split_name

    if not timm.is_model(split_name(variant)[0]):
        raise UnknownBackboneError(f"timm has no model '{variant}'", "`stadapt backbones --search PATTERN` lists them")
    return variant, {}


def create_timm_model(variant: str, **overrides: Any) -> nn.Module:
    """The variant's timm model, headless and randomly initialised (timm does no I/O without pretrained)."""
    from stadapt_timm.catalog import create

    timm_name, kwargs = _target(variant)
    return create(timm_name, **{**kwargs, **overrides})


class TimmPlugin(BackbonePlugin):
    """timm's SwinTransformer / SwinTransformerV2 (NHWC tokens, four stages), VisionTransformer and Eva (prefix
    + patch tokens): the curated variants below, and any timm name of those classes (`resolve_variant`).

    Weights: timm's own files (`model.safetensors` of timm/<name>.<tag> on the Hugging Face hub, .pth),
    the original Microsoft Swin checkpoints, and the original JAX ViT `.npz` files.
    """

    name = "timm"
    test_variant = "swin_tiny_test"
    open_ended = True

    def variants(self) -> Mapping[str, VariantInfo]:
        return {
            name: VariantInfo(
                name=name,
                description=spec.description,
                image_size=spec.image_size,
                mean=spec.mean,
                std=spec.std,
                interpolation="bicubic",
                aliases=spec.aliases,
                family=SWIN_FAMILY if spec.kind == "swin" else VIT_FAMILY,
                width=spec.sizes[0] or None, blocks=spec.sizes[1] or None, patch_size=spec.sizes[2] or None,
                prefix_tokens=spec.sizes[3] if spec.sizes[0] else None,
                extra={"timm_model": spec.timm_name, "timm_kwargs": dict(spec.timm_kwargs), "kind": spec.kind},
            )
            for name, spec in _SPECS.items()
        }

    def resolve_variant(self, name: str) -> VariantInfo | None:
        """Any timm ViT / Eva / Swin / SwinV2 name (`arch` or `arch.tag`), from timm's own configuration."""
        from stadapt_timm.catalog import resolve

        return resolve(name)

    def search(self, pattern: str) -> list[str]:
        from stadapt_timm.catalog import search

        return sorted(set(super().search(pattern)) | set(search(pattern)))

    def configure(self, info: VariantInfo, options: Mapping[str, Any]) -> VariantInfo:
        """The variant as built with `options` (any timm.create_model argument: img_size changes the input
        size, and a weights file's position embeddings are then resampled to it)."""
        if not options:
            return info
        from stadapt_timm.catalog import configure

        timm_name, base = _target(info.name)
        return configure(info.name, timm_name, base, options, info)

    def pretrained_tags(self, variant: str) -> tuple[str, ...]:
        if variant in _SPECS:
            return _SPECS[variant].tags
        from stadapt_timm.catalog import pretrained_tags, split_name

        return pretrained_tags(split_name(variant)[0])

    def build(self, variant: str, **options: Any) -> FrameBackbone:
        from stadapt_timm.backbone import frame_backbone

        return frame_backbone(create_timm_model(variant, **options))

    def read_weights(self, path: Path, variant: str) -> Mapping[str, torch.Tensor] | None:
        """Original JAX / big_vision ViT `.npz` files, through timm's own loader; None for other files."""
        if Path(path).suffix != ".npz":
            return None
        from stadapt_timm.catalog import classify, freeze, meta_model

        timm_name, base = _target(variant)
        if classify(meta_model(timm_name, freeze(base))) != "vit":
            raise WeightsError(f"{path} is a JAX .npz checkpoint, which only timm ViT variants read, "
                               f"not timm:{variant}",
                               "pass a .safetensors or .pth Swin checkpoint, or pick a ViT variant")
        if not Path(path).is_file():
            raise WeightsError(f"weights file {path} does not exist", "check the path")
        model = create_timm_model(variant)
        _check_npz_shapes(Path(path), model, variant)
        import zipfile
        import zlib

        from timm.models.vision_transformer import _load_weights

        try:
            _load_weights(model, str(path))  # np.load(allow_pickle=False) inside
        except KeyError as exc:
            raise WeightsError(f"the JAX checkpoint {path} lacks {exc} that timm:{variant} needs",
                               "the file is incomplete or of another architecture: pick the matching variant") from exc
        except (ValueError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
            # a damaged member (bad CRC, cut deflate stream) surfaces only when timm reads it
            raise WeightsError(f"could not load the JAX checkpoint {path} into timm:{variant} ({first_line(exc)})",
                               "the file is damaged or of another architecture or size") from exc
        return {k: v.detach() for k, v in model.state_dict().items()}

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
        """timm keys (and, for Swin, Microsoft's original layout) -> the backbone's keys (`model.` + timm key)."""
        tensors = dict(state_dict)
        if tensors and all(k.startswith("model.") for k in tensors):  # saved from the backbone module itself
            tensors = {k[len("model."):]: v for k, v in tensors.items()}
        # timm's family filter (Microsoft Swin layouts, resampled position embeddings) runs in the backbone's
        # `fit_state_dict`, which knows the model as built with its options
        return {"model." + k: v for k, v in tensors.items()}

    def ignored_keys(self, variant: str) -> frozenset[str]:
        return _IGNORED

    def resolve_pretrained(self, variant: str, tag: str) -> Path:
        """The hub file of a pretrained tag, from huggingface_hub's cache where it holds it (offline too)."""
        from stadapt.backbones.hub import hf_cached_file

        what = f"timm:{variant} weights '{tag}'"
        if variant in _SPECS:
            if tag not in _SPECS[variant].tags:
                raise self.unknown_tag_error(variant, tag)
            return hf_cached_file(f"timm/{_SPECS[variant].timm_name}.{tag}", "model.safetensors", what=what)
        from timm.models import get_pretrained_cfg

        from stadapt_timm.catalog import split_name

        arch, own = split_name(variant)
        if tag not in self.pretrained_tags(variant):
            raise self.unknown_tag_error(variant, tag)
        if own and tag != own:
            raise WeightsError(f"timm:{variant} is the model of tag '{own}' (its input settings), not of '{tag}'",
                               f"use backbone timm:{arch}.{tag} for those weights")
        cfg = get_pretrained_cfg(f"{arch}.{tag}")
        if cfg is None or not cfg.hf_hub_id:
            raise WeightsError(f"timm's {arch}.{tag} weights are not on the Hugging Face hub",
                               f"download {(cfg and cfg.url) or 'them'} elsewhere and pass the local path")
        return hf_cached_file(cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors", what=what)


def _check_npz_shapes(path: Path, model: ForeignModule, variant: str) -> None:
    """timm's .npz loader resamples a patch or position embedding of another size to fit, and reads only
    the model's first blocks of a deeper file; refuse instead."""
    import re

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            shapes = {k: tuple(archive[k].shape) for k in archive.files
                      if k.endswith(("embedding/kernel", "pos_embedding")) and "MAPHead" not in k}
            found = [int(m.group(1)) + 1 for k in archive.files if (m := re.search(r"encoderblock_(\d+)/", k))]
            found += [archive[k].shape[0] for k in archive.files  # big_vision: blocks stacked on axis 0
                      if k.endswith("Transformer/encoderblock/LayerNorm_0/scale")]
    except Exception as exc:  # not a zip, damaged members
        raise WeightsError(f"could not read the JAX checkpoint {path}: it is truncated, corrupt or not an .npz "
                           f"({first_line(exc)})", "download it again") from exc
    conv = tuple(model.patch_embed.proj.weight.shape)  # (C, 3, p, p); JAX: (p, p, 3, C)
    expected = {"embedding/kernel": (conv[2], conv[3], conv[1], conv[0]),
                "pos_embedding": tuple(model.pos_embed.shape)}
    wrong = [f"{k} expects {want} but the file has {found}"
             for k, found in shapes.items() for end, want in expected.items() if k.endswith(end) and found != want]
    depth = len(model.blocks)
    if found and max(found) != depth:
        wrong.append(f"the model has {depth} encoder blocks but the file has {max(found)}")
    if wrong:
        raise WeightsError(f"weights file {path} does not fit timm:{variant}: {'; '.join(wrong[:3])}",
                           "the weights are of another architecture or size: pick the matching variant")
