"""open_clip's model configurations as the clip plugin reads them: which names it adapts, with which input
size, mean, std, interpolation and activation, taken from open_clip's own configuration, never a table of ours.

A name is an open_clip model name (`ViT-H-14`, `ViT-B-16-SigLIP2`, `PE-Core-B-16`, `ViT-L-14-quickgelu`) or
`hf-hub:ORG/NAME`, an open_clip repository on the Hugging Face hub (its `open_clip_config.json`, read
through the hub cache, holds the model and preprocessing configuration).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from stadapt.errors import UnknownBackboneError

# OpenAI CLIP's normalisation (open_clip's OPENAI_DATASET_MEAN/STD, its default preprocessing)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

HF_HUB = "hf-hub:"
#: the weights tag of an hf-hub: variant: the weights file of its own repository
HUB_TAG = "hf-hub"
CONFIG_FILE = "open_clip_config.json"
#: weights file names of an open_clip hub repository, preferred first (open_clip's own order)
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")
#: timm modules whose models the clip plugin's timm-tower backbone decomposes
TIMM_MODULES = ("vision_transformer", "eva")
WORKS = ("the clip plugin adapts ViT vision towers: open_clip's VisionTransformer (CLIP, OpenCLIP, MetaCLIP, DFN, "
         "CoCa) and timm ViT / EVA towers (SigLIP, SigLIP2, PE-Core, EVA-CLIP)")


@dataclass(frozen=True)
class OpenClipModel:
    """One adaptable open_clip model: what building it and feeding it need."""

    name: str
    embed_dim: int
    vision_cfg: Mapping[str, Any]
    quick_gelu: bool  # the configuration's activation (open_clip's `-quickgelu` names say True)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    preprocess_source: str  # where mean/std came from, for the description
    text_tower: bool = False  # the configuration has a text tower (zero-shot, text heads)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def timm_name(self) -> str | None:
        return self.vision_cfg.get("timm_model_name") or None

    @property
    def image_size(self) -> int:
        size = self.vision_cfg.get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])


def hub_repo(name: str) -> str | None:
    """'hf-hub:org/name' -> 'org/name'; None for other names."""
    return name[len(HF_HUB):].strip("/") if name.startswith(HF_HUB) else None


def _hub_config(repo: str) -> tuple[dict, dict]:
    from stadapt.backbones.hub import hf_cached_file

    path = hf_cached_file(repo, CONFIG_FILE, what="configuration")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnknownBackboneError(f"{path} (the open_clip configuration of hf-hub:{repo}) is not readable JSON",
                                   "fetch it again") from exc
    if "model_cfg" not in config or "vision_cfg" not in config["model_cfg"]:
        raise UnknownBackboneError(f"hf-hub:{repo} holds no open_clip model configuration (model_cfg.vision_cfg)",
                                   "name an open_clip repository (one with open_clip_config.json)")
    return config["model_cfg"], config.get("preprocess_cfg") or {}


def _tag_preprocess(name: str) -> dict:
    """The preprocessing every pretrained tag of `name` agrees on (open_clip's pretrained configs), else {}."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    seen = {}
    for tag in list_pretrained_tags_by_model(name):
        cfg = get_pretrained_cfg(name, tag)
        seen[(tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD)),
              cfg.get("interpolation", "bicubic"))] = tag
    if len(seen) != 1:
        return {}
    mean, std, interpolation = next(iter(seen))
    return {"mean": mean, "std": std, "interpolation": interpolation, "source": "its pretrained tags"}


def unadaptable_reason(vision_cfg: Mapping[str, Any]) -> str | None:
    """Why the plugin cannot adapt a vision tower of this configuration, or None when it can."""
    timm_name = vision_cfg.get("timm_model_name")
    if timm_name:
        if vision_cfg.get("timm_pool") in ("abs_attn", "rot_attn"):
            return f"its timm tower {timm_name} pools with a CNN attention pool ({vision_cfg['timm_pool']})"
        if timm_name not in _timm_adaptable():
            return f"its vision tower is timm's {timm_name}, not a ViT or EVA (a CNN, hybrid or hierarchical model)"
        return None
    if isinstance(vision_cfg.get("layers", 12), (list, tuple)):
        return "its vision tower is a ResNet (a CNN)"
    if vision_cfg.get("pool_type", "tok") == "none" and not vision_cfg.get("attentional_pool"):
        return "its vision tower returns every token (pool_type none), not one image feature"
    size = vision_cfg.get("image_size", 224)
    if not isinstance(size, int) and len(set(size)) != 1:
        return f"its input is not square ({size})"
    return None


@lru_cache(maxsize=1)
def _timm_adaptable() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models(module=list(TIMM_MODULES)))


@lru_cache(maxsize=None)
def open_clip_model(name: str) -> OpenClipModel | None:
    """The adaptable model called `name`, None for a name open_clip does not know; a known model the plugin
    cannot adapt (a ResNet or ConvNeXt tower) raises UnknownBackboneError saying why."""
    repo = hub_repo(name)
    if repo is not None:
        model_cfg, preprocess = _hub_config(repo)
        preprocess = {**preprocess, "source": f"hf-hub:{repo}'s preprocess_cfg"} if preprocess else {}
    else:
        import open_clip

        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            return None
        preprocess = _tag_preprocess(name)
    reason = unadaptable_reason(model_cfg["vision_cfg"])
    if reason is not None:
        raise UnknownBackboneError(f"clip:{name} cannot be adapted: {reason}", WORKS)
    return OpenClipModel(
        name=name,
        embed_dim=int(model_cfg["embed_dim"]),
        vision_cfg=dict(model_cfg["vision_cfg"]),
        quick_gelu=bool(model_cfg.get("quick_gelu", False)),
        mean=tuple(preprocess.get("mean", CLIP_MEAN)),
        std=tuple(preprocess.get("std", CLIP_STD)),
        interpolation=str(preprocess.get("interpolation", "bicubic")),
        preprocess_source=str(preprocess.get("source", "open_clip's default (OpenAI's)")),
        text_tower=bool(model_cfg.get("text_cfg")),
    )


def adaptable_names() -> list[str]:
    """Every open_clip model name the plugin adapts (configuration only: nothing is built), but the one it
    registers itself for clip:tiny's text tower (stadapt_clip.text.register_tiny), which is clip:tiny."""
    import open_clip

    from stadapt_clip.text import TINY_CONFIG

    names = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        if name != TINY_CONFIG.stem and cfg is not None and unadaptable_reason(cfg["vision_cfg"]) is None:
            names.append(name)
    return names


def tag_quick_gelu(name: str, tag: str) -> bool | None:
    """The activation open_clip's pretrained config of (name, tag) was trained with; None for an unknown tag."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, tag)
    return bool(cfg.get("quick_gelu", False)) if cfg else None
