"""Which timm models the plugin adapts, and what it tells the core about them.

Any timm model whose class is a ViT (`VisionTransformer`), an `Eva` (rotary embeddings: EVA-02, DINOv3,
PE-Core) or a Swin / SwinV2 is accepted by name (`arch` or `arch.tag`). Input size, mean, std and
interpolation come from timm's own pretrained config of that name; the architecture facts (width, blocks,
patch size, prefix tokens) from the model built on the meta device, so nothing is allocated and no
table of ours can go stale. timm is imported only here, inside functions.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from stadapt.backbones.base import ForeignModule
from stadapt.backbones.plugin import VariantInfo
from stadapt.errors import UnknownBackboneError, first_line

if TYPE_CHECKING:
    from torch import nn

#: timm modules whose models the plugin may adapt (the class decides; see `classify`)
MODULES = ("vision_transformer", "deit", "eva", "swin_transformer", "swin_transformer_v2")
#: names in those modules whose blocks run attention and MLP side by side, or with two heads: left out of search
_NOT_ADAPTABLE = re.compile(r"_18x2_|_xp_|pwee_|distilled")
FAMILIES = ("ViT (timm VisionTransformer: DeiT III, DINOv2, SigLIP, AIMv2, CLIP ViTs...), EVA (timm Eva with "
            "rotary embeddings: EVA-02, DINOv3, PE-Core...) and Swin / SwinV2")
#: create_model arguments the plugin decides itself (random init, no head, static shapes)
RESERVED_OPTIONS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
                    "num_classes", "features_only", "dynamic_img_size", "use_naflex")
FAMILY_NAMES = {"VisionTransformer": "ViT", "Eva": "EVA", "SwinTransformer": "Swin", "SwinTransformerV2": "SwinV2"}


def split_name(name: str) -> tuple[str, str]:
    """'vit_small_patch14_dinov2.lvd142m' -> ('vit_small_patch14_dinov2', 'lvd142m'); no tag -> ''."""
    arch, _, tag = name.partition(".")
    return arch, tag


def freeze(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Options as a hashable, sorted tuple (YAML lists become tuples, which timm takes alike)."""
    def hashable(value: Any) -> Any:
        return tuple(hashable(v) for v in value) if isinstance(value, (list, tuple)) else value

    return tuple(sorted((str(k), hashable(v)) for k, v in options.items()))


def create(timm_name: str, **options: Any) -> nn.Module:
    """timm's model of `timm_name` (tag included: its pretrained config sets the input size), randomly
    initialised and headless; the options go to `timm.create_model` (e.g. img_size, depth, embed_dim)."""
    import timm

    reserved = sorted(set(options) & set(RESERVED_OPTIONS))
    if reserved:
        raise UnknownBackboneError(f"timm:{timm_name}: the backbone option(s) {', '.join(reserved)} are set by stadapt",
                                   "remove them from backbone.options; weights come from backbone.weights")
    kwargs: dict[str, Any] = {"num_classes": 0, **{k: v for k, v in freeze(options)}}
    arch = split_name(timm_name)[0]
    if timm.models.is_model_in_modules(arch, ["vision_transformer", "eva"]):
        kwargs["use_naflex"] = False  # TIMM_USE_NAFLEX=1 would swap in another class
    if timm.models.is_model_in_modules(arch, ["vision_transformer", "eva", "deit"]):
        kwargs["dynamic_img_size"] = False  # static shapes (DINOv3 defaults to dynamic): compile, ONNX
    try:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in freeze(options)) or "no options"
        raise UnknownBackboneError(f"timm could not build {timm_name} with {shown}: {first_line(exc)}",
                                   "check backbone.options against the timm model's arguments") from exc


@lru_cache(maxsize=64)
def meta_model(timm_name: str, frozen: tuple[tuple[str, Any], ...] = ()) -> nn.Module:
    """The model on the meta device: shapes only, no memory, instant (what counting and checks need)."""
    import torch

    with torch.device("meta"):
        return create(timm_name, **dict(frozen))


def classify(model: ForeignModule) -> str | None:
    """'vit', 'eva' or 'swin' for a model the plugin can adapt; None (with `why_not`) otherwise."""
    return None if why_not(model) else _KINDS[type(model).__name__]


_KINDS = {"VisionTransformer": "vit", "Eva": "eva", "SwinTransformer": "swin", "SwinTransformerV2": "swin"}


def why_not(model: ForeignModule) -> str:
    """Why the plugin cannot adapt `model` ('' when it can)."""
    from timm.layers import PatchEmbed

    cls = type(model).__name__
    if cls not in _KINDS or type(model).__module__.split(".")[-1] not in MODULES:
        return f"it is a {cls}, not a transformer made of attention and MLP residual blocks"
    if getattr(model, "dynamic_img_size", False):
        return "it is built with a dynamic image size (stadapt needs static shapes)"
    if _KINDS[cls] == "swin":
        pool = getattr(model, "global_pool", "avg")
        return "" if pool == "avg" else f"its head pools with {pool!r}, not the average"
    if type(model.patch_embed) is not PatchEmbed:
        return f"it is a hybrid: a {type(model.patch_embed).__name__} (a CNN stem) makes its tokens"
    allowed = {"Block", "ResPostBlock"} if cls == "VisionTransformer" else {"EvaBlock", "EvaBlockPostNorm"}
    odd = sorted({type(b).__name__ for b in model.blocks} - allowed)
    if odd:
        return f"its {', '.join(odd)} blocks run attention and MLP side by side, with no point between them"
    if model.global_pool == "" and getattr(model, "attn_pool", None) is None:
        return "it has no pooled image feature (global_pool='')"
    return ""


def _square(size: Any, name: str) -> int:
    height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    if height != width:
        raise UnknownBackboneError(f"timm:{name} takes {height}x{width} images; stadapt feeds square frames",
                                   "pass backbone option img_size=N for a square input")
    return int(height)


def describe(name: str, model: ForeignModule, info: VariantInfo | None = None) -> VariantInfo:
    """The VariantInfo of `name` as `model` (a meta build) is; `info` (a curated variant) keeps its
    own name, family, description and statistics and takes the sizes from the model."""
    kind = classify(model)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = _square(model.patch_embed.img_size, name)
    facts: dict[str, Any]
    if kind == "swin":
        facts = dict(width=int(model.num_features), blocks=sum(len(s.blocks) for s in model.layers),
                     prefix_tokens=0)
    else:
        facts = dict(width=int(model.embed_dim), blocks=len(model.blocks),
                     prefix_tokens=int(model.num_prefix_tokens))
    facts["patch_size"] = int(model.patch_embed.patch_size[0])
    if info is not None:
        return replace(info, image_size=size, **facts)
    interpolation: str = cfg["interpolation"] if cfg.get("interpolation") in ("bicubic", "bilinear") else "bicubic"
    arch, tag = split_name(name)
    family = FAMILY_NAMES[type(model).__name__]
    prefix = f", {facts['prefix_tokens']} prefix tokens" if facts["prefix_tokens"] != 1 and kind != "swin" else ""
    return VariantInfo(
        name=name,
        description=f"timm {type(model).__name__} {arch} ({size} px, width {facts['width']}, {facts['blocks']} "
                    f"blocks{prefix}); input settings from timm's pretrained config "
                    f"{cfg.get('tag') or tag or ''}".rstrip(),
        image_size=size,
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),  # type: ignore[arg-type]
        interpolation=interpolation,
        family=family,
        extra={"timm_model": arch, "tag": cfg.get("tag") or tag, "crop_pct": cfg.get("crop_pct"),
               "hf_hub_id": cfg.get("hf_hub_id"), "kind": kind},
        **facts,
    )


def resolve(name: str) -> VariantInfo | None:
    """The VariantInfo of any adaptable timm name; None for a name timm does not know; an
    UnknownBackboneError saying why for a model the plugin cannot adapt (a CNN, a hybrid) or a bad tag."""
    import timm

    arch, tag = split_name(name)
    if not timm.is_model(arch):
        return None
    if tag:
        tags = pretrained_tags(arch)
        if tag not in tags:
            raise UnknownBackboneError(f"timm:{arch} has no pretrained tag '{tag}'",
                                       f"tags: {', '.join(tags) or 'none'}; or use timm:{arch} with a local file")
    model = meta_model(name)
    reason = why_not(model)
    if reason:
        close = [n for n in _closest(arch, search("*"))]
        raise UnknownBackboneError(
            f"timm:{name} cannot be adapted: {reason}; the timm plugin adapts {FAMILIES}",
            (f"closest: {', '.join(close)}; " if close else "") + "`stadapt backbones --search PATTERN` lists them",
        )
    return describe(name, model)


def configure(name: str, timm_name: str, base: Mapping[str, Any], options: Mapping[str, Any],
              info: VariantInfo) -> VariantInfo:
    """`info` as built with `options` on top of the variant's own `base` arguments (img_size changes the
    input size, depth the block count...)."""
    model = meta_model(timm_name, freeze({**base, **options}))
    reason = why_not(model)
    if reason:
        raise UnknownBackboneError(f"timm:{name} with backbone options {dict(options)} cannot be adapted: {reason}",
                                   "change backbone.options")
    return describe(name, model, info)


def _closest(word: str, names: list[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(word, names, n=3, cutoff=0.6)


def pretrained_tags(arch: str) -> tuple[str, ...]:
    """The pretrained tags timm knows for `arch` (its default first)."""
    import timm

    return tuple(split_name(n)[1] for n in timm.list_pretrained(f"{arch}.*"))


def search(pattern: str) -> list[str]:
    """Adaptable architectures of the installed timm matching a shell-style pattern, case-insensitive;
    a pattern with a '.' matches `arch.tag` names."""
    import timm

    pattern = pattern.lower()
    if "." in pattern:
        candidates = [n for n in timm.list_pretrained() if timm.models.is_model_in_modules(split_name(n)[0], MODULES)]
    else:
        candidates = [n for module in MODULES for n in timm.list_models(module=module)]
    return sorted({n for n in candidates if fnmatch.fnmatch(n.lower(), pattern) and not _NOT_ADAPTABLE.search(n)})
