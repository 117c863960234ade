"""The `timm` backbone plugin: variants, building, weight conversion (timm, Microsoft Swin, JAX .npz)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


_SPECS: dict[str, _Spec] = {
    "swin_base_patch4_window7_224": _Spec(
        "swin", "swin_base_patch4_window7_224", 224, IMAGENET_MEAN, IMAGENET_STD,
        "Swin-B, patch 4, window 7, 224 px (ImageNet-22k weights: tag ms_in22k)",
        tags=("ms_in22k",), aliases=("swin_base_patch4_window7_224.ms_in22k", "Swin-B"),
    ),
    "vit_base_patch16_224.augreg_in21k": _Spec(
        "vit", "vit_base_patch16_224", 224, INCEPTION_MEAN, INCEPTION_STD,
        "ViT-B/16, 224 px, ImageNet-21k weights (tag augreg_in21k; orig_in21k also fits)",
        tags=("augreg_in21k", "orig_in21k"), aliases=("vit_base_patch16_224_in21k", "ViT-B-16-in21k"),
    ),
    "swin_tiny_test": _Spec(
        "swin", "swin_tiny_patch4_window7_224", 32, IMAGENET_MEAN, IMAGENET_STD,
        "a tiny Swin (32 px, patch 2, window 4, widths 16/32/64, depths 2/2/2), random init, for tests and "
        "the CPU quickstart",
        timm_kwargs={"img_size": 32, "patch_size": 2, "window_size": 4, "embed_dim": 16, "depths": (2, 2, 2),
                     "num_heads": (1, 2, 4)},
    ),
    "vit_tiny_test": _Spec(
        "vit", "vit_tiny_patch16_224", 32, INCEPTION_MEAN, INCEPTION_STD,
        "a tiny timm ViT (32 px, patch 8, width 64, 3 blocks), random init, for tests and the CPU quickstart",
        timm_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4},
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


def create_timm_model(variant: str, **overrides: Any) -> nn.Module:
    """The variant's timm model, headless and randomly initialised (timm does no I/O without pretrained)."""
    import timm

    spec = _spec(variant)
    kwargs: dict[str, Any] = {**spec.timm_kwargs, "num_classes": 0, **overrides}
    if spec.kind == "vit":
        kwargs.setdefault("use_naflex", False)  # TIMM_USE_NAFLEXVIT would swap in another class
    return timm.create_model(spec.timm_name, pretrained=False, **kwargs)


@lru_cache(maxsize=None)
def _meta_model(variant: str) -> nn.Module:
    """Shapes only (no memory, instant): what timm's checkpoint filters inspect."""
    import torch

    with torch.device("meta"):
        return create_timm_model(variant)


class TimmPlugin(BackbonePlugin):
    """timm's SwinTransformer (NHWC tokens, four stages) and VisionTransformer (CLS + patch tokens).

    Weights: timm's own files (`model.safetensors` of timm/<name>.<tag> on the Hugging Face hub, .pth),
    the original Microsoft Swin checkpoints, and the original JAX ViT `.npz` files.
    """

    name = "timm"
    test_variant = "swin_tiny_test"

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
                extra={"timm_model": spec.timm_name, "timm_kwargs": dict(spec.timm_kwargs), "kind": spec.kind},
            )
            for name, spec in _SPECS.items()
        }

    def pretrained_tags(self, variant: str) -> tuple[str, ...]:
        return _spec(variant).tags

    def build(self, variant: str, **options: Any) -> FrameBackbone:
        from stadapt_timm.backbone import TimmSwinBackbone, TimmViTBackbone

        if options:
            raise UnknownBackboneError(
                f"timm backbones take no option(s) {', '.join(sorted(options))}", "remove the backbone options"
            )
        model = create_timm_model(variant)
        return TimmSwinBackbone(model) if _spec(variant).kind == "swin" else TimmViTBackbone(model)

    def read_weights(self, path: Path, variant: str) -> Mapping[str, torch.Tensor] | None:
        """Original JAX / big_vision ViT `.npz` files, through timm's own loader; None for other files."""
        if Path(path).suffix != ".npz":
            return None
        spec = _spec(variant)
        if spec.kind != "vit":
            raise WeightsError(f"{path} is a JAX .npz checkpoint, which only timm ViT variants read, not timm:{variant}",
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
        if _spec(variant).kind == "swin":
            tensors = _filter_swin(tensors, variant)
        return {"model." + k: v for k, v in tensors.items()}

    def ignored_keys(self, variant: str) -> frozenset[str]:
        return _IGNORED

    def resolve_pretrained(self, variant: str, tag: str) -> Path:
        spec = _spec(variant)
        if tag not in spec.tags:
            raise self.unknown_tag_error(variant, tag)
        repo = f"timm/{spec.timm_name}.{tag}"
        where = f"https://huggingface.co/{repo}/resolve/main/model.safetensors"
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise WeightsError(f"downloading timm:{variant} weights '{tag}' needs huggingface_hub",
                               f"pip install huggingface_hub, or download {where} elsewhere and pass the local path"
                               ) from exc
        try:
            return Path(hf_hub_download(repo, "model.safetensors"))
        except Exception as exc:  # no network, offline mode, hub errors
            raise WeightsError(
                f"could not download timm:{variant} weights '{tag}' from the Hugging Face hub ({first_line(exc)})",
                f"without a network, download {where} elsewhere and pass the local path",
            ) from exc


def _filter_swin(tensors: dict[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """timm's own Swin checkpoint filter: drops the `relative_position_index` / `attn_mask` buffers of
    Microsoft's checkpoints and moves their end-of-stage downsample to the start of the next stage.

    Tensors whose shape differs from the model's are kept out of the filter: it would resample them to
    fit (another patch or window size), where a wrong file must fail naming the shapes it really has."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    model = _meta_model(variant)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    resampled = ("patch_embed.proj.weight", "relative_position_bias_table")
    kept = {k: v for k, v in tensors.items() if k.endswith(resampled) and own.get(k) != tuple(v.shape)}
    try:
        out = checkpoint_filter_fn({k: v for k, v in tensors.items() if k not in kept}, model)
    except Exception as exc:  # a foreign layout the filter cannot read
        raise WeightsError(f"timm's Swin checkpoint filter cannot read this file for timm:{variant} "
                           f"({first_line(exc)})", "pass a timm or Microsoft Swin checkpoint of this variant") from exc
    return {**kept, **out}  # the file's first tensors first: errors name the patch embedding


def _check_npz_shapes(path: Path, model: nn.Module, variant: str) -> None:
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
